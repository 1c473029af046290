"""A SIMULATION of img2img for benchmarks and tests of temporal coherence (no model, no GPU).

The tiny random-weight model draws noise, so flicker and coherence cannot be judged on it.
This backend behaves like ControlNet img2img in the ways the coherence modes depend on:

* the output keeps the init image in proportion to (1 - denoise);
* the rest is "painted": a colour wash and fine detail drawn from (seed, frame index), so two
  independent frames differ the way two real samples do (flicker), and a new seed repaints;
* ink lines follow the control map in proportion to the ControlNet weight, as a canny
  ControlNet makes the model redraw the source's outlines even at denoise 1 - each sample a
  pixel or so off and with some lines missing, so independent frames' lines "boil".

Deterministic: the same request always gives the same pixels. Its figures say how the
*engine* handles coherence; they are not a claim about any real model's output.
"""

from __future__ import annotations

import threading

import cv2
import numpy as np
from PIL import Image

from ..spec import JobSpec
from .base import Img2ImgRequest, Img2ImgResult

# The "style" every sample starts from before the seed varies it: a pale anime-like palette.
BASE_COLOUR = np.array([214.0, 188.0, 196.0], np.float32)
WASH_AMPLITUDE = 45.0  # low-frequency colour/light variation between samples
DETAIL_AMPLITUDE = 18.0  # fine detail (hair strands, cloth folds) that differs per sample
INK_DARKNESS = 0.8
LINE_JITTER = 1.0  # px: how far a sample redraws a control line from where the map has it
LINE_DROPOUT_QUANTILE = -1.0  # standard-normal threshold: about 16 % of the lines are left out


def _sample_rng(seed: int, frame_index: int) -> np.random.Generator:
    return np.random.default_rng([seed & 0xFFFFFFFF, frame_index & 0xFFFFFFFF])


def _smooth_noise(rng: np.random.Generator, cells: int, height: int, width: int, channels: int) -> np.ndarray:
    """Random values on a coarse grid, interpolated to the frame: structure `cells` across."""
    coarse = rng.normal(0.0, 1.0, (cells, cells, channels)).astype(np.float32)
    return cv2.resize(coarse, (width, height), interpolation=cv2.INTER_CUBIC).reshape(height, width, channels)


def painted_layer(rng: np.random.Generator, height: int, width: int) -> np.ndarray:
    """What a sample paints independently of the init image: float32 HxWx3 in 0..255."""
    wash = _smooth_noise(rng, 4, height, width, 3)
    detail = cv2.resize(
        rng.normal(0.0, 1.0, (max(1, height // 4), max(1, width // 4), 3)).astype(np.float32),
        (width, height),
        interpolation=cv2.INTER_LINEAR,
    )
    return BASE_COLOUR + WASH_AMPLITUDE * wash + DETAIL_AMPLITUDE * detail


def ink(rng: np.random.Generator, control: np.ndarray, weight: float) -> np.ndarray:
    """Share of darkening per pixel (HxW float32) from a white-on-black control map.

    Like a real sample, the lines are redrawn a little off (a smooth displacement of up to
    ~LINE_JITTER px) and some are left out, differently for every seed and frame: "boiling" lines.
    """
    lines = (control if control.ndim == 2 else control.max(axis=2)).astype(np.float32) / 255.0
    height, width = lines.shape
    shift = LINE_JITTER * _smooth_noise(rng, 6, height, width, 2)
    grid_x = shift[..., 0] + np.arange(width, dtype=np.float32)[None, :]
    grid_y = shift[..., 1] + np.arange(height, dtype=np.float32)[:, None]
    lines = cv2.remap(lines, grid_x, grid_y, cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
    kept = _smooth_noise(rng, 8, height, width, 1)[..., 0] > LINE_DROPOUT_QUANTILE
    return INK_DARKNESS * min(max(weight, 0.0), 1.0) * lines * kept


def simulate_img2img(
    init: np.ndarray, control: np.ndarray, seed: int, frame_index: int, denoise: float, control_weight: float = 1.0
) -> np.ndarray:
    """The simulated output (RGB uint8) for one request's images and settings."""
    height, width = init.shape[:2]
    rng = _sample_rng(seed, frame_index)
    painted = painted_layer(rng, height, width)
    painted *= (1.0 - ink(rng, control, control_weight))[..., None]
    out = (1.0 - denoise) * init.astype(np.float32) + denoise * painted
    return np.clip(out + 0.5, 0, 255).astype(np.uint8)


class SimulatedImg2ImgBackend:
    """Backend protocol implementation over `simulate_img2img`, for benchmarks and tests only."""

    name = "simulated"

    def __init__(self, spec: JobSpec | None = None, concurrency: int = 1) -> None:
        self.spec = spec
        self.concurrency = concurrency
        self.calls = 0  # img2img calls made, so benchmarks can report calls per frame
        self._lock = threading.Lock()

    def preflight(self) -> None:
        return None

    def img2img(self, request: Img2ImgRequest) -> Img2ImgResult:
        with self._lock:  # the render loop calls from several threads
            self.calls += 1
        weight = request.controlnet.weight if request.controlnet.enabled else 0.0
        image = simulate_img2img(
            np.asarray(request.init_image.convert("RGB")),
            np.asarray(request.control_image.convert("RGB")),
            request.seed,
            request.frame_index,
            request.denoise,
            weight,
        )
        return Img2ImgResult(image=Image.fromarray(image), info={"backend": self.name})

    def interrupt(self) -> None:
        return None

    def close(self) -> None:
        return None
