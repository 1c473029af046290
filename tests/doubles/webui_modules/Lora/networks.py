"""TEST DOUBLE of extensions-builtin/Lora/networks.py (A1111 v1.10.1): the LoRA list.

The WebUI imports this module as top-level `networks` while loading the Lora extension;
tests do the same by putting this folder on sys.path. `_add` is the double's test hook.
"""

import os

import network

available_networks = {}
available_network_aliases = {}
forbidden_network_aliases = {}
_added = {}  # entries tests registered with _add: files the double pretends are on disk


def list_available_networks():
    """Upstream clears the lists and rescans the Lora folder (shared.cmd_opts.lora_dir, added by
    the extension's preload.py) for .pt/.ckpt/.safetensors files, name = file stem; the double
    does the same and keeps what tests added with _add."""
    from modules import shared

    available_networks.clear()
    available_network_aliases.clear()
    for entry in _added.values():
        _register(entry)
    folder = getattr(shared.cmd_opts, "lora_dir", None)
    if folder and os.path.isdir(folder):
        for root, _dirs, files in sorted(os.walk(folder)):
            for file in sorted(files):
                if os.path.splitext(file)[1].lower() in (".pt", ".ckpt", ".safetensors"):
                    _register(network.NetworkOnDisk(os.path.splitext(file)[0], os.path.join(root, file)))


def _register(entry):
    available_networks[entry.name] = entry
    available_network_aliases[entry.name] = entry
    available_network_aliases[entry.alias] = entry


def _add(filename, alias=None):
    """Test hook: one LoRA file, registered as list_available_networks() would."""
    name = os.path.splitext(os.path.basename(filename))[0]
    entry = network.NetworkOnDisk(name, filename)
    if alias:
        entry.alias = alias
    _added[name] = entry
    _register(entry)
    return entry
