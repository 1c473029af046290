"""TEST DOUBLE of extensions-builtin/Lora/networks.py (A1111 v1.10.1): the LoRA list.

The WebUI imports this module as top-level `networks` while loading the Lora extension;
tests do the same by putting this folder on sys.path. `_add` is the double's test hook.
"""

import os

import network

available_networks = {}
available_network_aliases = {}
forbidden_network_aliases = {}


def list_available_networks():
    """Upstream rescans models/Lora; the double keeps what tests added."""
    return available_networks


def _add(filename, alias=None):
    """Test hook: one LoRA file, registered as list_available_networks() would."""
    name = os.path.splitext(os.path.basename(filename))[0]
    entry = network.NetworkOnDisk(name, filename)
    if alias:
        entry.alias = alias
    available_networks[name] = entry
    available_network_aliases[name] = entry
    available_network_aliases[entry.alias] = entry
    return entry
