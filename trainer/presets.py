"""Training presets: `presets/train/*.toml`, layered, plus `--set key=value` overrides.

A preset file has these tables (all optional except [preset]):

    [preset]    kind = "base" (a model family and a training recipe) or "overlay" (e.g. a GPU
                size); a base also names its family = "sd15" | "sdxl".
    [dataset]   keys for the dataset config's [general] table (resolution, batch_size, ...)
    [subset]    keys for every training image folder's [[datasets.subsets]] entry
    [train]     keys for config.toml (train_network.py options)
    [samples]   sample prompts drawn after each epoch (see trainer/run.py)
    [install]   preferred_weight for the WebUI's Lora card
    [sd15] / [sdxl]   the same tables again, applied only when the base's family matches
                (a GPU overlay needs different settings for SD1.5 and SDXL).

Layering: `--preset sd15-character --preset gpu-8gb` (or `--gpu 8gb`): exactly one base, first;
overlays are merged over it in order; `--set` overrides are applied last. `--set` keys are
`KEY` (config.toml), `dataset.KEY`, `subset.KEY`, `samples.KEY` or `install.KEY`.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from vidstyle.errors import SpecError, UserInputError
from vidstyle.overrides import read_toml
from vidstyle.spec import find_preset, presets_in

from .config_schema import FAMILIES

PRESET_DIR = Path(__file__).resolve().parent.parent / "presets" / "train"
TABLES = ("dataset", "subset", "train", "samples", "install")
GPU_SIZES = ("8gb", "12gb", "24gb")


@dataclass
class PresetStack:
    """The merged result of one base preset, its overlays and the overrides."""

    names: list[str]
    family: str
    description: str
    tables: dict[str, dict[str, Any]] = field(default_factory=dict)

    def table(self, name: str) -> dict[str, Any]:
        return self.tables.setdefault(name, {})


def list_presets() -> list[str]:
    return presets_in(PRESET_DIR)


def preset_path(name_or_path: str) -> Path:
    return find_preset(PRESET_DIR, name_or_path, what="training preset")


def read_preset(name_or_path: str) -> tuple[str, dict[str, Any]]:
    path = preset_path(name_or_path)
    data = read_toml(path, "preset")
    meta = data.get("preset")
    if not isinstance(meta, dict) or meta.get("kind") not in ("base", "overlay"):
        raise SpecError(f'Preset {path.name} needs a [preset] table with kind = "base" or "overlay".')
    allowed = {"preset", *TABLES, *FAMILIES}
    for key in data:
        if key not in allowed:
            raise SpecError(f"Preset {path.name}: unknown table [{key}]; use {', '.join(sorted(allowed))}.")
    for family in FAMILIES:
        for key in data.get(family, {}):
            if key not in TABLES:
                raise SpecError(f"Preset {path.name}: unknown table [{family}.{key}]; use {', '.join(TABLES)}.")
    return path.stem, data


def _merge_tables(target: dict[str, dict[str, Any]], source: Mapping[str, Any]) -> None:
    for name in TABLES:
        for key, value in source.get(name, {}).items():
            target.setdefault(name, {})[key] = copy.deepcopy(value)


def load_stack(presets: Sequence[str], gpu: str | None = None) -> PresetStack:
    """Merge one base preset and its overlays (and `gpu-<size>` when given)."""
    names = list(presets)
    if gpu:
        if gpu not in GPU_SIZES:
            raise UserInputError(f"Unknown GPU size '{gpu}'; use one of {', '.join(GPU_SIZES)}.")
        names.append(f"gpu-{gpu}")
    if not names:
        raise UserInputError(f"Choose a preset with --preset; available: {', '.join(list_presets())}.")
    loaded = [read_preset(name) for name in names]
    base_name, base = loaded[0]
    if base["preset"]["kind"] != "base":
        raise UserInputError(f"The first preset must be a base preset (sd15-*, sdxl-*), not the overlay '{base_name}'.")
    family = base["preset"].get("family")
    if family not in FAMILIES:
        raise SpecError(f"Preset {base_name}: family must be one of {', '.join(FAMILIES)}.")
    stack = PresetStack(
        names=[n for n, _ in loaded], family=family, description=str(base["preset"].get("description", ""))
    )
    for name, data in loaded:
        if data is not base and data["preset"]["kind"] != "overlay":
            raise UserInputError(f"Only one base preset can be used; '{name}' is a base preset too.")
        _merge_tables(stack.tables, data)
        _merge_tables(stack.tables, data.get(family, {}))
    return stack


def apply_override(stack: PresetStack, key: str, value: Any) -> None:
    """`KEY` goes to config.toml; `table.KEY` to one of the other tables."""
    if "." in key:
        table, name = key.split(".", 1)
        if table not in TABLES:
            raise UserInputError(
                f"Unknown setting '{key}'; prefix keys with one of: {', '.join(t + '.' for t in TABLES)} or none for "
                "config.toml."
            )
        stack.table(table)[name] = value
        return
    stack.table("train")[key] = value
