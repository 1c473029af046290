"""Typed models of kohya sd-scripts' two config files: model families, value choices, and the keys.

* `DatasetConfig` is the `--dataset_config` file: `[general]`, `[[datasets]]`,
  `[[datasets.subsets]]`, each key only at the levels sd-scripts' `ConfigSanitizer`
  (library/config_util.py) allows. sd-scripts rejects a key at the wrong level too, but only
  after loading the model, and with a voluptuous path instead of a sentence.
* `TrainArgs` is the `--config_file` file of train_network.py / sdxl_train_network.py. sd-scripts
  flattens its sections and silently ignores unknown keys, so a misspelled key here would be
  lost without a word: we reject every key we do not know, naming it.

Key names, levels, choices and defaults were read from kohya-ss/sd-scripts v0.10.1
(library/config_util.py, library/train_util.py, train_network.py, sdxl_train_network.py).
The sentences for a rejected file are in config_errors.py, the cross-checks in config_checks.py,
reading and writing the TOML files in config.py.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from vidstyle.compat import BaseModel, Extra, Field, root_validator, validator
from vidstyle.errors import SpecError
from vidstyle.overrides import suggest

# --------------------------------------------------------------------------- families


@dataclass(frozen=True)
class Family:
    """What differs between SD1.5 and SDXL LoRA training in sd-scripts."""

    name: str
    script: str
    bucket_step: int  # assert_extra_args: verify_bucket_reso_steps(64) / (32)
    default_resolution: int
    webui_sd_version: str  # the WebUI Lora card's "sd version" (network.SdVersion names)


FAMILIES: dict[str, Family] = {
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
    def _strict_types(cls, values: dict[str, Any]) -> dict[str, Any]:
        for key, value in values.items():
            field = cls.__fields__.get(key)
            if field is None or value is None or not isinstance(field.outer_type_, type):
                continue
            problem = _type_problem(field.outer_type_, value)
            if problem:
                raise ValueError(f"'{key}' must be {problem}, not {value!r}")
        return values

    def to_toml_dict(self) -> dict[str, Any]:
        """Only the keys that are set, in declaration order, tuples as arrays."""
        return _plain(self.dict(exclude_none=True))


def _type_problem(kind: type, value: Any) -> str | None:
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

    num_repeats: int | None = Field(default=None, ge=1, description="How many times each image is seen per epoch.")
    shuffle_caption: bool | None = Field(default=None, description="Shuffle comma-separated tags each step.")
    keep_tokens: int | None = Field(default=None, ge=0, description="Leading tags kept in place when shuffling.")
    keep_tokens_separator: str | None = None
    secondary_separator: str | None = None
    caption_separator: str | None = None
    enable_wildcard: bool | None = None
    color_aug: bool | None = Field(default=None, description="Hue augmentation (prevents latent caching).")
    flip_aug: bool | None = Field(default=None, description="Horizontal flips (bad for asymmetric characters).")
    random_crop: bool | None = Field(default=None, description="Random crops (prevents latent caching).")
    face_crop_aug_range: tuple[float, float] | None = None
    token_warmup_min: int | None = Field(default=None, ge=1)
    token_warmup_step: float | None = Field(default=None, ge=0, le=1e6)
    caption_prefix: str | None = None
    caption_suffix: str | None = None
    caption_dropout_rate: float | None = Field(default=None, ge=0, le=1)
    caption_dropout_every_n_epochs: int | None = Field(default=None, ge=0)
    caption_tag_dropout_rate: float | None = Field(default=None, ge=0, le=1)
    caption_extension: str | None = Field(
        default=None, description="Caption file extension; sd-scripts' default is .caption."
    )
    class_tokens: str | None = Field(default=None, description="Caption used for images without a caption file.")
    cache_info: bool | None = None
    custom_attributes: dict[str, Any] | None = None
    resize_interpolation: str | None = None

    @validator("caption_extension")
    def _dot_extension(cls, value: str | None) -> str | None:
        if value is not None and not value.startswith("."):
            raise ValueError(f"must start with a dot, e.g. '.{value}'")
        return value

    @validator("resize_interpolation")
    def _interpolation(cls, value: str | None) -> str | None:
        if value is not None and value not in RESIZE_INTERPOLATIONS:
            raise ValueError(f"'{value}' is not one of {', '.join(RESIZE_INTERPOLATIONS)}")
        return value

    @validator("face_crop_aug_range")
    def _range_order(cls, value: tuple[float, float] | None) -> tuple[float, float] | None:
        if value is not None and value[0] > value[1]:
            raise ValueError("the lower bound must not exceed the upper bound")
        return value


class DatasetKeys(_Strict):
    """Keys allowed only in [general] and [[datasets]] (DATASET_ASCENDABLE_SCHEMA)."""

    resolution: int | tuple[int, int] | None = Field(
        default=None, description="Training size: 512, or [width, height]."
    )
    batch_size: int | None = Field(default=None, ge=1, description="Images per step (per GPU).")
    enable_bucket: bool | None = Field(default=None, description="Aspect-ratio buckets instead of square crops.")
    min_bucket_reso: int | None = Field(default=None, ge=64)
    max_bucket_reso: int | None = Field(default=None, ge=64)
    bucket_reso_steps: int | None = Field(default=None, ge=8)
    bucket_no_upscale: bool | None = None
    network_multiplier: float | None = Field(default=None, ge=-10, le=10)
    validation_split: float | None = Field(
        default=None, ge=0, le=1, description="Fraction of this dataset held out for validation loss."
    )
    validation_seed: int | None = Field(default=None, ge=0)

    @root_validator(pre=True)
    def _resolution_shape(cls, values: dict[str, Any]) -> dict[str, Any]:
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
    is_reg: bool | None = Field(default=None, description="Regularization images.")
    alpha_mask: bool | None = None


class GeneralSection(SubsetKeys, DatasetKeys):
    """[general]: defaults for every dataset and subset."""


class DatasetSection(SubsetKeys, DatasetKeys):
    """[[datasets]]: one dataset (its own resolution, batch size and buckets)."""

    subsets: list[SubsetSection] = Field(..., min_items=1)


class DatasetConfig(_Strict):
    """The whole --dataset_config file."""

    general: GeneralSection = Field(default_factory=GeneralSection)
    datasets: list[DatasetSection] = Field(..., min_items=1)

    def to_toml_dict(self) -> dict[str, Any]:
        data = _plain(self.dict(exclude_none=True))
        if not data.get("general"):
            data.pop("general", None)
        for dataset in data["datasets"]:
            dataset["subsets"] = [_leading(sub, SUBSET_FIRST) for sub in dataset["subsets"]]
        return data


SUBSET_FIRST = ("image_dir", "num_repeats", "class_tokens")


def _leading(data: dict[str, Any], first: Sequence[str]) -> dict[str, Any]:
    """Readable key order: the keys that identify a section come first."""
    return {**{k: data[k] for k in first if k in data}, **{k: v for k, v in data.items() if k not in first}}


LEVEL_TITLES = {"general": "[general]", "datasets": "[[datasets]]", "subsets": "[[datasets.subsets]]"}
LEVEL_KEYS: dict[str, frozenset] = {
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
    pretrained_model_name_or_path: str = Field(
        ..., min_length=1, description="Base checkpoint (.safetensors/.ckpt) or diffusers folder."
    )
    v2: bool | None = None
    v_parameterization: bool | None = None
    vae: str | None = None
    clip_skip: int | None = Field(
        default=None, ge=1, le=12, description="SD1.5 only: 2 for NovelAI-derived anime models."
    )
    max_token_length: int | None = Field(default=None, description="150 or 225 for long tag captions (75 when unset).")
    no_half_vae: bool | None = Field(default=None, description="Keep the VAE in fp32 (the SDXL VAE overflows in fp16).")
    # network
    network_module: str = Field(default="networks.lora", description="LoRA implementation module inside sd-scripts.")
    network_dim: int = Field(..., ge=1, le=1024, description="LoRA rank.")
    network_alpha: float = Field(..., ge=0, le=1024, description="LoRA alpha; weights are scaled by alpha/dim.")
    network_dropout: float | None = Field(default=None, ge=0, le=1)
    network_args: list[str] | None = Field(default=None, description="Extra network options as 'key=value' strings.")
    network_train_unet_only: bool | None = None
    network_train_text_encoder_only: bool | None = None
    network_weights: str | None = None
    dim_from_weights: bool | None = None
    scale_weight_norms: float | None = Field(default=None, gt=0, le=100)
    # optimizer and schedule
    optimizer_type: str = Field(default="AdamW", description="Optimizer name sd-scripts knows, or a module.Class path.")
    optimizer_args: list[str] | None = Field(default=None, description="Optimizer options as 'key=value' strings.")
    learning_rate: float = Field(
        ..., gt=0, description="Default learning rate (used where unet_lr/text_encoder_lr are unset)."
    )
    unet_lr: float | None = Field(default=None, gt=0)
    text_encoder_lr: float | None = Field(default=None, ge=0, description="0 freezes the text encoder LoRA.")
    lr_scheduler: str = Field(default="constant", description="Learning-rate schedule.")
    # no Field bounds here: constrained types would make pydantic's union turn 0.05 into int 0
    lr_warmup_steps: int | float | None = Field(
        default=None, description="Warmup steps, or a fraction (< 1) of all steps."
    )
    lr_scheduler_num_cycles: int | None = Field(default=None, ge=1)
    lr_scheduler_power: float | None = Field(default=None, gt=0, le=10)
    lr_scheduler_min_lr_ratio: float | None = Field(default=None, ge=0, le=1)
    max_grad_norm: float | None = Field(default=None, ge=0, le=100)
    # training
    dataset_config: str = Field(..., min_length=1)
    max_train_epochs: int | None = Field(default=None, ge=1)
    max_train_steps: int | None = Field(default=None, ge=1)
    gradient_accumulation_steps: int | None = Field(default=None, ge=1)
    gradient_checkpointing: bool | None = None
    mixed_precision: str | None = None
    full_fp16: bool | None = None
    full_bf16: bool | None = None
    fp8_base: bool | None = None
    xformers: bool | None = None
    sdpa: bool | None = None
    mem_eff_attn: bool | None = None
    cache_latents: bool | None = None
    cache_latents_to_disk: bool | None = None
    cache_text_encoder_outputs: bool | None = Field(
        default=None, description="SDXL only; needs network_train_unet_only."
    )
    cache_text_encoder_outputs_to_disk: bool | None = None
    vae_batch_size: int | None = Field(default=None, ge=1)
    max_data_loader_n_workers: int | None = Field(default=None, ge=0)
    persistent_data_loader_workers: bool | None = None
    lowram: bool | None = None
    highvram: bool | None = None
    seed: int | None = Field(default=None, ge=0)
    noise_offset: float | None = Field(default=None, ge=0, le=1)
    multires_noise_iterations: int | None = Field(default=None, ge=1)
    multires_noise_discount: float | None = Field(default=None, ge=0, le=1)
    ip_noise_gamma: float | None = Field(
        default=None, ge=0, le=1, description="Input perturbation noise; 0.1 is usual."
    )
    min_snr_gamma: float | None = Field(default=None, gt=0, le=100, description="Min-SNR loss weighting; 5 is usual.")
    debiased_estimation_loss: bool | None = None
    zero_terminal_snr: bool | None = None
    scale_v_pred_loss_like_noise_pred: bool | None = None
    v_pred_like_loss: float | None = Field(default=None, ge=0, le=1)
    prior_loss_weight: float | None = Field(default=None, ge=0, le=100)
    loss_type: str | None = None
    huber_c: float | None = Field(default=None, gt=0, le=1)
    huber_schedule: str | None = None
    min_timestep: int | None = Field(default=None, ge=0, le=1000)
    max_timestep: int | None = Field(default=None, ge=1, le=1000)
    # saving
    output_dir: str = Field(..., min_length=1)
    output_name: str = Field(..., min_length=1)
    save_model_as: str = "safetensors"
    save_precision: str | None = None
    save_every_n_epochs: int | None = Field(default=None, ge=1)
    save_every_n_steps: int | None = Field(default=None, ge=1)
    save_last_n_epochs: int | None = Field(default=None, ge=1)
    save_state: bool | None = Field(
        default=None, description="Save optimizer state each save, so --resume can continue."
    )
    save_last_n_epochs_state: int | None = Field(default=None, ge=1)
    save_state_on_train_end: bool | None = None
    no_metadata: bool | None = None
    training_comment: str | None = None
    metadata_title: str | None = None
    metadata_author: str | None = None
    metadata_description: str | None = None
    metadata_trigger_phrase: str | None = None
    metadata_tags: str | None = None
    # samples
    sample_prompts: str | None = None
    sample_sampler: str | None = None
    sample_every_n_epochs: int | None = Field(default=None, ge=1)
    sample_every_n_steps: int | None = Field(default=None, ge=1)
    sample_at_first: bool | None = None
    # validation (sd-scripts v0.10+)
    validate_every_n_epochs: int | None = Field(default=None, ge=1)
    validate_every_n_steps: int | None = Field(default=None, ge=1)
    max_validation_steps: int | None = Field(default=None, ge=1)
    # logging
    logging_dir: str | None = None
    log_with: str | None = None
    log_prefix: str | None = None
    log_tracker_name: str | None = None
    console_log_simple: bool | None = Field(
        default=None, description="Plain log lines (easier to parse than rich's columns)."
    )
    console_log_level: str | None = None

    @validator("optimizer_type")
    def _optimizer(cls, value: str) -> str:
        if "." in value or value.lower() in (o.lower() for o in OPTIMIZERS):
            return value
        raise ValueError(f"'{value}' is not an optimizer sd-scripts knows{suggest(value, OPTIMIZERS)}")

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
        raise ValueError(f"'{value}' is not a scheduler sd-scripts knows{suggest(value, SCHEDULERS)}")

    @validator("max_token_length")
    def _token_length(cls, value: int | None) -> int | None:
        if value is not None and value not in (150, 225):
            raise ValueError("must be 150 or 225 (leave it out for 75)")
        return value

    @validator("mixed_precision")
    def _mixed(cls, value: str | None) -> str | None:
        return _choice(value, MIXED_PRECISIONS)

    @validator("save_precision")
    def _save_precision(cls, value: str | None) -> str | None:
        return _choice(value, SAVE_PRECISIONS)

    @validator("save_model_as")
    def _save_as(cls, value: str) -> str:
        if value != "safetensors":
            raise ValueError("must be 'safetensors' (the WebUI and our reports read LoRAs in that format)")
        return value

    @validator("sample_sampler")
    def _sampler(cls, value: str | None) -> str | None:
        return _choice(value, SAMPLE_SAMPLERS)

    @validator("log_with")
    def _log_with(cls, value: str | None) -> str | None:
        return _choice(value, ("tensorboard", "wandb", "all"))

    @validator("console_log_level")
    def _log_level(cls, value: str | None) -> str | None:
        return _choice(value, ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"))

    @validator("loss_type")
    def _loss_type(cls, value: str | None) -> str | None:
        return _choice(value, ("l1", "l2", "huber", "smooth_l1"))

    @validator("huber_schedule")
    def _huber_schedule(cls, value: str | None) -> str | None:
        return _choice(value, ("constant", "exponential", "snr"))

    @validator("network_args", "optimizer_args", each_item=True)
    def _key_value(cls, value: str) -> str:
        if value.count("=") != 1:
            raise ValueError(f"'{value}' must look like key=value (one '=')")
        return value

    @validator("lr_warmup_steps")
    def _warmup(cls, value: int | float | None) -> int | float | None:
        if value is not None and value < 0:
            raise ValueError("must not be negative")
        if isinstance(value, float) and not value < 1:
            raise ValueError("a float means a fraction of all steps and must be below 1; use a whole number for steps")
        return value


def _choice(value: str | None, choices: Sequence[str]) -> str | None:
    if value is not None and value not in choices:
        raise ValueError(f"'{value}' is not one of {', '.join(choices)}")
    return value


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
SECTIONS: dict[str, tuple[str, ...]] = {
    "model": (
        "pretrained_model_name_or_path",
        "v2",
        "v_parameterization",
        "vae",
        "clip_skip",
        "max_token_length",
        "no_half_vae",
    ),
    "network": tuple(
        k for k in TrainArgs.__fields__ if k.startswith("network_") or k in ("dim_from_weights", "scale_weight_norms")
    ),
    "optimizer": (
        "optimizer_type",
        "optimizer_args",
        "learning_rate",
        "unet_lr",
        "text_encoder_lr",
        "lr_scheduler",
        "lr_warmup_steps",
        "lr_scheduler_num_cycles",
        "lr_scheduler_power",
        "lr_scheduler_min_lr_ratio",
        "max_grad_norm",
    ),
    "saving": tuple(
        k
        for k in TrainArgs.__fields__
        if k.startswith(("save_", "metadata_", "output_")) or k in ("no_metadata", "training_comment")
    ),
    "sample": tuple(k for k in TrainArgs.__fields__ if k.startswith("sample_")),
    "validation": ("validate_every_n_epochs", "validate_every_n_steps", "max_validation_steps"),
    "logging": ("logging_dir", "log_with", "log_prefix", "log_tracker_name", "console_log_simple", "console_log_level"),
}
_SECTIONED = {key for keys in SECTIONS.values() for key in keys}
SECTIONS["training"] = tuple(k for k in TrainArgs.__fields__ if k not in _SECTIONED)
