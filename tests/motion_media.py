"""Frames with known motion for the temporal and quality tests (and benchmarks/bench_temporal.py).

Everything is drawn from one fixed random texture, so the true flow between frames is known
exactly: a pan moves the whole frame by whole pixels, a zoom scales about the centre, and a
textured square slides over a still textured background (its trailing edge uncovers
background that the previous frame did not show; its leading edge covers some).
"""

from __future__ import annotations

import cv2
import numpy as np


def texture(size: tuple[int, int], seed: int = 0, sigma: float = 2.0) -> np.ndarray:
    """A colourful, smooth random texture (RGB uint8, height x width) with structure at every position."""
    height, width = size
    rng = np.random.default_rng(seed)
    noise = rng.integers(0, 256, (height, width, 3), dtype=np.uint8)
    smooth = cv2.GaussianBlur(noise, (0, 0), sigma)
    return cv2.normalize(smooth, None, 0, 255, cv2.NORM_MINMAX)


def pan_frames(count: int, size: int = 128, step: tuple[int, int] = (3, 1), seed: int = 0) -> list[np.ndarray]:
    """A camera panning over a big texture: frame t+1 shows frame t's content moved by -step.

    So the flow of frame t+1 against frame t is +step (dx, dy) everywhere except the borders.
    """
    dx, dy = step
    margin = max(abs(dx), abs(dy)) * count + 2
    world = texture((size + margin, size + margin), seed)
    ox, oy = (0 if dx >= 0 else margin - 1), (0 if dy >= 0 else margin - 1)
    return [world[oy + t * dy : oy + t * dy + size, ox + t * dx : ox + t * dx + size].copy() for t in range(count)]


def zoom_frames(count: int, size: int = 128, rate: float = 0.02, seed: int = 1) -> list[np.ndarray]:
    """Zoom in about the centre by `rate` per frame; `zoom_flow` gives the true flow."""
    world = texture((size * 2, size * 2), seed)
    centre = size - 0.5
    frames = []
    for t in range(count):
        z = (1.0 + rate) ** t
        matrix = np.array([[z, 0, (size / 2 - 0.5) - z * centre], [0, z, (size / 2 - 0.5) - z * centre]], np.float32)
        frames.append(cv2.warpAffine(world, matrix, (size, size), flags=cv2.INTER_LINEAR))
    return frames


def zoom_flow(size: int, rate: float) -> np.ndarray:
    """True flow of a zoom frame t+1 against frame t: p -> centre + (p - centre) / (1 + rate)."""
    ys, xs = np.mgrid[0:size, 0:size].astype(np.float32)
    c = size / 2 - 0.5
    flow = np.stack([(xs - c) / (1 + rate) + c - xs, (ys - c) / (1 + rate) + c - ys], axis=-1)
    return flow.astype(np.float32)


def square_frames(
    count: int, size: int = 128, side: int = 40, step: int = 6, start: int = 20, seed: int = 2
) -> tuple[list[np.ndarray], list[int]]:
    """A textured square moving right by `step` px per frame over a still textured background.

    Returns the frames and the square's left x in each (its top is at size//2 - side//2).
    """
    background = texture((size, size), seed)
    patch = texture((side, side), seed + 100, sigma=1.5)
    patch = cv2.addWeighted(
        patch, 0.6, np.full_like(patch, (255, 40, 40)), 0.4, 0
    )  # reddish: differs from the background
    top = size // 2 - side // 2
    frames, lefts = [], []
    for t in range(count):
        left = start + t * step
        frame = background.copy()
        frame[top : top + side, left : left + side] = patch
        frames.append(frame)
        lefts.append(left)
    return frames, lefts


def cut_clip(before: int = 12, after: int = 12, size: int = 128) -> tuple[list[np.ndarray], int]:
    """A pan over one texture, then a hard cut to a pan over another: (frames, index of the first new frame)."""
    first = pan_frames(before, size, (2, 0), seed=3)
    second = [cv2.cvtColor(frame, cv2.COLOR_RGB2BGR) // 2 + 60 for frame in pan_frames(after, size, (0, 2), seed=4)]
    return first + second, before


def shifted(image: np.ndarray, dx: int, dy: int = 0) -> np.ndarray:
    """The image moved by (dx, dy) pixels, borders repeated."""
    matrix = np.float32([[1, 0, dx], [0, 1, dy]])
    return cv2.warpAffine(image, matrix, (image.shape[1], image.shape[0]), borderMode=cv2.BORDER_REPLICATE)


def colour_cycle_frames(count: int, size: int = 128, hue_step: int = 8, seed: int = 12) -> list[np.ndarray]:
    """A still scene under a colour-cycling light: every frame's hues move on by `hue_step`
    (OpenCV hue units, 0..179), so consecutive histograms differ a lot though it is one shot."""
    base = texture((size, size), seed)
    frames = []
    for t in range(count):
        hsv = np.zeros((size, size, 3), np.uint8)
        hsv[..., 0] = (base[..., 0] // 8 + hue_step * t) % 180
        hsv[..., 1] = 200
        hsv[..., 2] = base[..., 1] // 2 + 100
        frames.append(cv2.cvtColor(hsv, cv2.COLOR_HSV2RGB))
    return frames
