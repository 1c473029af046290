"""The simulated img2img backend used by the temporal benchmark: it must behave like img2img
where coherence depends on it, or the benchmark's figures mean nothing."""

from __future__ import annotations

import media  # tests/media.py
import numpy as np
from PIL import Image

from vidstyle import quality
from vidstyle.backends.base import Backend, Img2ImgRequest
from vidstyle.backends.simulated import SimulatedImg2ImgBackend, simulate_img2img
from vidstyle.control import canny_map
from vidstyle.spec import ControlNetSpec

SOURCE = media.draw_frame(3, 0.1, (128, 96))
CONTROL = canny_map(SOURCE, 100, 200)


def request(**changes: object) -> Img2ImgRequest:
    fields = {
        "frame_index": 3,
        "init_image": Image.fromarray(SOURCE),
        "control_image": Image.fromarray(CONTROL),
        "prompt": "p",
        "negative_prompt": "",
        "checkpoint": "sim",
        "loras": [],
        "controlnet": ControlNetSpec(),
        "width": 128,
        "height": 96,
        "denoise": 0.5,
        "steps": 4,
        "cfg_scale": 7.0,
        "sampler": "Euler a",
        "scheduler": "Automatic",
        "seed": 7,
    }
    fields.update(changes)
    return Img2ImgRequest(**fields)  # type: ignore[arg-type]


def render(**changes: object) -> np.ndarray:
    return np.asarray(SimulatedImg2ImgBackend().img2img(request(**changes)).image)


def correlation(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.corrcoef(a.astype(float).ravel(), b.astype(float).ravel())[0, 1])


def test_implements_the_backend_protocol_and_counts_calls() -> None:
    backend = SimulatedImg2ImgBackend()
    assert isinstance(backend, Backend)
    backend.preflight()
    backend.img2img(request())
    backend.img2img(request(frame_index=4))
    assert backend.calls == 2


def test_deterministic() -> None:
    assert np.array_equal(render(), render())


def test_keeps_the_init_in_proportion_to_one_minus_denoise() -> None:
    assert np.array_equal(render(denoise=0.0), SOURCE)
    kept = [correlation(render(denoise=d), SOURCE) for d in (0.2, 0.5, 0.8, 1.0)]
    assert kept == sorted(kept, reverse=True) and kept[0] > 0.9 and kept[-1] < 0.5


def test_detail_depends_on_seed_and_frame_so_independent_frames_flicker() -> None:
    base = render()
    for other in (render(seed=8), render(frame_index=4)):
        assert np.abs(other.astype(float) - base).mean() > 5


def test_controlnet_lines_survive_full_denoise() -> None:
    guided = render(denoise=1.0)
    unguided = render(denoise=1.0, controlnet=ControlNetSpec(enabled=False))
    assert quality.edge_fidelity(guided, CONTROL) > 0.8
    assert quality.edge_fidelity(unguided, CONTROL) < 0.3


def test_function_and_backend_agree() -> None:
    assert np.array_equal(render(), simulate_img2img(SOURCE, CONTROL, 7, 3, 0.5, 1.0))
