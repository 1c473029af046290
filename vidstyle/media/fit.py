"""Fit a frame to the job's width x height: crop, pad or stretch."""

from __future__ import annotations

import cv2
import numpy as np

from ..errors import SpecError


def fit_frame(image: np.ndarray, width: int, height: int, mode: str = "crop") -> np.ndarray:
    """Resize to width x height: 'crop' (center crop to the aspect), 'pad' (black bars), 'stretch'."""
    if mode not in ("crop", "pad", "stretch"):
        raise SpecError(f"Unknown fit mode '{mode}'; choose crop, pad or stretch.")
    src_h, src_w = image.shape[:2]
    if (src_w, src_h) == (width, height):
        return image
    if mode == "stretch":
        return _resize(image, width, height)
    if mode == "crop":
        scale = max(width / src_w, height / src_h)
        crop_w, crop_h = min(src_w, round(width / scale)), min(src_h, round(height / scale))
        x, y = (src_w - crop_w) // 2, (src_h - crop_h) // 2
        return _resize(image[y : y + crop_h, x : x + crop_w], width, height)
    scale = min(width / src_w, height / src_h)
    new_w, new_h = max(1, min(width, round(src_w * scale))), max(1, min(height, round(src_h * scale)))
    canvas = np.zeros((height, width) + image.shape[2:], dtype=image.dtype)
    x, y = (width - new_w) // 2, (height - new_h) // 2
    canvas[y : y + new_h, x : x + new_w] = _resize(image, new_w, new_h)
    return canvas


def _resize(image: np.ndarray, width: int, height: int) -> np.ndarray:
    src_h, src_w = image.shape[:2]
    if (src_w, src_h) == (width, height):
        return np.ascontiguousarray(image)
    # INTER_AREA averages when shrinking (no aliasing); cubic keeps edges crisp when enlarging.
    shrinking = width * height < src_w * src_h
    return cv2.resize(image, (width, height), interpolation=cv2.INTER_AREA if shrinking else cv2.INTER_CUBIC)
