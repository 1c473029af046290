"""TEST DOUBLE of Forge's built-in ControlNet `lib_controlnet.external_code`
(extensions-builtin/sd_forge_controlnet, stable-diffusion-webui-forge main, June 2025).

Kept from upstream: ControlNetUnit is a plain dataclass (enabled defaults to True, module to
"None"), resize_mode / control_mode accept strings, ints or enums, and there is no
update_cn_script_in_processing or get_models (those live in sd-webui-controlnet only).
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum

import numpy as np


def get_api_version() -> int:
    return 2


class ControlMode(Enum):
    BALANCED = "Balanced"
    PROMPT = "My prompt is more important"
    CONTROL = "ControlNet is more important"


class ResizeMode(Enum):
    RESIZE = "Just Resize"
    INNER_FIT = "Crop and Resize"
    OUTER_FIT = "Resize and Fill"


def resize_mode_from_value(value: str | int | ResizeMode) -> ResizeMode:
    if isinstance(value, str):
        return ResizeMode(value)
    elif isinstance(value, int):
        return [e for e in ResizeMode][value] if value < len(ResizeMode) else ResizeMode.RESIZE
    else:
        return value


def control_mode_from_value(value: str | int | ControlMode) -> ControlMode:
    if isinstance(value, str):
        return ControlMode(value)
    elif isinstance(value, int):
        return [e for e in ControlMode][value]
    else:
        return value


@dataclass
class ControlNetUnit:
    use_preview_as_input: bool = False
    generated_image: np.ndarray | None = None
    mask_image: np.ndarray | None = None
    mask_image_fg: np.ndarray | None = None
    enabled: bool = True
    module: str = "None"
    model: str = "None"
    weight: float = 1.0
    image: np.ndarray | None = None
    image_fg: np.ndarray | None = None
    resize_mode: ResizeMode | int | str = ResizeMode.INNER_FIT
    processor_res: int = -1
    threshold_a: float = -1
    threshold_b: float = -1
    guidance_start: float = 0.0
    guidance_end: float = 1.0
    pixel_perfect: bool = False
    control_mode: ControlMode | int | str = ControlMode.BALANCED
    save_detected_map: bool = True

    @staticmethod
    def from_dict(d: dict) -> ControlNetUnit:
        return ControlNetUnit(**{k: v for k, v in d.items() if k in vars(ControlNetUnit)})
