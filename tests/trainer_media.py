"""Small images for the trainer tests, made on the fly (no downloads, no fixtures on disk)."""

from __future__ import annotations

import hashlib
import os
import struct
import zlib
from pathlib import Path

import cv2
import numpy as np
from PIL import Image, ImageDraw


def scene(seed: int, size: tuple[int, int] = (256, 256)) -> np.ndarray:
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


def transparent_png(path: Path, size: tuple[int, int] = (256, 256)) -> Path:
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


def truncated_jpeg(path: Path, rgb: np.ndarray | None = None) -> Path:
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


def grace_hopper() -> np.ndarray | None:
    """A real frontal face photo that ships with matplotlib (None if this install lacks it)."""
    try:
        import matplotlib

        path = Path(matplotlib.get_data_path()) / "sample_data" / "grace_hopper.jpg"
    except ImportError:  # pragma: no cover
        return None
    if not path.is_file():
        return None
    return np.asarray(Image.open(path).convert("RGB"))


def tree_hashes(folder: Path) -> dict[str, tuple[str, int]]:
    """{relative path: (sha256, mtime_ns)} of every file under `folder`."""
    result = {}
    for dirpath, _, names in os.walk(folder):
        for name in names:
            path = Path(dirpath, name)
            result[path.relative_to(folder).as_posix()] = (
                hashlib.sha256(path.read_bytes()).hexdigest(),
                path.stat().st_mtime_ns,
            )
    return result


# --------------------------------------------------------------------------- sharp and blurred art
# The blur filter's test set: clean pictures of the kinds people train on, and Gaussian-blurred
# copies. Shapes are drawn at twice the size with anti-aliasing and reduced with INTER_AREA, as
# an artist's export would be.


def cel_shaded(seed: int, size: int = 512) -> np.ndarray:
    """Flat fills, a flat shadow tone per shape and dark outlines (anime cel shading)."""
    rng = np.random.default_rng(seed)
    big = size * 2
    image = np.full((big, big, 3), tuple(int(c) for c in rng.integers(150, 256, 3)), np.uint8)
    for _ in range(int(rng.integers(2, 7))):
        colour = tuple(int(c) for c in rng.integers(0, 256, 3))
        centre = (int(rng.integers(big // 5, 4 * big // 5)), int(rng.integers(big // 5, 4 * big // 5)))
        axes = (int(rng.integers(big // 12, big // 3)), int(rng.integers(big // 12, big // 3)))
        cv2.ellipse(image, centre, axes, float(rng.integers(0, 180)), 0, 360, colour, -1, cv2.LINE_AA)
        shadow = tuple(int(v * 0.7) for v in colour)
        cv2.ellipse(
            image,
            (centre[0] + axes[0] // 3, centre[1] + axes[1] // 3),
            (axes[0] // 2, axes[1] // 2),
            0,
            0,
            360,
            shadow,
            -1,
            cv2.LINE_AA,
        )
        cv2.ellipse(image, centre, axes, 0, 0, 360, (20, 20, 20), int(rng.integers(2, 7)), cv2.LINE_AA)
    return cv2.resize(image, (size, size), interpolation=cv2.INTER_AREA)


def pastel_line_art(seed: int, size: int = 512) -> np.ndarray:
    """One or two big pale shapes with thin coloured outlines on a pale ground: mostly flat,
    low contrast, the kind of clean art a Laplacian-variance filter calls blurry."""
    rng = np.random.default_rng(seed)
    big = size * 2
    image = np.full((big, big, 3), tuple(int(c) for c in rng.integers(200, 256, 3)), np.uint8)
    for _ in range(int(rng.integers(1, 3))):
        fill = tuple(int(c) for c in rng.integers(170, 240, 3))
        line = tuple(max(0, v - int(rng.integers(30, 70))) for v in fill)
        centre = (int(rng.integers(big // 3, 2 * big // 3)), int(rng.integers(big // 3, 2 * big // 3)))
        axes = (int(rng.integers(big // 6, big // 3)), int(rng.integers(big // 6, big // 3)))
        cv2.ellipse(image, centre, axes, float(rng.integers(0, 180)), 0, 360, fill, -1, cv2.LINE_AA)
        cv2.ellipse(image, centre, axes, 0, 0, 360, line, 2, cv2.LINE_AA)
    return cv2.resize(image, (size, size), interpolation=cv2.INTER_AREA)


def painted(seed: int, size: int = 512) -> np.ndarray:
    """A soft painting: gradient sky, soft glows, forms with crisp silhouettes and gradient
    shading but no outlines, and brush strokes."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:size, 0:size] / size
    angle = rng.uniform(0, 2 * np.pi)
    t = x * np.cos(angle) + y * np.sin(angle)
    t = (t - t.min()) / (t.max() - t.min() + 1e-9)
    image = rng.uniform(0, 255, 3) * t[..., None] + rng.uniform(0, 255, 3) * (1 - t[..., None])
    for _ in range(int(rng.integers(2, 4))):
        cx, cy, r = rng.uniform(0.1, 0.9), rng.uniform(0.1, 0.9), rng.uniform(0.1, 0.3)
        glow = np.exp(-((x - cx) ** 2 + (y - cy) ** 2) / (2 * r * r)) * rng.uniform(0.2, 0.5)
        image = image * (1 - glow[..., None]) + rng.uniform(0, 255, 3) * glow[..., None]
    for _ in range(int(rng.integers(2, 5))):
        cx, cy, r = rng.uniform(0.25, 0.75), rng.uniform(0.25, 0.75), rng.uniform(0.08, 0.22)
        inside = np.clip((r - np.hypot((x - cx) / rng.uniform(0.6, 1.4), y - cy)) * size / 1.2, 0, 1)
        shade = np.clip(1 - np.hypot(x - cx + r / 2, y - cy + r / 2) / (2 * r), 0.35, 1)
        image = image * (1 - inside[..., None]) + rng.uniform(80, 255, 3) * shade[..., None] * inside[..., None]
    strokes = np.zeros((size, size), np.float32)
    for _ in range(int(rng.integers(20, 60))):
        start = rng.integers(0, size, 2)
        end = start + rng.integers(-60, 60, 2)
        cv2.line(
            strokes,
            tuple(int(v) for v in start),
            tuple(int(v) for v in end),
            float(rng.uniform(-25, 25)),
            int(rng.integers(3, 9)),
            cv2.LINE_AA,
        )
    image = image + cv2.GaussianBlur(strokes, (0, 0), 0.7)[..., None]
    return np.clip(image, 0, 255).astype(np.uint8)


def photographic(seed: int, size: int = 512) -> np.ndarray:
    """1/f noise (the spectrum of natural photos), a few solid objects and sensor noise."""
    rng = np.random.default_rng(seed)
    fy, fx = np.fft.fftfreq(size)[:, None], np.fft.fftfreq(size)[None, :]
    amplitude = 1 / np.maximum(np.hypot(fy, fx), 1 / size)
    image = np.zeros((size, size, 3))
    for channel in range(3):
        noise = np.real(np.fft.ifft2(amplitude * np.exp(2j * np.pi * rng.random((size, size)))))
        image[..., channel] = 128 + 40 * (noise - noise.mean()) / noise.std()
    for _ in range(4):
        corner = (int(rng.integers(50, size - 52)), int(rng.integers(50, size - 52)))
        far = (corner[0] + int(rng.integers(30, 150)), corner[1] + int(rng.integers(30, 150)))
        cv2.rectangle(image, corner, far, tuple(float(v) for v in rng.uniform(0, 255, 3)), -1)
    image += rng.normal(0, 3, image.shape)
    return np.clip(image, 0, 255).astype(np.uint8)


ART_KINDS = {"cel": cel_shaded, "pastel": pastel_line_art, "painted": painted, "photo": photographic}


def jpeg_round_trip(rgb: np.ndarray, quality: int = 75) -> np.ndarray:
    from io import BytesIO

    buffer = BytesIO()
    Image.fromarray(rgb).save(buffer, "JPEG", quality=quality)
    return np.asarray(Image.open(BytesIO(buffer.getvalue())).convert("RGB"))


def gaussian_blurred(rgb: np.ndarray, sigma: float) -> np.ndarray:
    return cv2.GaussianBlur(rgb, (0, 0), sigma)
