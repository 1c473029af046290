"""vidstyle.quality: edge fidelity, warp error and the robust `suspect` flag."""

from __future__ import annotations

import cv2
import media  # tests/media.py
import motion_media as mm  # tests/motion_media.py
import numpy as np
import pytest

from vidstyle import quality, temporal
from vidstyle.backends.simulated import simulate_img2img
from vidstyle.control import canny_map
from vidstyle.quality import FrameScores
from vidstyle.temporal import TemporalInputError

SEED = 42


@pytest.fixture(scope="module")
def scene() -> tuple:
    """A test-clip frame, its canny map, and a faithful stylised output of it (simulated img2img)."""
    source = media.draw_frame(5, 5 / 30.0, (192, 160))
    control = canny_map(source, 100, 200)
    return source, control, simulate_img2img(source, control, SEED, 5, 0.5)


def test_edge_fidelity_is_high_for_a_faithful_frame(scene: tuple) -> None:
    _, control, faithful = scene
    assert quality.edge_fidelity(faithful, control) > 0.9


def test_edge_fidelity_tolerates_a_pixel_or_two(scene: tuple) -> None:
    _, control, faithful = scene
    assert quality.edge_fidelity(mm.shifted(faithful, 1, 1), control) > 0.85
    assert quality.edge_fidelity(mm.shifted(faithful, 2, 0), control) > 0.85


def test_edge_fidelity_is_lower_for_a_shifted_or_blurred_frame(scene: tuple) -> None:
    _, control, faithful = scene
    good = quality.edge_fidelity(faithful, control)
    assert quality.edge_fidelity(mm.shifted(faithful, 6, 0), control) < good - 0.3
    assert quality.edge_fidelity(cv2.GaussianBlur(faithful, (0, 0), 3), control) < good - 0.3


def test_edge_fidelity_of_flat_frames_and_missing_edges() -> None:
    flat = np.full((64, 64, 3), 90, np.uint8)
    no_edges = np.zeros((64, 64, 3), np.uint8)
    assert quality.edge_fidelity(flat, no_edges) == 1.0
    source = mm.texture((64, 64), 3, sigma=1.0)
    assert quality.edge_fidelity(flat, canny_map(source, 100, 200)) == 0.0


def test_edge_fidelity_rejects_mismatched_sizes(scene: tuple) -> None:
    _, control, faithful = scene
    with pytest.raises(TemporalInputError, match="canny map is"):
        quality.edge_fidelity(faithful[:100], control)


def render_sequence(frames: list[np.ndarray], coherent: bool) -> list[np.ndarray]:
    """Outputs that follow the source's motion (coherent) or are sampled independently per frame."""
    outputs = []
    for index, frame in enumerate(frames):
        control = canny_map(frame, 100, 200)
        outputs.append(simulate_img2img(frame, control, SEED, 0 if coherent else index, 0.5))
    return outputs


def sequence_warp_errors(frames: list[np.ndarray], outputs: list[np.ndarray]) -> list[float]:
    errors = []
    for t in range(1, len(frames)):
        error = quality.warp_error(outputs[t], outputs[t - 1], temporal.correspond(frames[t], frames[t - 1]))
        assert error is not None
        errors.append(error)
    return errors


def test_warp_error_is_lower_for_a_coherent_sequence_than_for_independent_samples() -> None:
    frames = mm.pan_frames(6, 128, (3, 1))
    # A coherent look: the same painted layer carried with the camera; independent: a new sample per frame.
    coherent = [simulate_img2img(f, canny_map(f, 100, 200), SEED, 0, 0.0) for f in frames]
    independent = render_sequence(frames, coherent=False)
    coherent_error = float(np.mean(sequence_warp_errors(frames, coherent)))
    independent_error = float(np.mean(sequence_warp_errors(frames, independent)))
    assert 0.0 <= coherent_error < 0.3 * independent_error <= 1.0


def test_warp_error_ignores_occluded_pixels() -> None:
    (f0, f1), _ = mm.square_frames(2, 128)
    corr = temporal.correspond(f1, f0)
    base = quality.warp_error(f1, f0, corr)
    scribbled = f1.copy()
    scribbled[corr.occluded] = 255 - scribbled[corr.occluded]
    assert quality.warp_error(scribbled, f0, corr) == pytest.approx(base)
    scribbled[~corr.occluded] = 255 - scribbled[~corr.occluded]
    assert quality.warp_error(scribbled, f0, corr) > base + 0.1
    nothing = temporal.Correspondence(flow=corr.flow, occluded=np.ones_like(corr.occluded))
    assert quality.warp_error(f1, f0, nothing) is None


def test_suspect_finds_deliberately_broken_frames() -> None:
    frames = [media.draw_frame(i, i / 30.0, (128, 96)) for i in range(40)]
    broken = {9, 10, 27}  # two in a row, and one alone
    outputs = []
    for index, frame in enumerate(frames):
        control = canny_map(frame, 100, 200)
        wrong = index in broken
        outputs.append(simulate_img2img(frame, control, SEED + 1 if wrong else SEED, index, 1.0 if wrong else 0.5))
    scores = [
        FrameScores(quality.edge_fidelity(out, canny_map(frame, 100, 200)), None)
        for frame, out in zip(frames, outputs, strict=False)
    ]
    for t, error in enumerate(sequence_warp_errors(frames, outputs), start=1):
        scores[t].warp_error = error
    flagged = {i for i, flag in enumerate(quality.find_suspects(scores)) if flag}
    assert flagged == broken


def links(values: list[float | None]) -> list[FrameScores]:
    return [FrameScores(edge_fidelity=0.9, warp_error=v) for v in values]


def test_suspect_blames_the_frame_between_two_bad_links_and_the_later_of_a_lone_one() -> None:
    normal = [None] + [0.05 + 0.002 * (i % 5) for i in range(1, 30)]
    independent = list(normal)
    independent[12] = independent[13] = 0.2  # frame 12 differs from both its neighbours
    assert [i for i, f in enumerate(quality.find_suspects(links(independent))) if f] == [12]
    chain = list(normal)
    chain[20] = 0.2  # frame 20 broke away; 21 was built on it, so its own link is fine
    assert [i for i, f in enumerate(quality.find_suspects(links(chain))) if f] == [20]


def test_suspect_flags_poor_edges_too() -> None:
    scores = [FrameScores(0.9 + 0.005 * (i % 4), 0.05) for i in range(20)]
    scores[7].edge_fidelity = 0.6
    assert [i for i, f in enumerate(quality.find_suspects(scores)) if f] == [7]


def test_no_suspects_without_a_distribution_to_judge_against() -> None:
    few = [FrameScores(0.9, 0.05), FrameScores(0.2, 0.9), FrameScores(0.9, 0.05)]
    assert not any(quality.find_suspects(few))
    same = [FrameScores(0.9, 0.05) for _ in range(30)]
    same[5] = FrameScores(0.899, 0.0505)  # a rounding-level difference is not an outlier
    assert not any(quality.find_suspects(same))
