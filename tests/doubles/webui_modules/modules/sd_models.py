"""TEST DOUBLE of modules/sd_models.py (A1111 v1.10.1): the checkpoint list and model (re)loading.

CheckpointInfo builds the same names, title and aliases as upstream; the short hash is the
start of a SHA-256 of the file name (upstream hashes the file's bytes). "Loading" a model
makes a stand-in object that remembers its CheckpointInfo.
"""

from __future__ import annotations

import hashlib
import os

from modules import shared
from modules.paths_internal import models_path

model_path = os.path.abspath(os.path.join(models_path, "Stable-diffusion"))
checkpoints_list = {}
checkpoint_aliases = {}
_loads = []  # test hook: titles of the checkpoints "loaded", in order


class CheckpointInfo:
    def __init__(self, filename):
        self.filename = filename
        abspath = os.path.abspath(filename)
        name = abspath.replace(model_path, "") if abspath.startswith(model_path) else os.path.basename(filename)
        if name.startswith("\\") or name.startswith("/"):
            name = name[1:]
        self.is_safetensors = os.path.splitext(filename)[1].lower() == ".safetensors"
        self.name = name
        self.name_for_extra = os.path.splitext(os.path.basename(filename))[0]
        self.model_name = os.path.splitext(name.replace("/", "_").replace("\\", "_"))[0]
        self.hash = hashlib.sha256(name.encode()).hexdigest()[0:8]
        self.sha256 = hashlib.sha256(("sha:" + name).encode()).hexdigest()
        self.shorthash = self.sha256[0:10]
        self.title = f"{name} [{self.shorthash}]"
        self.short_title = f"{self.name_for_extra} [{self.shorthash}]"
        self.ids = [
            self.hash,
            self.model_name,
            self.title,
            name,
            self.name_for_extra,
            f"{name} [{self.hash}]",
            self.shorthash,
            self.sha256,
            f"{self.name} [{self.shorthash}]",
            f"{self.name_for_extra} [{self.shorthash}]",
        ]

    def register(self):
        checkpoints_list[self.title] = self
        for id in self.ids:
            checkpoint_aliases[id] = self


class _Model:
    """Stands in for the loaded LatentDiffusion model (shared.sd_model)."""

    def __init__(self, info):
        self.sd_checkpoint_info = info
        self.sd_model_hash = info.shorthash


def select_checkpoint():
    """Raises `FileNotFoundError` if no checkpoints are found."""
    checkpoint_info = checkpoint_aliases.get(shared.opts.sd_model_checkpoint, None)
    if checkpoint_info is not None:
        return checkpoint_info
    if len(checkpoints_list) == 0:
        raise FileNotFoundError("No checkpoints found.")
    return next(iter(checkpoints_list.values()))


def reload_model_weights(sd_model=None, info=None, forced_reload=False):
    checkpoint_info = info or select_checkpoint()
    current = shared.sd_model
    if current is not None and current.sd_checkpoint_info is checkpoint_info and not forced_reload:
        return current
    shared.sd_model = _Model(checkpoint_info)
    _loads.append(checkpoint_info.title)
    return shared.sd_model
