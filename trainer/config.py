"""Typed models of kohya sd-scripts' two config files, their checks, and their TOML I/O.

* `DatasetConfig` is the `--dataset_config` file: `[general]`, `[[datasets]]`,
  `[[datasets.subsets]]`, each key only at the levels sd-scripts' `ConfigSanitizer`
  (library/config_util.py) allows. sd-scripts rejects a key at the wrong level too, but only
  after loading the model, and with a voluptuous path instead of a sentence.
* `TrainArgs` is the `--config_file` file of train_network.py / sdxl_train_network.py. sd-scripts
  flattens its sections and silently ignores unknown keys, so a misspelled key here would be
  lost without a word: we reject every key we do not know, naming it.
* `check_run` cross-checks the pair for one model family and returns warnings; hard errors
  raise `SpecError` with one sentence naming the key.

Key names, levels, choices and defaults were read from kohya-ss/sd-scripts v0.10.1
(library/config_util.py, library/train_util.py, train_network.py, sdxl_train_network.py).
"""

from __future__ import annotations

import difflib
import math
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, Iterable, List, Mapping, Optional, Sequence, Tuple, Union

import tomli_w

from vidstyle.atomic import write_text
from vidstyle.compat import BaseModel, Extra, Field, ValidationError, root_validator, tomllib, validator
from vidstyle.errors import SpecError, UserInputError


# --------------------------------------------------------------------------- families


@dataclass(frozen=True)
class Family:
    """What differs between SD1.5 and SDXL LoRA training in sd-scripts."""

    name: str
    script: str
    bucket_step: int  # assert_extra_args: verify_bucket_reso_steps(64) / (32)
    default_resolution: int
    webui_sd_version: str  # the WebUI Lora card's "sd version" (network.SdVersion names)


FAMILIES: Dict[str, Family] = {
    "sd15": Family("sd15", "train_network.py", 64, 512, "SD1"),
    "sdxl": Family("sdxl", "sdxl_train_network.py", 32, 1024, "SDXL"),
}


def get_family(name: str) -> Family:
    if name not in FAMILIES:
        raise SpecError(f"Unknown model family '{name}'; use one of: {', '.join(FAMILIES)}.")
    return FAMILIES[name]


# --------------------------------------------------------------------------- choices

# Optimizers train_util.get_optimizer() knows by name (case-insensitive); any "module.Class"
# path is also accepted there, as here.
OPTIMIZERS = (
    "AdamW", "AdamW8bit", "PagedAdamW", "PagedAdamW8bit", "PagedAdamW32bit",
    "Lion", "Lion8bit", "PagedLion8bit", "SGDNesterov", "SGDNesterov8bit",
    "DAdaptation", "DAdaptAdamPreprint", "DAdaptAdaGrad", "DAdaptAdam", "DAdaptAdan",
    "DAdaptAdanIP", "DAdaptLion", "DAdaptSGD", "Prodigy", "Adafactor",
    "RAdamScheduleFree", "AdamWScheduleFree", "SGDScheduleFree",
)  # fmt: skip
# Optimizers that estimate the step size themselves and expect learning_rate near 1.0.
ADAPTIVE_OPTIMIZERS = tuple(o.lower() for o in OPTIMIZERS if o.startswith("DAdapt") or o == "Prodigy")
# get_scheduler_fix(): transformers' SchedulerType names sd-scripts can drive, diffusers'
# piecewise_constant, and "adafactor:<initial lr>" (Adafactor optimizer only).
SCHEDULERS = (
    "constant", "constant_with_warmup", "linear", "cosine", "cosine_with_restarts",
    "polynomial", "inverse_sqrt", "cosine_with_min_lr", "warmup_stable_decay", "piecewise_constant",
)  # fmt: skip
SAMPLE_SAMPLERS = (
    "ddim", "pndm", "lms", "euler", "euler_a", "heun", "dpm_2", "dpm_2_a", "dpmsolver",
    "dpmsolver++", "dpmsingle", "k_lms", "k_euler", "k_euler_a", "k_dpm_2", "k_dpm_2_a",
)  # fmt: skip
RESIZE_INTERPOLATIONS = ("lanczos", "nearest", "bilinear", "linear", "bicubic", "cubic", "area")
MIXED_PRECISIONS = ("no", "fp16", "bf16")
SAVE_PRECISIONS = ("float", "fp16", "bf16")

# Learning rates (AdamW family) above this are known to end in NaN loss / black LoRAs;
# above the hard limit nothing useful comes out, so we refuse.
UNET_LR_WARN = 1e-3
TEXT_ENCODER_LR_WARN = 3e-4
LR_HARD_LIMIT = 1e-2


# --------------------------------------------------------------------------- strict base


class _Strict(BaseModel):
    """Unknown keys are errors; booleans, integers and strings are not coerced.

    pydantic's v1 API would turn "yes" into True or 3.7 into 3; sd-scripts does not
    convert TOML values either, so a wrong type is reported instead of fixed up.
    """

    class Config:
        extra = Extra.forbid
        validate_assignment = True
        smart_union = True  # Union[int, float] keeps 0.05 a float (plain v1 unions would make it int 0)

    @root_validator(pre=True)
    def _strict_types(cls, values: Dict[str, Any]) -> Dict[str, Any]:
        for key, value in values.items():
            field = cls.__fields__.get(key)
            if field is None or value is None or not isinstance(field.outer_type_, type):
                continue
            problem = _type_problem(field.outer_type_, value)
            if problem:
                raise ValueError(f"'{key}' must be {problem}, not {value!r}")
        return values

    def to_toml_dict(self) -> Dict[str, Any]:
        """Only the keys that are set, in declaration order, tuples as arrays."""
        return _plain(self.dict(exclude_none=True))


def _type_problem(kind: type, value: Any) -> Optional[str]:
    """Constrained types (Field bounds) subclass int/float/str, hence issubclass."""
    if issubclass(kind, bool):
        return None if isinstance(value, bool) else "true or false"
    if issubclass(kind, int):
        return None if isinstance(value, int) and not isinstance(value, bool) else "a whole number"
    if issubclass(kind, float):
        return None if isinstance(value, (int, float)) and not isinstance(value, bool) else "a number"
    if issubclass(kind, str):
        return None if isinstance(value, str) else "a string"
    return None


def _plain(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return value


# --------------------------------------------------------------------------- dataset config


class SubsetKeys(_Strict):
    """Keys sd-scripts lets cascade: subset -> dataset -> general (SUBSET_ASCENDABLE_SCHEMA,
    DB_SUBSET_ASCENDABLE_SCHEMA, DO_SUBSET_ASCENDABLE_SCHEMA)."""

    num_repeats: Optional[int] = Field(None, ge=1, description="How many times each image is seen per epoch.")
    shuffle_caption: Optional[bool] = Field(None, description="Shuffle comma-separated tags each step.")
    keep_tokens: Optional[int] = Field(None, ge=0, description="Leading tags kept in place when shuffling.")
    keep_tokens_separator: Optional[str] = None
    secondary_separator: Optional[str] = None
    caption_separator: Optional[str] = None
    enable_wildcard: Optional[bool] = None
    color_aug: Optional[bool] = Field(None, description="Hue augmentation (prevents latent caching).")
    flip_aug: Optional[bool] = Field(None, description="Horizontal flips (bad for asymmetric characters).")
    random_crop: Optional[bool] = Field(None, description="Random crops (prevents latent caching).")
    face_crop_aug_range: Optional[Tuple[float, float]] = None
    token_warmup_min: Optional[int] = Field(None, ge=1)
    token_warmup_step: Optional[float] = Field(None, ge=0)
    caption_prefix: Optional[str] = None
    caption_suffix: Optional[str] = None
    caption_dropout_rate: Optional[float] = Field(None, ge=0, le=1)
    caption_dropout_every_n_epochs: Optional[int] = Field(None, ge=0)
    caption_tag_dropout_rate: Optional[float] = Field(None, ge=0, le=1)
    caption_extension: Optional[str] = Field(None, description="Caption file extension; sd-scripts' default is .caption.")
    class_tokens: Optional[str] = Field(None, description="Caption used for images without a caption file.")
    cache_info: Optional[bool] = None
    custom_attributes: Optional[Dict[str, Any]] = None
    resize_interpolation: Optional[str] = None

    @validator("caption_extension")
    def _dot_extension(cls, value: Optional[str]) -> Optional[str]:
        if value is not None and not value.startswith("."):
            raise ValueError(f"must start with a dot, e.g. '.{value}'")
        return value

    @validator("resize_interpolation")
    def _interpolation(cls, value: Optional[str]) -> Optional[str]:
        if value is not None and value not in RESIZE_INTERPOLATIONS:
            raise ValueError(f"'{value}' is not one of {', '.join(RESIZE_INTERPOLATIONS)}")
        return value

    @validator("face_crop_aug_range")
    def _range_order(cls, value: Optional[Tuple[float, float]]) -> Optional[Tuple[float, float]]:
        if value is not None and value[0] > value[1]:
            raise ValueError("the lower bound must not exceed the upper bound")
        return value


class DatasetKeys(_Strict):
    """Keys allowed only in [general] and [[datasets]] (DATASET_ASCENDABLE_SCHEMA)."""

    resolution: Optional[Union[int, Tuple[int, int]]] = Field(None, description="Training size: 512, or [width, height].")
    batch_size: Optional[int] = Field(None, ge=1, description="Images per step (per GPU).")
    enable_bucket: Optional[bool] = Field(None, description="Aspect-ratio buckets instead of square crops.")
    min_bucket_reso: Optional[int] = Field(None, ge=64)
    max_bucket_reso: Optional[int] = Field(None, ge=64)
    bucket_reso_steps: Optional[int] = Field(None, ge=8)
    bucket_no_upscale: Optional[bool] = None
    network_multiplier: Optional[float] = None
    validation_split: Optional[float] = Field(None, ge=0, le=1, description="Fraction of this dataset held out for validation loss.")
    validation_seed: Optional[int] = Field(None, ge=0)

    @root_validator(pre=True)
    def _resolution_shape(cls, values: Dict[str, Any]) -> Dict[str, Any]:
        res = values.get("resolution")
        if res is None:
            return values
        sides = list(res) if isinstance(res, (list, tuple)) else [res]
        if len(sides) not in (1, 2) or any(isinstance(s, bool) or not isinstance(s, int) for s in sides):
            raise ValueError(f"'resolution' must be a whole number or [width, height], not {res!r}")
        if any(s < 64 for s in sides):
            raise ValueError(f"'resolution' {res!r} is too small; use at least 64 pixels per side")
        return values


class SubsetSection(SubsetKeys):
    """[[datasets.subsets]] in DreamBooth style (DB_SUBSET_DISTINCT_SCHEMA): one folder of images."""

    image_dir: str = Field(..., min_length=1, description="Folder of training images with caption files.")
    is_reg: Optional[bool] = Field(None, description="Regularization images.")
    alpha_mask: Optional[bool] = None


class GeneralSection(SubsetKeys, DatasetKeys):
    """[general]: defaults for every dataset and subset."""


class DatasetSection(SubsetKeys, DatasetKeys):
    """[[datasets]]: one dataset (its own resolution, batch size and buckets)."""

    subsets: List[SubsetSection] = Field(..., min_items=1)


class DatasetConfig(_Strict):
    """The whole --dataset_config file."""

    general: GeneralSection = Field(default_factory=GeneralSection)
    datasets: List[DatasetSection] = Field(..., min_items=1)

    def to_toml_dict(self) -> Dict[str, Any]:
        data = _plain(self.dict(exclude_none=True))
        if not data.get("general"):
            data.pop("general", None)
        for dataset in data["datasets"]:
            dataset["subsets"] = [_leading(sub, SUBSET_FIRST) for sub in dataset["subsets"]]
        return data


SUBSET_FIRST = ("image_dir", "num_repeats", "class_tokens")


def _leading(data: Dict[str, Any], first: Sequence[str]) -> Dict[str, Any]:
    """Readable key order: the keys that identify a section come first."""
    return {**{k: data[k] for k in first if k in data}, **{k: v for k, v in data.items() if k not in first}}


LEVEL_TITLES = {"general": "[general]", "datasets": "[[datasets]]", "subsets": "[[datasets.subsets]]"}
LEVEL_KEYS: Dict[str, frozenset] = {
    "general": frozenset(GeneralSection.__fields__),
    "datasets": frozenset(DatasetSection.__fields__) - {"subsets"},
    "subsets": frozenset(SubsetSection.__fields__),
}


# --------------------------------------------------------------------------- training config


class TrainArgs(_Strict):
    """The --config_file keys we write for train_network.py / sdxl_train_network.py.

    Every name is an argparse option of those scripts (checked against sd-scripts v0.10.1);
    dataset options (resolution, batch size, captions...) belong in the dataset config.
    """

    # model
    pretrained_model_name_or_path: str = Field(..., min_length=1, description="Base checkpoint (.safetensors/.ckpt) or diffusers folder.")
    v2: Optional[bool] = None
    v_parameterization: Optional[bool] = None
    vae: Optional[str] = None
    clip_skip: Optional[int] = Field(None, ge=1, le=12, description="SD1.5 only: 2 for NovelAI-derived anime models.")
    max_token_length: Optional[int] = Field(None, description="150 or 225 for long tag captions (75 when unset).")
    no_half_vae: Optional[bool] = Field(None, description="Keep the VAE in fp32 (the SDXL VAE overflows in fp16).")
    # network
    network_module: str = Field("networks.lora", description="LoRA implementation module inside sd-scripts.")
    network_dim: int = Field(..., ge=1, le=1024, description="LoRA rank.")
    network_alpha: float = Field(..., ge=0, description="LoRA alpha; weights are scaled by alpha/dim.")
    network_dropout: Optional[float] = Field(None, ge=0, le=1)
    network_args: Optional[List[str]] = Field(None, description="Extra network options as 'key=value' strings.")
    network_train_unet_only: Optional[bool] = None
    network_train_text_encoder_only: Optional[bool] = None
    network_weights: Optional[str] = None
    dim_from_weights: Optional[bool] = None
    scale_weight_norms: Optional[float] = Field(None, gt=0)
    # optimizer and schedule
    optimizer_type: str = Field("AdamW", description="Optimizer name sd-scripts knows, or a module.Class path.")
    optimizer_args: Optional[List[str]] = Field(None, description="Optimizer options as 'key=value' strings.")
    learning_rate: float = Field(..., gt=0, description="Default learning rate (used where unet_lr/text_encoder_lr are unset).")
    unet_lr: Optional[float] = Field(None, gt=0)
    text_encoder_lr: Optional[float] = Field(None, ge=0, description="0 freezes the text encoder LoRA.")
    lr_scheduler: str = Field("constant", description="Learning-rate schedule.")
    # no Field bounds here: constrained types would make pydantic's union turn 0.05 into int 0
    lr_warmup_steps: Optional[Union[int, float]] = Field(None, description="Warmup steps, or a fraction (< 1) of all steps.")
    lr_scheduler_num_cycles: Optional[int] = Field(None, ge=1)
    lr_scheduler_power: Optional[float] = Field(None, gt=0)
    lr_scheduler_min_lr_ratio: Optional[float] = Field(None, ge=0, le=1)
    max_grad_norm: Optional[float] = Field(None, ge=0)
    # training
    dataset_config: str = Field(..., min_length=1)
    max_train_epochs: Optional[int] = Field(None, ge=1)
    max_train_steps: Optional[int] = Field(None, ge=1)
    gradient_accumulation_steps: Optional[int] = Field(None, ge=1)
    gradient_checkpointing: Optional[bool] = None
    mixed_precision: Optional[str] = None
    full_fp16: Optional[bool] = None
    full_bf16: Optional[bool] = None
    fp8_base: Optional[bool] = None
    xformers: Optional[bool] = None
    sdpa: Optional[bool] = None
    mem_eff_attn: Optional[bool] = None
    cache_latents: Optional[bool] = None
    cache_latents_to_disk: Optional[bool] = None
    cache_text_encoder_outputs: Optional[bool] = Field(None, description="SDXL only; needs network_train_unet_only.")
    cache_text_encoder_outputs_to_disk: Optional[bool] = None
    vae_batch_size: Optional[int] = Field(None, ge=1)
    max_data_loader_n_workers: Optional[int] = Field(None, ge=0)
    persistent_data_loader_workers: Optional[bool] = None
    lowram: Optional[bool] = None
    highvram: Optional[bool] = None
    seed: Optional[int] = Field(None, ge=0)
    noise_offset: Optional[float] = Field(None, ge=0, le=1)
    multires_noise_iterations: Optional[int] = Field(None, ge=1)
    multires_noise_discount: Optional[float] = Field(None, ge=0, le=1)
    ip_noise_gamma: Optional[float] = Field(None, ge=0)
    min_snr_gamma: Optional[float] = Field(None, gt=0)
    debiased_estimation_loss: Optional[bool] = None
    zero_terminal_snr: Optional[bool] = None
    scale_v_pred_loss_like_noise_pred: Optional[bool] = None
    v_pred_like_loss: Optional[float] = None
    prior_loss_weight: Optional[float] = Field(None, ge=0)
    loss_type: Optional[str] = None
    huber_c: Optional[float] = Field(None, gt=0)
    huber_schedule: Optional[str] = None
    min_timestep: Optional[int] = Field(None, ge=0, le=1000)
    max_timestep: Optional[int] = Field(None, ge=1, le=1000)
    # saving
    output_dir: str = Field(..., min_length=1)
    output_name: str = Field(..., min_length=1)
    save_model_as: str = "safetensors"
    save_precision: Optional[str] = None
    save_every_n_epochs: Optional[int] = Field(None, ge=1)
    save_every_n_steps: Optional[int] = Field(None, ge=1)
    save_last_n_epochs: Optional[int] = Field(None, ge=1)
    save_state: Optional[bool] = Field(None, description="Save optimizer state each save, so --resume can continue.")
    save_last_n_epochs_state: Optional[int] = Field(None, ge=1)
    save_state_on_train_end: Optional[bool] = None
    no_metadata: Optional[bool] = None
    training_comment: Optional[str] = None
    metadata_title: Optional[str] = None
    metadata_author: Optional[str] = None
    metadata_description: Optional[str] = None
    metadata_trigger_phrase: Optional[str] = None
    metadata_tags: Optional[str] = None
    # samples
    sample_prompts: Optional[str] = None
    sample_sampler: Optional[str] = None
    sample_every_n_epochs: Optional[int] = Field(None, ge=1)
    sample_every_n_steps: Optional[int] = Field(None, ge=1)
    sample_at_first: Optional[bool] = None
    # validation (sd-scripts v0.10+)
    validate_every_n_epochs: Optional[int] = Field(None, ge=1)
    validate_every_n_steps: Optional[int] = Field(None, ge=1)
    max_validation_steps: Optional[int] = Field(None, ge=1)
    # logging
    logging_dir: Optional[str] = None
    log_with: Optional[str] = None
    log_prefix: Optional[str] = None
    log_tracker_name: Optional[str] = None
    console_log_simple: Optional[bool] = Field(None, description="Plain log lines (easier to parse than rich's columns).")
    console_log_level: Optional[str] = None

    @validator("optimizer_type")
    def _optimizer(cls, value: str) -> str:
        if "." in value or value.lower() in (o.lower() for o in OPTIMIZERS):
            return value
        raise ValueError(f"'{value}' is not an optimizer sd-scripts knows{_suggest(value, OPTIMIZERS)}")

    @validator("lr_scheduler")
    def _scheduler(cls, value: str) -> str:
        if value in SCHEDULERS:
            return value
        if value.startswith("adafactor:"):
            try:
                float(value.split(":", 1)[1])
                return value
            except ValueError:
                pass
            raise ValueError("use 'adafactor:<initial learning rate>', e.g. 'adafactor:1e-4'")
        raise ValueError(f"'{value}' is not a scheduler sd-scripts knows{_suggest(value, SCHEDULERS)}")

    @validator("max_token_length")
    def _token_length(cls, value: Optional[int]) -> Optional[int]:
        if value is not None and value not in (150, 225):
            raise ValueError("must be 150 or 225 (leave it out for 75)")
        return value

    @validator("mixed_precision")
    def _mixed(cls, value: Optional[str]) -> Optional[str]:
        return _choice(value, MIXED_PRECISIONS)

    @validator("save_precision")
    def _save_precision(cls, value: Optional[str]) -> Optional[str]:
        return _choice(value, SAVE_PRECISIONS)

    @validator("save_model_as")
    def _save_as(cls, value: str) -> str:
        if value != "safetensors":
            raise ValueError("must be 'safetensors' (the WebUI and our reports read LoRAs in that format)")
        return value

    @validator("sample_sampler")
    def _sampler(cls, value: Optional[str]) -> Optional[str]:
        return _choice(value, SAMPLE_SAMPLERS)

    @validator("log_with")
    def _log_with(cls, value: Optional[str]) -> Optional[str]:
        return _choice(value, ("tensorboard", "wandb", "all"))

    @validator("console_log_level")
    def _log_level(cls, value: Optional[str]) -> Optional[str]:
        return _choice(value, ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"))

    @validator("loss_type")
    def _loss_type(cls, value: Optional[str]) -> Optional[str]:
        return _choice(value, ("l1", "l2", "huber", "smooth_l1"))

    @validator("huber_schedule")
    def _huber_schedule(cls, value: Optional[str]) -> Optional[str]:
        return _choice(value, ("constant", "exponential", "snr"))

    @validator("network_args", "optimizer_args", each_item=True)
    def _key_value(cls, value: str) -> str:
        if value.count("=") != 1:
            raise ValueError(f"'{value}' must look like key=value (one '=')")
        return value

    @validator("lr_warmup_steps")
    def _warmup(cls, value: Optional[Union[int, float]]) -> Optional[Union[int, float]]:
        if value is not None and value < 0:
            raise ValueError("must not be negative")
        if isinstance(value, float) and not value < 1:
            raise ValueError("a float means a fraction of all steps and must be below 1; use a whole number for steps")
        return value


def _choice(value: Optional[str], choices: Sequence[str]) -> Optional[str]:
    if value is not None and value not in choices:
        raise ValueError(f"'{value}' is not one of {', '.join(choices)}")
    return value


def _suggest(word: str, choices: Iterable[str]) -> str:
    close = difflib.get_close_matches(word, list(choices), n=1, cutoff=0.6)
    return f"; did you mean '{close[0]}'?" if close else ""


TRAIN_KEYS = frozenset(TrainArgs.__fields__)

# Where sd-scripts' names differ from ours, or a key was put in the wrong file.
MOVED_KEYS = {
    "train_batch_size": "batch_size in the dataset config",
    "dataset_repeats": "num_repeats in the dataset config",
    "train_data_dir": "image_dir of a [[datasets.subsets]] entry",
    "reg_data_dir": "a [[datasets.subsets]] entry with is_reg = true",
    "in_json": "nothing (fine-tuning style metadata is not supported here; use image folders with captions)",
    "caption_extention": "caption_extension in the dataset config",
}

# Written as one TOML section each in config.toml (sd-scripts flattens one level of sections).
SECTIONS: Dict[str, Tuple[str, ...]] = {
    "model": ("pretrained_model_name_or_path", "v2", "v_parameterization", "vae", "clip_skip", "max_token_length", "no_half_vae"),
    "network": tuple(k for k in TrainArgs.__fields__ if k.startswith("network_") or k in ("dim_from_weights", "scale_weight_norms")),
    "optimizer": ("optimizer_type", "optimizer_args", "learning_rate", "unet_lr", "text_encoder_lr", "lr_scheduler",
                  "lr_warmup_steps", "lr_scheduler_num_cycles", "lr_scheduler_power", "lr_scheduler_min_lr_ratio", "max_grad_norm"),
    "saving": tuple(k for k in TrainArgs.__fields__ if k.startswith(("save_", "metadata_", "output_")) or k in ("no_metadata", "training_comment")),
    "sample": tuple(k for k in TrainArgs.__fields__ if k.startswith("sample_")),
    "validation": ("validate_every_n_epochs", "validate_every_n_steps", "max_validation_steps"),
    "logging": ("logging_dir", "log_with", "log_prefix", "log_tracker_name", "console_log_simple", "console_log_level"),
}  # fmt: skip
_SECTIONED = {key for keys in SECTIONS.values() for key in keys}
SECTIONS["training"] = tuple(k for k in TrainArgs.__fields__ if k not in _SECTIONED)


# --------------------------------------------------------------------------- errors


def explain_errors(err: ValidationError, what: str) -> str:
    """One sentence naming the first bad key: wrong level, unknown (with a suggestion) or bad value.

    An unknown key wins over a missing one: a misspelled required key causes both."""
    errors = err.errors()
    first = next((e for e in errors if e["type"] == "value_error.extra"), errors[0])
    loc = [part for part in first["loc"] if part != "__root__"]
    key = str(loc[-1]) if loc else ""
    if first["type"] == "value_error.extra":
        return f"{what}: {_explain_extra(key, loc)}"
    where = _location(loc)
    if where:
        return f"{what}: invalid value for '{where}': {first['msg']}."
    return f"{what}: {first['msg']}."


def _location(loc: Sequence[Any]) -> str:
    parts: List[str] = []
    for part in loc:
        if isinstance(part, int):
            parts[-1] = f"{parts[-1]}[{part}]"
        else:
            parts.append(str(part))
    return ".".join(parts)


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
        return f"unknown setting '{key}' in {here}{_suggest(key, known)} (sd-scripts would reject it)."
    if level == "top" and key in LEVEL_KEYS["general"] | LEVEL_KEYS["subsets"] and key not in TRAIN_KEYS:
        return f"'{key}' is a dataset setting; set it in the dataset config (e.g. --set dataset.{key}=...) instead."
    if key in MOVED_KEYS:
        return f"'{key}' is not used here; set {MOVED_KEYS[key]} instead."
    return (
        f"unknown setting '{key}'{_suggest(key, TRAIN_KEYS)}; sd-scripts would silently ignore it, "
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


# --------------------------------------------------------------------------- cross checks


def check_run(family: Family, dataset: DatasetConfig, train: TrainArgs) -> List[str]:
    """Cross-check both files for one family; raise SpecError on the first hard error, return warnings."""
    warnings: List[str] = []
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
            _fail(f"resolution {res} of {where} must be a multiple of {step} for {family.name}; use e.g. {side - side % step or step}.")
    steps = _effective(general, ds, "bucket_reso_steps", 64)
    if steps % step:
        _fail(f"bucket_reso_steps {steps} of {where} must be divisible by {step} for {family.name} (sd-scripts asserts it).")
    if not _effective(general, ds, "enable_bucket", False):
        return
    low = _effective(general, ds, "min_bucket_reso", 256)
    high = _effective(general, ds, "max_bucket_reso", 1024)
    for key, value in (("min_bucket_reso", low), ("max_bucket_reso", high)):
        if value % steps:
            _fail(f"{key} {value} of {where} must be a multiple of bucket_reso_steps {steps} (sd-scripts would silently change it).")
    if min(sides) < low or max(sides) > high:
        _fail(f"resolution {res} of {where} must lie between min_bucket_reso {low} and max_bucket_reso {high}.")


def _subsets_with(dataset: DatasetConfig) -> Iterable[Tuple[DatasetSection, SubsetSection]]:
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
                    _fail(f"'{key}' cannot be used with cache_text_encoder_outputs (captions must stay fixed); turn one of them off.")
    if train.cache_text_encoder_outputs and not train.network_train_unet_only:
        _fail("cache_text_encoder_outputs needs network_train_unet_only = true (a cached text encoder cannot be trained).")


def _check_precision(family: Family, train: TrainArgs, warnings: List[str]) -> None:
    mixed = train.mixed_precision or "no"
    if train.full_fp16 and mixed != "fp16":
        _fail("full_fp16 needs mixed_precision = 'fp16'.")
    if train.full_bf16 and mixed != "bf16":
        _fail("full_bf16 needs mixed_precision = 'bf16'.")
    if train.fp8_base and mixed == "no":
        _fail("fp8_base needs mixed_precision 'fp16' or 'bf16'.")
    if family.name == "sdxl" and mixed == "fp16" and not train.no_half_vae:
        warnings.append("SDXL's VAE overflows in fp16 (NaN latents, black samples); set no_half_vae = true or use bf16.")
    if sum(bool(x) for x in (train.xformers, train.sdpa, train.mem_eff_attn)) > 1:
        warnings.append("more than one of xformers, sdpa and mem_eff_attn is set; sd-scripts uses only the first of mem_eff_attn, xformers, sdpa.")


def _check_network(train: TrainArgs, warnings: List[str]) -> None:
    if train.network_train_unet_only and train.network_train_text_encoder_only:
        _fail("network_train_unet_only and network_train_text_encoder_only cannot both be true.")
    alpha = train.network_alpha or train.network_dim  # sd-scripts treats alpha 0 as alpha = dim
    if alpha > train.network_dim:
        warnings.append(
            f"network_alpha {train.network_alpha:g} is above network_dim {train.network_dim}: every update is scaled up "
            f"by {alpha / train.network_dim:g}x, which often ends in NaN loss; alpha = dim/2 or lower is usual."
        )
    if train.network_train_unet_only and train.text_encoder_lr:
        warnings.append("text_encoder_lr is set but network_train_unet_only = true, so it is unused.")


def _check_learning_rates(train: TrainArgs, warnings: List[str]) -> None:
    optimizer = train.optimizer_type.lower()
    if optimizer in ADAPTIVE_OPTIMIZERS:
        for key in ("learning_rate", "unet_lr", "text_encoder_lr"):
            value = getattr(train, key)
            if value and value < 0.1:
                warnings.append(f"{train.optimizer_type} finds its own step size and expects {key} near 1.0, not {value:g}.")
        return
    checks = (("learning_rate", UNET_LR_WARN), ("unet_lr", UNET_LR_WARN), ("text_encoder_lr", TEXT_ENCODER_LR_WARN))
    for key, warn_at in checks:
        value = getattr(train, key)
        if not value:
            continue
        if value > LR_HARD_LIMIT:
            _fail(f"{key} {value:g} is far above what LoRA training survives (NaN loss); use at most {UNET_LR_WARN:g}.")
        if value > warn_at:
            warnings.append(f"{key} {value:g} is in the range known to give NaN loss or a black LoRA; {warn_at / 10:g}-{warn_at:g} is safer.")


def _check_schedule(train: TrainArgs, warnings: List[str]) -> None:
    warmup = train.lr_warmup_steps or 0
    if train.lr_scheduler == "constant" and warmup:
        _fail("the 'constant' scheduler refuses lr_warmup_steps (sd-scripts raises); use 'constant_with_warmup' or remove the warmup.")
    if train.lr_scheduler.startswith("adafactor") and train.optimizer_type.lower() != "adafactor":
        _fail("the adafactor scheduler works only with optimizer_type = 'Adafactor'.")
    if train.max_train_epochs is None and train.max_train_steps is None:
        _fail("set max_train_epochs (or max_train_steps); sd-scripts would otherwise stop after 1600 steps.")
    if train.max_timestep is not None and train.min_timestep is not None and train.min_timestep >= train.max_timestep:
        _fail("min_timestep must be below max_timestep.")


def _check_outputs(train: TrainArgs, warnings: List[str]) -> None:
    if train.save_every_n_epochs is None and train.save_every_n_steps is None:
        warnings.append("save_every_n_epochs is not set: only the final LoRA is saved, so there are no epochs to compare.")
    if train.sample_prompts and train.sample_every_n_epochs is None and train.sample_every_n_steps is None:
        warnings.append("sample_every_n_epochs is not set: no sample images will be drawn for the epoch grid.")


# --------------------------------------------------------------------------- TOML I/O


def dumps_toml(data: Mapping[str, Any], header: str = "") -> str:
    """tomli-w output with a '#' comment header (tomli-w writes no comments itself)."""
    lines = "".join(f"# {line}\n" if line else "#\n" for line in header.splitlines())
    return lines + ("\n" if lines else "") + tomli_w.dumps(dict(data))


def train_args_to_toml_dict(train: TrainArgs) -> Dict[str, Dict[str, Any]]:
    flat = train.to_toml_dict()
    return {
        section: {key: flat[key] for key in keys if key in flat}
        for section, keys in SECTIONS.items()
        if any(key in flat for key in keys)
    }


def flatten_sections(data: Mapping[str, Any], what: str) -> Dict[str, Any]:
    """sd-scripts' read_config_from_file: one level of [sections] merged into one namespace.

    Unlike sd-scripts we refuse a key given twice, which it would resolve silently.
    """
    flat: Dict[str, Any] = {}
    for name, value in data.items():
        items = value.items() if isinstance(value, dict) else [(name, value)]
        for key, item in items:
            if key in flat:
                raise SpecError(f"{what}: '{key}' is set twice; keep one.")
            flat[key] = item
    return flat


def read_toml_file(path: Path, what: str) -> Dict[str, Any]:
    try:
        with open(path, "rb") as handle:
            return tomllib.load(handle)
    except FileNotFoundError:
        raise UserInputError(f"{what.capitalize()} {path} does not exist; run `python -m trainer config` first.") from None
    except OSError as exc:
        raise UserInputError(f"Cannot read {what} {path}: {exc.strerror}.") from None
    except tomllib.TOMLDecodeError as exc:
        raise SpecError(f"{what.capitalize()} {path} is not valid TOML: {exc}.") from None


def load_dataset_config(path: Path) -> DatasetConfig:
    return parse_dataset_config(read_toml_file(path, "dataset config"), what=str(path.name))


def load_train_args(path: Path) -> TrainArgs:
    data = read_toml_file(path, "training config")
    return parse_train_args(flatten_sections(data, str(path.name)), what=str(path.name))


def write_dataset_config(path: Path, dataset: DatasetConfig, header: str = "") -> None:
    write_text(path, dumps_toml(dataset.to_toml_dict(), header))


def write_train_args(path: Path, train: TrainArgs, header: str = "") -> None:
    write_text(path, dumps_toml(train_args_to_toml_dict(train), header))


# --------------------------------------------------------------------------- value parsing


_BARE = re.compile(r"^[A-Za-z_][A-Za-z0-9_.\-/\\: ]*$")


def parse_value(text: str) -> Any:
    """A --set value as TOML (1e-4, true, [1, 2], "x"); anything else is taken as a string."""
    try:
        return tomllib.loads(f"v = {text}")["v"]
    except tomllib.TOMLDecodeError:
        if _BARE.match(text) or text == "":
            return text
        raise UserInputError(f"Cannot read the value {text!r}; quote strings, e.g. key='\"{text}\"'.") from None


def is_finite(value: float) -> bool:
    return not (math.isnan(value) or math.isinf(value))
