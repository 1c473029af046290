"""Display rotation of video frames: read FFmpeg's display matrix the way each PyAV generation exposes it."""

from __future__ import annotations

import math
from typing import Any

import cv2
import numpy as np


def frame_rotation(frame: Any, stream: Any) -> int:
    """Display rotation, counter-clockwise degrees in {0, 90, 180, 270}.

    Read the way each PyAV generation exposes FFmpeg's display matrix: VideoFrame.rotation
    (recent), Stream.side_data["DISPLAYMATRIX"] (av 12), the frame's raw matrix, and last the
    legacy `rotate` tag (clockwise degrees) that old FFmpeg versions exported.
    """
    degrees: float | None = getattr(frame, "rotation", None)
    if degrees is None:
        side = getattr(stream, "side_data", None)
        degrees = side.get("DISPLAYMATRIX") if isinstance(side, dict) else None
    if degrees is None:
        degrees = frame_matrix_rotation(frame)
    if degrees is None:
        tag = stream.metadata.get("rotate")
        degrees = -float(tag) if tag else 0.0
    if math.isnan(float(degrees)):
        return 0
    return int(round(float(degrees) / 90.0)) % 4 * 90


def frame_matrix_rotation(frame: Any) -> float | None:
    for item in getattr(frame, "side_data", None) or ():
        if "DISPLAYMATRIX" in str(getattr(item, "type", "")).upper():
            return display_matrix_rotation(bytes(item))
    return None


def display_matrix_rotation(matrix: bytes) -> float:
    """Counter-clockwise degrees of an FFmpeg display matrix (9 little-endian int32, 16.16 fixed point).

    Same result as libavutil's av_display_rotation_get; NaN for a degenerate matrix.
    """
    m = np.frombuffer(matrix[:36], dtype="<i4").astype(np.float64)
    scale0, scale1 = math.hypot(m[0], m[3]), math.hypot(m[1], m[4])
    if scale0 == 0 or scale1 == 0:
        return math.nan
    return -math.degrees(math.atan2(m[1] / scale1, m[0] / scale0))


def _rotate(rgb: np.ndarray, rotation: int) -> np.ndarray:
    if rotation == 90:
        return cv2.rotate(rgb, cv2.ROTATE_90_COUNTERCLOCKWISE)
    if rotation == 180:
        return cv2.rotate(rgb, cv2.ROTATE_180)
    if rotation == 270:
        return cv2.rotate(rgb, cv2.ROTATE_90_CLOCKWISE)
    return rgb


def frame_to_rgb(frame: Any, rotation: int) -> np.ndarray:
    return _rotate(frame.to_ndarray(format="rgb24"), rotation)
