"""TEST DOUBLE of sd-webui-controlnet's public module `scripts.external_code` (v1.1.455).

The WebUI imports it as `scripts.external_code` while it loads the extension; tests
register it under that name. It keeps upstream's contract:
* ControlNetUnit: the pydantic model of internal_controlnet/args.py (field names,
  defaults, bounds, enum coercion of resize_mode / control_mode, the module check, the
  guidance_start <= guidance_end check, and bound_check_params resetting out-of-range
  processor_res / thresholds to the preprocessor's defaults);
* update_cn_script_in_processing / update_cn_script: replace the ControlNet script's
  argument slots, padded with disabled units up to `control_net_unit_count` (default 3);
* get_models (names "name [hash]", no "None"), get_modules, get_modules_detail.
`_models` is the double's list of model files (test hook). Validators carry allow_reuse=True
only because tests import the double afresh for every test.
"""

from __future__ import annotations

from copy import copy
from enum import Enum
from typing import Any

from modules import shared

from vidstyle.compat import BaseModel, Field, root_validator, validator


def get_api_version() -> int:
    return 3


class ResizeMode(Enum):
    RESIZE = "Just Resize"
    INNER_FIT = "Crop and Resize"
    OUTER_FIT = "Resize and Fill"


class ControlMode(Enum):
    BALANCED = "Balanced"
    PROMPT = "My prompt is more important"
    CONTROL = "ControlNet is more important"


class HiResFixOption(Enum):
    BOTH = "Both"
    LOW_RES_ONLY = "Low res only"
    HIGH_RES_ONLY = "High res only"


# Preprocessor sliders (scripts/supported_preprocessor.py, preprocessor/model_free_preprocessors.py):
# name -> (resolution, slider_1, slider_2) as (label, min, max, value, step, visible).
_SLIDERS = {
    "none": (
        ("Resolution", 64, 2048, 512, 8, True),
        ("EMPTY_LABEL", 0.0, 1.0, 0.5, 0.01, False),
        ("EMPTY_LABEL", 0.0, 1.0, 0.5, 0.01, False),
    ),
    "canny": (
        ("Resolution", 64, 2048, 512, 8, True),
        ("Low Threshold", 1, 255, 100, 1, True),
        ("High Threshold", 1, 255, 200, 1, True),
    ),
}
_models: dict[str, str] = {}  # test hook: lower-case model name -> "name [hash]"


class ControlNetUnit(BaseModel):
    class Config:
        arbitrary_types_allowed = True
        extra = "ignore"

    is_ui: bool = False
    enabled: bool = False
    module: str = "none"
    model: str = "None"
    weight: float = Field(1.0, ge=0.0, le=2.0)
    image: Any | None = None
    resize_mode: ResizeMode = ResizeMode.INNER_FIT
    low_vram: bool = False
    processor_res: int = -1
    threshold_a: float = -1
    threshold_b: float = -1
    guidance_start: float = Field(0.0, ge=0.0, le=1.0)
    guidance_end: float = Field(1.0, ge=0.0, le=1.0)
    pixel_perfect: bool = False
    control_mode: ControlMode = ControlMode.BALANCED
    inpaint_crop_input_image: bool = True
    hr_option: HiResFixOption = HiResFixOption.BOTH
    save_detected_map: bool = True
    mask: Any | None = None

    @validator("module", always=True, pre=True, allow_reuse=True)
    def check_module(cls, value: str) -> str:
        if value not in _SLIDERS:
            raise ValueError(f"module({value}) not found in supported modules.")
        return value

    @validator("resize_mode", always=True, pre=True, allow_reuse=True)
    def check_resize_mode(cls, value):
        if isinstance(value, str):
            return ResizeMode(value)
        assert isinstance(value, ResizeMode)
        return value

    @root_validator(allow_reuse=True)
    def bound_check_params(cls, values: dict) -> dict:
        if not values.get("enabled") or not values.get("module"):
            return values
        for key, (_, lo, hi, default, _, _) in zip(
            ("processor_res", "threshold_a", "threshold_b"), _SLIDERS[values["module"]], strict=False
        ):
            if values[key] < lo or values[key] > hi:
                values[key] = default
        return values

    @root_validator(allow_reuse=True)
    def guidance_check(cls, values: dict) -> dict:
        if values.get("guidance_start") > values.get("guidance_end"):
            raise ValueError(f"guidance_start({values['guidance_start']}) > guidance_end({values['guidance_end']})")
        return values


def find_cn_script(script_runner):
    if script_runner is None:
        return None
    for script in script_runner.alwayson_scripts:
        if script.title().lower() == "controlnet":
            return script
    return None


def update_cn_script_in_processing(p, cn_units: list[ControlNetUnit], **_kwargs):
    p.script_args = update_cn_script(p.scripts, p.script_args_value, cn_units)


def update_cn_script(script_runner, script_args, cn_units: list[ControlNetUnit]):
    script_args_type = type(script_args)
    assert script_args_type in (tuple, list), script_args_type
    updated_script_args = list(copy(script_args))
    cn_script = find_cn_script(script_runner)
    if cn_script is None or len(script_args) < cn_script.args_from:
        return script_args
    max_models = shared.opts.data.get("control_net_unit_count", 3)
    cn_units = cn_units + [ControlNetUnit(enabled=False)] * max(max_models - len(cn_units), 0)
    cn_script_args_diff = 0
    for script in script_runner.alwayson_scripts:
        if script is cn_script:
            cn_script_args_diff = len(cn_units) - (cn_script.args_to - cn_script.args_from)
            updated_script_args[script.args_from : script.args_to] = cn_units
            script.args_to = script.args_from + len(cn_units)
        else:
            script.args_from += cn_script_args_diff
            script.args_to += cn_script_args_diff
    return script_args_type(updated_script_args)


def get_models(update: bool = False) -> list[str]:
    return list(_models.values())


def get_modules(alias_names: bool = False) -> list[str]:
    return list(_SLIDERS)


def get_modules_detail(alias_names: bool = False) -> dict[str, Any]:
    detail = {}
    for name, sliders in _SLIDERS.items():
        detail[name] = dict(
            model_free=name != "none",
            sliders=[
                dict(name=label, value=value, min=lo, max=hi, step=step)
                for label, lo, hi, value, step, visible in sliders
                if visible
            ],
        )
    return detail


def _add_model(name: str) -> str:
    """Test hook: a model file models/ControlNet/<name>.safetensors, listed as upstream lists it."""
    listed = f"{name} [{abs(hash(name)) % 16**8:08x}]"
    _models[name.lower()] = listed
    return listed
