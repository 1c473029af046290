"""One sentence for a rejected sd-scripts config file: the key at the wrong level, unknown or with a bad value."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from vidstyle.compat import ValidationError
from vidstyle.errors import SpecError
from vidstyle.overrides import describe_validation_error, suggest

from .config_schema import LEVEL_KEYS, LEVEL_TITLES, MOVED_KEYS, TRAIN_KEYS, DatasetConfig, TrainArgs

# --------------------------------------------------------------------------- errors


def explain_errors(err: ValidationError, what: str) -> str:
    """One sentence naming the first bad key: wrong level, unknown (with a suggestion) or bad value."""
    return describe_validation_error(err, what, explain_unknown=_explain_extra)


def _level_of(loc: Sequence[Any]) -> str:
    names = [p for p in loc[:-1] if isinstance(p, str)]
    if not names:
        return "top"
    return {"general": "general", "datasets": "datasets", "subsets": "subsets"}.get(names[-1], names[-1])


def _explain_extra(key: str, loc: Sequence[Any]) -> str:
    level = _level_of(loc)
    if level in LEVEL_KEYS:
        allowed = [LEVEL_TITLES[name] for name, keys in LEVEL_KEYS.items() if key in keys]
        here = LEVEL_TITLES[level]
        if allowed:
            return f"'{key}' is not allowed in {here}; sd-scripts accepts it only in {' or '.join(allowed)}."
        if key in TRAIN_KEYS:
            return f"'{key}' is a training setting, not a dataset one; set it in the training config instead."
        known = set().union(*LEVEL_KEYS.values())
        return f"unknown setting '{key}' in {here}{suggest(key, known)}; sd-scripts would reject it."
    if level == "top" and key in LEVEL_KEYS["general"] | LEVEL_KEYS["subsets"] and key not in TRAIN_KEYS:
        return f"'{key}' is a dataset setting; set it in the dataset config (e.g. --set dataset.{key}=...) instead."
    if key in MOVED_KEYS:
        return f"'{key}' is not used here; set {MOVED_KEYS[key]} instead."
    return (
        f"unknown setting '{key}'{suggest(key, TRAIN_KEYS)}; sd-scripts would silently ignore it, "
        "so fix its spelling or remove it."
    )


def parse_dataset_config(data: Mapping[str, Any], what: str = "dataset config") -> DatasetConfig:
    try:
        return DatasetConfig.parse_obj(data)
    except ValidationError as exc:
        raise SpecError(explain_errors(exc, what)) from None


def parse_train_args(data: Mapping[str, Any], what: str = "training config") -> TrainArgs:
    try:
        return TrainArgs.parse_obj(data)
    except ValidationError as exc:
        raise SpecError(explain_errors(exc, what)) from None
