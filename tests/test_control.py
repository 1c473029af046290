"""vidstyle.control: canny maps as ControlNet canny models expect them."""

from __future__ import annotations

import cv2
import media  # tests/media.py
import numpy as np
import pytest

from vidstyle.control import canny_map, control_for_spec
from vidstyle.errors import SpecError
from vidstyle.spec import ControlNetSpec


def square(size: int = 64) -> np.ndarray:
    image = np.full((size, size, 3), 30, np.uint8)
    image[16:48, 16:48] = (220, 180, 40)
    return image


def test_canny_map_is_white_edges_on_black_rgb() -> None:
    edges = canny_map(square(), 100, 200)
    assert edges.shape == (64, 64, 3) and edges.dtype == np.uint8
    assert set(np.unique(edges)) == {0, 255}
    assert np.array_equal(edges[..., 0], edges[..., 1]) and np.array_equal(edges[..., 1], edges[..., 2])
    assert edges[16:48, 15:18].max() == 255  # the square's left edge
    assert edges[24:40, 24:40].max() == 0  # flat inside
    assert edges[:8, :8].max() == 0  # flat outside


def test_canny_matches_the_webui_preprocessor() -> None:
    # sd-webui-controlnet and diffusers run cv2.Canny on the RGB image itself.
    image = media.draw_frame(7, 0.25, (96, 64))
    expected = cv2.Canny(image, 80, 160)
    assert np.array_equal(canny_map(image, 80, 160)[..., 0], expected)


def test_thresholds_and_blur_reduce_edges() -> None:
    rng = np.random.default_rng(0)
    noisy = np.clip(square().astype(int) + rng.normal(0, 25, (64, 64, 3)), 0, 255).astype(np.uint8)
    loose = np.count_nonzero(canny_map(noisy, 50, 100))
    strict = np.count_nonzero(canny_map(noisy, 150, 250))
    blurred = np.count_nonzero(canny_map(noisy, 50, 100, blur=5))
    assert strict < loose and blurred < loose
    assert canny_map(noisy, 50, 100, blur=5)[16:48, 14:19].max() == 255  # the real edge survives


def test_gray_and_rgba_inputs() -> None:
    gray = cv2.cvtColor(square(), cv2.COLOR_RGB2GRAY)
    rgba = np.dstack([square(), np.full((64, 64), 255, np.uint8)])
    assert canny_map(gray, 100, 200).shape == (64, 64, 3)
    assert np.array_equal(canny_map(rgba, 100, 200), canny_map(square(), 100, 200))


@pytest.mark.parametrize("low, high, blur", [(200, 100, 0), (-1, 100, 0), (100, 300, 0), (100, 200, 4)])
def test_bad_parameters_are_spec_errors(low: int, high: int, blur: int) -> None:
    with pytest.raises(SpecError):
        canny_map(square(), low, high, blur)


def test_control_for_spec_uses_the_spec() -> None:
    image = media.draw_frame(3, 0.1, (96, 64))
    spec = ControlNetSpec(low_threshold=40, high_threshold=90, blur=3)
    assert np.array_equal(control_for_spec(image, spec), canny_map(image, 40, 90, 3))
    strict = ControlNetSpec(low_threshold=200, high_threshold=250)
    assert np.count_nonzero(control_for_spec(image, strict)) < np.count_nonzero(control_for_spec(image, spec))
