"""Where to crop: the focal point of an image and the crop plan for each crop mode.

The focal point follows the idea of the WebUI's old "auto focal point crop": a weighted mean
of three cues -- faces (strongest), corner features (detail) and the crop window with the
most entropy -- and the square window is then shifted, if it can be, to contain every face.
All positions are fractions of the image so they survive any decode scale.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import cv2
import numpy as np

from .images import resize_long_side

CROP_MODES = ("bucket", "focal", "center")
RelBox = tuple[float, float, float, float]  # x0, y0, x1, y1 as fractions

# Weights of the cues in the focal point; faces dominate because a character LoRA is
# about the character, detail and entropy decide only when no face is found.
FACE_WEIGHT = 2.0
CORNER_WEIGHT = 0.5
ENTROPY_WEIGHT = 0.5


@dataclass(frozen=True)
class CropPlan:
    box: tuple[int, int, int, int]  # left, top, right, bottom in full-size upright pixels
    out_size: tuple[int, int]  # width, height written
    scale: float  # output pixels per source pixel; > 1 means upscaling

    @property
    def upscaled(self) -> bool:
        return self.scale > 1.0 + 1e-9


def corner_centroid(grey: np.ndarray) -> tuple[float, float] | None:
    height, width = grey.shape
    corners = cv2.goodFeaturesToTrack(
        grey, maxCorners=100, qualityLevel=0.04, minDistance=max(3.0, 0.06 * min(width, height))
    )
    if corners is None or len(corners) == 0:
        return None
    points = corners.reshape(-1, 2)
    return float(points[:, 0].mean() / width), float(points[:, 1].mean() / height)


def _entropy(grey: np.ndarray) -> float:
    histogram = np.bincount((grey >> 2).ravel(), minlength=64).astype(np.float64)
    p = histogram[histogram > 0] / histogram.sum()
    return float(-(p * np.log2(p)).sum())


def entropy_centre(grey: np.ndarray, steps: int = 16) -> tuple[float, float] | None:
    """Centre of the square window (the crop) with the most entropy, sliding along the long axis."""
    height, width = grey.shape
    side = min(width, height)
    travel = max(width, height) - side
    if travel <= 0:
        return None
    best, best_offset = -1.0, 0
    for i in range(steps + 1):
        offset = round(travel * i / steps)
        window = grey[:, offset : offset + side] if width > height else grey[offset : offset + side, :]
        value = _entropy(window)
        if value > best + 1e-9:
            best, best_offset = value, offset
    if width > height:
        return (best_offset + side / 2) / width, 0.5
    return 0.5, (best_offset + side / 2) / height


def focal_point(rgb: np.ndarray, faces: Sequence[RelBox] = ()) -> tuple[float, float]:
    """Weighted mean of the face, corner and entropy cues, as fractions of width and height."""
    grey = cv2.cvtColor(resize_long_side(rgb, 256), cv2.COLOR_RGB2GRAY)
    cues = []
    if faces:
        centres = np.array([((x0 + x1) / 2, (y0 + y1) / 2) for x0, y0, x1, y1 in faces])
        cues.append((FACE_WEIGHT, tuple(centres.mean(axis=0))))
    corner = corner_centroid(grey)
    if corner is not None:
        cues.append((CORNER_WEIGHT, corner))
    entropy = entropy_centre(resize_long_side(grey, 128))
    if entropy is not None:
        cues.append((ENTROPY_WEIGHT, entropy))
    if not cues:
        return 0.5, 0.5
    total = sum(weight for weight, _ in cues)
    x = sum(weight * point[0] for weight, point in cues) / total
    y = sum(weight * point[1] for weight, point in cues) / total
    return float(x), float(y)


def _place(start: float, side: int, length: int, must_from: float | None, must_to: float | None) -> int:
    """Window start along one axis: around `start`, moved to cover [must_from, must_to] if it fits."""
    position = start
    if must_from is not None and must_to is not None and must_to - must_from <= side:
        if must_from < position:
            position = must_from
        if must_to > position + side:
            position = must_to - side
    return int(round(min(max(position, 0.0), length - side)))


def plan_crop(
    width: int,
    height: int,
    mode: str,
    size: int,
    focal: tuple[float, float] = (0.5, 0.5),
    faces: Sequence[RelBox] = (),
) -> CropPlan:
    """The crop box and output size for `mode` (see CROP_MODES); never decides to drop."""
    if mode == "bucket":
        # Keep the whole picture and its aspect ratio; only shrink to the pixel budget so
        # kohya's bucketing sees the same pixels it would after its own resize.
        scale = min(1.0, math.sqrt(size * size / (width * height)))
        out = (max(1, int(width * scale)), max(1, int(height * scale)))
        return CropPlan(box=(0, 0, width, height), out_size=out, scale=scale)
    if mode not in CROP_MODES:
        raise ValueError(f"unknown crop mode {mode!r}")
    side = min(width, height)
    if mode == "center":
        left, top = (width - side) // 2, (height - side) // 2
    else:
        union = None
        if faces:
            union = (
                min(f[0] for f in faces) * width,
                min(f[1] for f in faces) * height,
                max(f[2] for f in faces) * width,
                max(f[3] for f in faces) * height,
            )
        left = _place(
            focal[0] * width - side / 2, side, width, union[0] if union else None, union[2] if union else None
        )
        top = _place(
            focal[1] * height - side / 2, side, height, union[1] if union else None, union[3] if union else None
        )
    return CropPlan(box=(left, top, left + side, top + side), out_size=(size, size), scale=size / side)
