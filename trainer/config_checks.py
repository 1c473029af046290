"""Cross-checks of a dataset config and a training config for one model family.

`check_run` returns warnings; a hard error raises `SpecError` with one sentence naming the key.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from vidstyle.errors import SpecError

from .config_schema import (
    ADAPTIVE_OPTIMIZERS,
    LR_HARD_LIMIT,
    TEXT_ENCODER_LR_WARN,
    UNET_LR_WARN,
    DatasetConfig,
    DatasetSection,
    Family,
    GeneralSection,
    SubsetSection,
    TrainArgs,
)

# --------------------------------------------------------------------------- cross checks


def check_run(family: Family, dataset: DatasetConfig, train: TrainArgs) -> list[str]:
    """Cross-check both files for one family; raise SpecError on the first hard error, return warnings."""
    warnings: list[str] = []
    _check_family(family, train)
    for index, ds in enumerate(dataset.datasets):
        _check_buckets(family, dataset.general, ds, f"datasets[{index}]")
    _check_caching(family, dataset, train)
    _check_precision(family, train, warnings)
    _check_network(train, warnings)
    _check_learning_rates(train, warnings)
    _check_schedule(train, warnings)
    _check_outputs(train, warnings)
    return warnings


def _fail(message: str) -> None:
    raise SpecError(message)


def _check_family(family: Family, train: TrainArgs) -> None:
    if family.name == "sdxl":
        if train.v2:
            _fail("v2 cannot be used with SDXL; remove 'v2' (sdxl_train_network.py refuses it).")
        if train.clip_skip is not None:
            _fail("clip_skip does nothing in SDXL training; remove 'clip_skip' from the config.")
    else:
        for key in ("cache_text_encoder_outputs", "cache_text_encoder_outputs_to_disk"):
            if getattr(train, key):
                _fail(f"'{key}' exists only in sdxl_train_network.py; remove it or use an SDXL preset.")


def _effective(general: GeneralSection, ds: DatasetSection, key: str, default: Any) -> Any:
    for level in (ds, general):
        value = getattr(level, key)
        if value is not None:
            return value
    return default


def _check_buckets(family: Family, general: GeneralSection, ds: DatasetSection, where: str) -> None:
    step = family.bucket_step
    res = _effective(general, ds, "resolution", family.default_resolution)
    sides = list(res) if isinstance(res, (list, tuple)) else [res, res]
    for side in sides:
        if side % step:
            _fail(
                f"resolution {res} of {where} must be a multiple of {step} for {family.name}; use e.g. "
                f"{side - side % step or step}."
            )
    steps = _effective(general, ds, "bucket_reso_steps", 64)
    if steps % step:
        _fail(
            f"bucket_reso_steps {steps} of {where} must be divisible by {step} for {family.name} (sd-scripts asserts "
            "it)."
        )
    if not _effective(general, ds, "enable_bucket", False):
        return
    low = _effective(general, ds, "min_bucket_reso", 256)
    high = _effective(general, ds, "max_bucket_reso", 1024)
    for key, value in (("min_bucket_reso", low), ("max_bucket_reso", high)):
        if value % steps:
            _fail(
                f"{key} {value} of {where} must be a multiple of bucket_reso_steps {steps} (sd-scripts would silently "
                "change it)."
            )
    if min(sides) < low or max(sides) > high:
        _fail(f"resolution {res} of {where} must lie between min_bucket_reso {low} and max_bucket_reso {high}.")


def _subsets_with(dataset: DatasetConfig) -> Iterable[tuple[DatasetSection, SubsetSection]]:
    for ds in dataset.datasets:
        for sub in ds.subsets:
            yield ds, sub


def _subset_value(dataset: DatasetConfig, ds: DatasetSection, sub: SubsetSection, key: str) -> Any:
    for level in (sub, ds, dataset.general):
        value = getattr(level, key)
        if value is not None:
            return value
    return None


def _check_caching(family: Family, dataset: DatasetConfig, train: TrainArgs) -> None:
    if train.cache_latents_to_disk and not train.cache_latents:
        _fail("cache_latents_to_disk needs cache_latents = true; set both or neither.")
    if train.cache_text_encoder_outputs_to_disk and not train.cache_text_encoder_outputs:
        _fail("cache_text_encoder_outputs_to_disk needs cache_text_encoder_outputs = true; set both or neither.")
    for ds, sub in _subsets_with(dataset):
        if train.cache_latents:
            for key in ("color_aug", "random_crop"):
                if _subset_value(dataset, ds, sub, key):
                    _fail(f"'{key}' cannot be used with cache_latents (sd-scripts asserts it); turn one of them off.")
        if train.cache_text_encoder_outputs:
            for key in ("shuffle_caption", "caption_dropout_rate", "caption_tag_dropout_rate", "token_warmup_step"):
                if _subset_value(dataset, ds, sub, key):
                    _fail(
                        f"'{key}' cannot be used with cache_text_encoder_outputs (captions must stay fixed); turn one "
                        "of them off."
                    )
    if train.cache_text_encoder_outputs and not train.network_train_unet_only:
        _fail(
            "cache_text_encoder_outputs needs network_train_unet_only = true (a cached text encoder cannot be trained)."
        )


def _check_precision(family: Family, train: TrainArgs, warnings: list[str]) -> None:
    mixed = train.mixed_precision or "no"
    if train.full_fp16 and mixed != "fp16":
        _fail("full_fp16 needs mixed_precision = 'fp16'.")
    if train.full_bf16 and mixed != "bf16":
        _fail("full_bf16 needs mixed_precision = 'bf16'.")
    if train.fp8_base and mixed == "no":
        _fail("fp8_base needs mixed_precision 'fp16' or 'bf16'.")
    if family.name == "sdxl" and mixed == "fp16" and not train.no_half_vae:
        warnings.append(
            "SDXL's VAE overflows in fp16 (NaN latents, black samples); set no_half_vae = true or use bf16."
        )
    if sum(bool(x) for x in (train.xformers, train.sdpa, train.mem_eff_attn)) > 1:
        warnings.append(
            "more than one of xformers, sdpa and mem_eff_attn is set; sd-scripts uses only the first of mem_eff_attn, "
            "xformers, sdpa."
        )


def _check_network(train: TrainArgs, warnings: list[str]) -> None:
    if train.network_train_unet_only and train.network_train_text_encoder_only:
        _fail("network_train_unet_only and network_train_text_encoder_only cannot both be true.")
    alpha = train.network_alpha or train.network_dim  # sd-scripts treats alpha 0 as alpha = dim
    if alpha > train.network_dim:
        warnings.append(
            f"network_alpha {train.network_alpha:g} is above network_dim {train.network_dim}: every update is scaled "
            "up "
            f"by {alpha / train.network_dim:g}x, which often ends in NaN loss; alpha = dim/2 or lower is usual."
        )
    if train.network_train_unet_only and train.text_encoder_lr:
        warnings.append("text_encoder_lr is set but network_train_unet_only = true, so it is unused.")


def _check_learning_rates(train: TrainArgs, warnings: list[str]) -> None:
    optimizer = train.optimizer_type.lower()
    if optimizer in ADAPTIVE_OPTIMIZERS:
        for key in ("learning_rate", "unet_lr", "text_encoder_lr"):
            value = getattr(train, key)
            if value and value < 0.1:
                warnings.append(
                    f"{train.optimizer_type} finds its own step size and expects {key} near 1.0, not {value:g}."
                )
        return
    checks = (("learning_rate", UNET_LR_WARN), ("unet_lr", UNET_LR_WARN), ("text_encoder_lr", TEXT_ENCODER_LR_WARN))
    for key, warn_at in checks:
        value = getattr(train, key)
        if not value:
            continue
        if value > LR_HARD_LIMIT:
            _fail(
                f"{key} {value:g} is far above what LoRA training survives (NaN loss); use at most {LR_HARD_LIMIT:g}, "
                f"and {warn_at / 10:g}-{warn_at:g} to be safe."
            )
        if value > warn_at:
            warnings.append(
                f"{key} {value:g} is in the range known to give NaN loss or a black LoRA; {warn_at / 10:g}-{warn_at:g} "
                "is safer."
            )


def _check_schedule(train: TrainArgs, warnings: list[str]) -> None:
    warmup = train.lr_warmup_steps or 0
    if train.lr_scheduler == "constant" and warmup:
        _fail(
            "the 'constant' scheduler refuses lr_warmup_steps (sd-scripts raises); use 'constant_with_warmup' or "
            "remove the warmup."
        )
    if train.lr_scheduler.startswith("adafactor") and train.optimizer_type.lower() != "adafactor":
        _fail("the adafactor scheduler works only with optimizer_type = 'Adafactor'.")
    if train.max_train_epochs is None and train.max_train_steps is None:
        _fail("set max_train_epochs (or max_train_steps); sd-scripts would otherwise stop after 1600 steps.")
    if train.max_timestep is not None and train.min_timestep is not None and train.min_timestep >= train.max_timestep:
        _fail("min_timestep must be below max_timestep.")


def _check_outputs(train: TrainArgs, warnings: list[str]) -> None:
    if train.save_every_n_epochs is None and train.save_every_n_steps is None:
        warnings.append(
            "save_every_n_epochs is not set: only the final LoRA is saved, so there are no epochs to compare."
        )
    if train.sample_prompts and train.sample_every_n_epochs is None and train.sample_every_n_steps is None:
        warnings.append("sample_every_n_epochs is not set: no sample images will be drawn for the epoch grid.")
