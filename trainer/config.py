"""Reading and writing kohya sd-scripts' two config files as TOML.

The models are in config_schema.py, the sentences for a rejected file in config_errors.py and
the cross-checks of the pair in config_checks.py.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import tomli_w

from vidstyle.atomic import write_text
from vidstyle.errors import SpecError
from vidstyle.overrides import read_toml

from .config_errors import parse_dataset_config, parse_train_args
from .config_schema import SECTIONS, DatasetConfig, TrainArgs

# --------------------------------------------------------------------------- TOML I/O


def dumps_toml(data: Mapping[str, Any], header: str = "") -> str:
    """tomli-w output with a '#' comment header (tomli-w writes no comments itself)."""
    lines = "".join(f"# {line}\n" if line else "#\n" for line in header.splitlines())
    return lines + ("\n" if lines else "") + tomli_w.dumps(dict(data))


def train_args_to_toml_dict(train: TrainArgs) -> dict[str, dict[str, Any]]:
    flat = train.to_toml_dict()
    return {
        section: {key: flat[key] for key in keys if key in flat}
        for section, keys in SECTIONS.items()
        if any(key in flat for key in keys)
    }


def flatten_sections(data: Mapping[str, Any], what: str) -> dict[str, Any]:
    """sd-scripts' read_config_from_file: one level of [sections] merged into one namespace.

    Unlike sd-scripts we refuse a key given twice, which it would resolve silently.
    """
    flat: dict[str, Any] = {}
    for name, value in data.items():
        items = value.items() if isinstance(value, dict) else [(name, value)]
        for key, item in items:
            if key in flat:
                raise SpecError(f"{what}: '{key}' is set twice; keep one.")
            flat[key] = item
    return flat


_MISSING = "run `python -m trainer config` first"


def load_dataset_config(path: Path) -> DatasetConfig:
    return parse_dataset_config(read_toml(path, "dataset config", missing=_MISSING), what=str(path.name))


def load_train_args(path: Path) -> TrainArgs:
    data = read_toml(path, "training config", missing=_MISSING)
    return parse_train_args(flatten_sections(data, str(path.name)), what=str(path.name))


def write_dataset_config(path: Path, dataset: DatasetConfig, header: str = "") -> None:
    write_text(path, dumps_toml(dataset.to_toml_dict(), header))


def write_train_args(path: Path, train: TrainArgs, header: str = "") -> None:
    write_text(path, dumps_toml(train_args_to_toml_dict(train), header))
