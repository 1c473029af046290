"""Small images for the trainer tests, made on the fly (no downloads, no fixtures on disk)."""

from __future__ import annotations

import hashlib
import os
import struct
import zlib
from pathlib import Path
from typing import Dict, Optional, Tuple

import cv2
import numpy as np
from PIL import Image, ImageDraw


def scene(seed: int, size: Tuple[int, int] = (256, 256)) -> np.ndarray:
    """A colourful, sharp picture (circles and black lines on white); each seed differs."""
    width, height = size
    rng = np.random.default_rng(seed)
    image = np.full((height, width, 3), 255, np.uint8)
    for _ in range(15):
        colour = tuple(int(c) for c in rng.integers(0, 255, 3))
        centre = (int(rng.integers(0, width)), int(rng.integers(0, height)))
        cv2.circle(image, centre, int(rng.integers(min(size) // 32 + 2, min(size) // 5 + 4)), colour, -1)
        start = (int(rng.integers(0, width)), int(rng.integers(0, height)))
        end = (int(rng.integers(0, width)), int(rng.integers(0, height)))
        cv2.line(image, start, end, (0, 0, 0), max(1, min(size) // 128))
    return image


def save(path: Path, rgb: np.ndarray, **kwargs: object) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(rgb).save(path, **kwargs)
    return path


def greyscale(rgb: np.ndarray) -> np.ndarray:
    grey = cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY)
    return np.repeat(grey[..., None], 3, axis=2)


def small_edit(rgb: np.ndarray, scale: float = 0.75) -> np.ndarray:
    """The same picture re-framed a little (4% crop), resized smaller, with a caption drawn on."""
    height, width = rgb.shape[:2]
    margin_x, margin_y = int(width * 0.02), int(height * 0.02)
    cropped = rgb[margin_y : height - margin_y, margin_x : width - margin_x]
    smaller = cv2.resize(cropped, (int(width * scale), int(height * scale)), interpolation=cv2.INTER_AREA)
    image = Image.fromarray(smaller)
    ImageDraw.Draw(image).text((4, 4), "edit", fill=(255, 0, 0))
    return np.asarray(image)


def transparent_png(path: Path, size: Tuple[int, int] = (256, 256)) -> Path:
    """Opaque coloured shapes in the middle, fully transparent corners (a model screenshot)."""
    width, height = size
    rgba = np.zeros((height, width, 4), np.uint8)
    rgba[..., :3] = (0, 255, 0)  # hidden colour under alpha 0: must not show after flattening
    core = scene(7, (width // 2, height // 2))
    rgba[height // 4 : height // 4 + height // 2, width // 4 : width // 4 + width // 2, :3] = core
    rgba[height // 4 : height // 4 + height // 2, width // 4 : width // 4 + width // 2, 3] = 255
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(rgba, "RGBA").save(path)
    return path


def exif_rotated_jpeg(path: Path, upright: np.ndarray, orientation: int = 6) -> Path:
    """Pixels stored sideways plus an EXIF Orientation tag that turns them upright.

    Orientation 6 means "rotate 90 degrees clockwise to display", so the stored pixels are the
    upright picture turned 90 degrees counter-clockwise.
    """
    assert orientation == 6
    stored = np.ascontiguousarray(np.rot90(upright, 1))
    exif = Image.Exif()
    exif[0x0112] = orientation
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(stored).save(path, "JPEG", quality=95, exif=exif.tobytes())
    return path


def truncated_jpeg(path: Path, rgb: Optional[np.ndarray] = None) -> Path:
    from io import BytesIO

    buffer = BytesIO()
    Image.fromarray(scene(99) if rgb is None else rgb).save(buffer, "JPEG", quality=90)
    data = buffer.getvalue()
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data[: len(data) // 3])
    return path


def _png_chunk(kind: bytes, body: bytes) -> bytes:
    return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body) & 0xFFFFFFFF)


def bomb_png(path: Path, width: int = 50000, height: int = 50000) -> Path:
    """A tiny file whose header claims a decompression-bomb sized picture."""
    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    body = zlib.compress(b"\x00" * 64)
    data = b"\x89PNG\r\n\x1a\n" + _png_chunk(b"IHDR", header) + _png_chunk(b"IDAT", body) + _png_chunk(b"IEND", b"")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return path


def grace_hopper() -> Optional[np.ndarray]:
    """A real frontal face photo that ships with matplotlib (None if this install lacks it)."""
    try:
        import matplotlib

        path = Path(matplotlib.get_data_path()) / "sample_data" / "grace_hopper.jpg"
    except ImportError:  # pragma: no cover
        return None
    if not path.is_file():
        return None
    return np.asarray(Image.open(path).convert("RGB"))


def tree_hashes(folder: Path) -> Dict[str, Tuple[str, int]]:
    """{relative path: (sha256, mtime_ns)} of every file under `folder`."""
    result = {}
    for dirpath, _, names in os.walk(folder):
        for name in names:
            path = Path(dirpath, name)
            result[path.relative_to(folder).as_posix()] = (hashlib.sha256(path.read_bytes()).hexdigest(), path.stat().st_mtime_ns)
    return result
