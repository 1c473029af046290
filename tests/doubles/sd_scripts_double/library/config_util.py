"""TEST DOUBLE of kohya sd-scripts' library/config_util.py (v0.10.1): dataset-config schema only.

It knows the same keys at the same levels as upstream's ConfigSanitizer (DreamBooth style)
and fails the same way: upstream raises voluptuous' MultipleInvalid, printed by Python as
`voluptuous.error.MultipleInvalid: extra keys not allowed @ data['datasets'][0]['subsets'][0]['KEY']`.
"""

from __future__ import annotations

import logging

logger = logging.getLogger(__name__)

SUBSET_ASCENDABLE_SCHEMA = {
    "color_aug": bool, "face_crop_aug_range": list, "flip_aug": bool, "num_repeats": int, "random_crop": bool,
    "shuffle_caption": bool, "keep_tokens": int, "keep_tokens_separator": str, "secondary_separator": str,
    "caption_separator": str, "enable_wildcard": bool, "token_warmup_min": int, "token_warmup_step": (float, int),
    "caption_prefix": str, "caption_suffix": str, "custom_attributes": dict, "resize_interpolation": str,
}  # fmt: skip
DO_SUBSET_ASCENDABLE_SCHEMA = {
    "caption_dropout_every_n_epochs": int,
    "caption_dropout_rate": (float, int),
    "caption_tag_dropout_rate": (float, int),
}
DB_SUBSET_ASCENDABLE_SCHEMA = {"caption_extension": str, "class_tokens": str, "cache_info": bool}
DB_SUBSET_DISTINCT_SCHEMA = {"image_dir": str, "is_reg": bool, "alpha_mask": bool}
DATASET_ASCENDABLE_SCHEMA = {
    "batch_size": int, "bucket_no_upscale": bool, "bucket_reso_steps": int, "enable_bucket": bool,
    "max_bucket_reso": int, "min_bucket_reso": int, "validation_seed": int, "validation_split": float,
    "resolution": (int, list), "network_multiplier": float, "resize_interpolation": str,
}  # fmt: skip

SUBSET_KEYS = {
    **SUBSET_ASCENDABLE_SCHEMA,
    **DO_SUBSET_ASCENDABLE_SCHEMA,
    **DB_SUBSET_ASCENDABLE_SCHEMA,
    **DB_SUBSET_DISTINCT_SCHEMA,
}
DATASET_KEYS = {
    **DATASET_ASCENDABLE_SCHEMA,
    **SUBSET_ASCENDABLE_SCHEMA,
    **DO_SUBSET_ASCENDABLE_SCHEMA,
    **DB_SUBSET_ASCENDABLE_SCHEMA,
}


class MultipleInvalid(Exception):
    """Stands in for voluptuous.error.MultipleInvalid (same printed name)."""


MultipleInvalid.__module__ = "voluptuous.error"


def _check(section: dict, allowed: dict, path: str) -> None:
    for key, value in section.items():
        if key not in allowed:
            raise MultipleInvalid(f"extra keys not allowed @ data{path}['{key}']")
        kind = allowed[key]
        if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
            raise MultipleInvalid(
                f"expected {getattr(kind, '__name__', kind)} for dictionary value @ data{path}['{key}']"
            )


def sanitize_user_config(user_config: dict) -> dict:
    try:
        for key in user_config:
            if key not in ("general", "datasets"):
                raise MultipleInvalid(f"extra keys not allowed @ data['{key}']")
        _check(user_config.get("general", {}), DATASET_KEYS, "['general']")
        for i, dataset in enumerate(user_config.get("datasets", [])):
            _check({k: v for k, v in dataset.items() if k != "subsets"}, DATASET_KEYS, f"['datasets'][{i}]")
            for j, subset in enumerate(dataset.get("subsets", [])):
                if "image_dir" not in subset:
                    raise MultipleInvalid(
                        f"required key not provided @ data['datasets'][{i}]['subsets'][{j}]['image_dir']"
                    )
                _check(subset, SUBSET_KEYS, f"['datasets'][{i}]['subsets'][{j}]")
    except MultipleInvalid:
        logger.error("Invalid user config / ユーザ設定の形式が正しくないようです")
        raise
    return user_config
