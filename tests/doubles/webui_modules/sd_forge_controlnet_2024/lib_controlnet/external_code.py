"""TEST DOUBLE of Forge's built-in ControlNet `lib_controlnet.external_code` as it was before the
August 2024 rewrite (stable-diffusion-webui-forge tag `previous`, gradio 3.41).

The difference that matters to Vidstyle: ControlNetUnit has no `image_fg`, and `image` is a
{"image": array, "mask": array} pair (from_dict turns an API base64 image into one).
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
    batch_image_dir: str = ""
    batch_mask_dir: str = ""
    batch_input_gallery: list[str] | None = None
    batch_mask_gallery: list[str] | None = None
    generated_image: np.ndarray | None = None
    mask_image: dict | None = None
    enabled: bool = True
    module: str = "None"
    model: str = "None"
    weight: float = 1.0
    image: dict | None = None
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
