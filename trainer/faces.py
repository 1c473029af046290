"""Face detectors for the "too many people" filter and for focal crops.

Two kinds, both through OpenCV so nothing is downloaded:
* a cascade XML: OpenCV's bundled frontal-face cascade (`auto`), or one the user points at
  (for anime art, nagadomi's lbpcascade_animeface.xml finds drawn faces far better);
* an ONNX face detector run by OpenCV's `FaceDetectorYN` (YuNet, e.g.
  face_detection_yunet_2023mar.onnx).
"""

from __future__ import annotations

import functools
import os
from pathlib import Path
from typing import Protocol

import cv2
import numpy as np

from vidstyle.errors import ModelNotFoundError, UserInputError

from .images import resize_to_area

Box = tuple[int, int, int, int]  # x, y, width, height in pixels of the image given to detect()

AUTO = "auto"
NONE = "none"
# Faces are detected on a small copy of about 256x256 pixels (by area, so a wide picture is
# not shrunk more than a square one): a face under ~8% of that side is a background extra,
# not a second subject, and the cascade is 2-3x faster than at 320x320.
DETECT_AREA = 256 * 256
MIN_FACE = 20


class FaceDetector(Protocol):
    def detect(self, rgb: np.ndarray) -> list[Box]: ...


class CascadeDetector:
    def __init__(self, path: str) -> None:
        self.path = path
        message = f"OpenCV cannot load the face cascade {path}; point --face-detector at a cascade XML file."
        try:
            self.cascade = cv2.CascadeClassifier(path)
        except (cv2.error, SystemError) as exc:  # OpenCV wraps its parse error in SystemError
            raise UserInputError(message) from exc
        if self.cascade.empty():
            raise UserInputError(message)

    def detect(self, rgb: np.ndarray) -> list[Box]:
        grey = cv2.equalizeHist(cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY))
        found = self.cascade.detectMultiScale(grey, scaleFactor=1.2, minNeighbors=5, minSize=(MIN_FACE, MIN_FACE))
        return [tuple(int(v) for v in box) for box in found]  # type: ignore[misc]


class YuNetDetector:
    def __init__(self, path: str, score_threshold: float = 0.7) -> None:
        if not hasattr(cv2, "FaceDetectorYN"):
            raise UserInputError("This OpenCV has no FaceDetectorYN; upgrade opencv-python-headless to 4.8 or later.")
        try:
            self.detector = cv2.FaceDetectorYN.create(path, "", (256, 256), score_threshold)
        except (cv2.error, SystemError) as exc:
            raise UserInputError(
                f"OpenCV cannot load {path} as a YuNet face detector; point --face-detector at "
                "face_detection_yunet_*.onnx or a cascade XML."
            ) from exc

    def detect(self, rgb: np.ndarray) -> list[Box]:
        height, width = rgb.shape[:2]
        self.detector.setInputSize((width, height))
        try:
            _, faces = self.detector.detect(cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))
        except cv2.error:
            return []
        if faces is None:
            return []
        return [(int(f[0]), int(f[1]), int(f[2]), int(f[3])) for f in faces]


def bundled_cascade() -> str | None:
    data = getattr(cv2, "data", None)
    if data is None:
        return None
    path = os.path.join(data.haarcascades, "haarcascade_frontalface_default.xml")
    return path if os.path.isfile(path) else None


def resolve_spec(spec: str) -> str | None:
    """`auto` -> the bundled cascade path (or None when this OpenCV has none), `none` -> None."""
    lowered = spec.strip().lower()
    if lowered in (NONE, "off", ""):
        return None
    if lowered == AUTO:
        return bundled_cascade()
    path = Path(spec).expanduser()
    if not path.is_file():
        raise ModelNotFoundError(
            f"Face detector {spec} does not exist; pass a cascade .xml, a YuNet .onnx, 'auto' or 'none'."
        )
    if path.suffix.lower() not in (".xml", ".onnx"):
        raise UserInputError(f"Face detector {spec} is neither a cascade .xml nor a YuNet .onnx file.")
    return str(path.resolve())


@functools.lru_cache(maxsize=4)
def load_detector(resolved_path: str) -> FaceDetector:
    """One detector per process and path (workers reuse it across files)."""
    if resolved_path.lower().endswith(".onnx"):
        return YuNetDetector(resolved_path)
    return CascadeDetector(resolved_path)


def detect_faces(detector: FaceDetector, rgb: np.ndarray) -> list[tuple[float, float, float, float]]:
    """Faces as (x0, y0, x1, y1) fractions of the image, largest first."""
    small = resize_to_area(rgb, DETECT_AREA)
    sh, sw = small.shape[:2]
    boxes = sorted(detector.detect(np.ascontiguousarray(small)), key=lambda b: -b[2] * b[3])
    return [
        (max(0.0, x / sw), max(0.0, y / sh), min(1.0, (x + w) / sw), min(1.0, (y + h) / sh)) for x, y, w, h in boxes
    ]
