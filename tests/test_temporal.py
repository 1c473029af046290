"""vidstyle.temporal on frames with known motion (tests/motion_media.py): flow, warping,
occlusion, fills, colour matching, deflicker and scene cuts."""

from __future__ import annotations

import cv2
import media  # tests/media.py (pytest puts tests/ on sys.path)
import motion_media as mm  # tests/motion_media.py
import numpy as np
import pytest

from vidstyle import temporal
from vidstyle.errors import SpecError
from vidstyle.temporal import TemporalInputError


def interior(array: np.ndarray, margin: int = 8) -> np.ndarray:
    return array[margin:-margin, margin:-margin]


def end_point_error(flow: np.ndarray, truth: np.ndarray) -> float:
    return float(interior(np.sqrt(((flow - truth) ** 2).sum(axis=-1))).mean())


# --------------------------------------------------------------------------- flow and warping


def test_flow_on_a_known_pan_has_a_small_end_point_error() -> None:
    frames = mm.pan_frames(2, 128, step=(3, 1))
    flow = temporal.estimate_flow(frames[1], frames[0])
    assert end_point_error(flow, np.float32([3, 1])) < 0.25


def test_flow_on_a_known_zoom_has_a_small_end_point_error() -> None:
    frames = mm.zoom_frames(2, 128, rate=0.03)
    flow = temporal.estimate_flow(frames[1], frames[0])
    assert end_point_error(flow, mm.zoom_flow(128, 0.03)) < 0.3


def test_downscaled_flow_is_given_in_full_resolution_pixels() -> None:
    frames = mm.pan_frames(2, 256, step=(6, 2))
    flow = temporal.estimate_flow(frames[1], frames[0], scale=0.5)
    assert end_point_error(flow, np.float32([6, 2])) < 0.5  # unscaled vectors would be off by ~3 px


def test_warp_is_backward_warping() -> None:
    image = mm.texture((32, 48))
    flow = np.zeros((32, 48, 2), np.float32)
    flow[..., 0] = 2.0  # every pixel takes the colour 2 px to its right
    warped = temporal.warp(image, flow)
    assert np.array_equal(warped[:, :-2], image[:, 2:])


@pytest.mark.parametrize(
    "frames",
    [
        mm.pan_frames(2, 128, (3, 1)),
        mm.zoom_frames(2, 128, 0.03),
        [media.draw_frame(i, i / 30.0, (160, 128)) for i in (3, 6)],
    ],
    ids=["pan", "zoom", "test clip"],
)
def test_warp_of_frame_t_onto_t_plus_1_matches_it(frames: list) -> None:
    corr = temporal.correspond(frames[1], frames[0])
    visible = ~corr.occluded
    warped_error = np.abs(corr.warp(frames[0]).astype(float) - frames[1])[visible].mean()
    unwarped_error = np.abs(frames[0].astype(float) - frames[1])[visible].mean()
    assert corr.coverage > 0.85
    assert warped_error < 0.25 * unwarped_error


def test_chained_correspondence_equals_the_two_steps() -> None:
    frames = mm.pan_frames(3, 128, step=(3, 1))
    chained = temporal.correspond(frames[2], frames[1]).then(temporal.correspond(frames[1], frames[0]))
    assert end_point_error(chained.flow, np.float32([6, 2])) < 0.4
    assert chained.coverage > 0.85


# --------------------------------------------------------------------------- occlusion

SIDE, STEP = 40, 6


@pytest.fixture(scope="module")
def square() -> tuple:
    return mm.square_frames(2, 128, side=SIDE, step=STEP)


def test_occlusion_at_the_trailing_edge_of_a_moving_shape(square: tuple) -> None:
    (f0, f1), (left0, left1) = square
    occluded = temporal.correspond(f1, f0).occluded
    rows = slice(64 - SIDE // 2 + 4, 64 + SIDE // 2 - 4)
    assert occluded[rows, left0 : left0 + STEP].mean() > 0.8  # background uncovered in frame 1
    assert occluded[rows, left1 + 8 : left1 + SIDE - 8].mean() < 0.1  # the square itself moved, visibly
    assert occluded[4:30, 4:-4].mean() < 0.02  # still background far from the square


def test_occlusion_at_the_leading_edge_seen_from_the_other_side(square: tuple) -> None:
    (f0, f1), (left0, _) = square
    occluded = temporal.correspond(f0, f1).occluded  # frame 0's background that frame 1 covers
    rows = slice(64 - SIDE // 2 + 4, 64 + SIDE // 2 - 4)
    assert occluded[rows, left0 + SIDE : left0 + SIDE + STEP].mean() > 0.8
    assert occluded[4:30, 4:-4].mean() < 0.02


def test_flat_areas_with_arbitrary_flow_are_not_occluded() -> None:
    frames = []
    for left in (30, 36):
        frame = np.full((128, 128, 3), (40, 60, 120), np.uint8)
        frame[44:84, left : left + 40] = mm.texture((40, 40), 5)
        frames.append(frame)
    occluded = temporal.correspond(frames[1], frames[0]).occluded
    assert occluded[:, 90:].mean() < 0.02
    assert occluded[:40].mean() < 0.02


def test_content_that_changes_without_moving_is_occluded() -> None:
    before = mm.texture((96, 96), 6)
    after = before.copy()
    after[30:60, 30:60] = 255 - after[30:60, 30:60]  # a screen switching content
    occluded = temporal.correspond(after, before).occluded
    assert occluded[34:56, 34:56].mean() > 0.9
    assert occluded[:20].mean() < 0.02


def test_pixels_from_outside_the_reference_frame_are_occluded() -> None:
    frames = mm.pan_frames(2, 128, step=(4, 0))
    occluded = temporal.correspond(frames[1], frames[0]).occluded  # frame 1's last 4 columns are new
    assert occluded[8:-8, -3:].mean() > 0.9
    assert occluded[8:-8, 8:-8].mean() < 0.01


def test_motion_boundaries_add_to_the_occlusion_mask(square: tuple) -> None:
    (f0, f1), _ = square
    flow, inverse = temporal.estimate_flow(f1, f0), temporal.estimate_flow(f0, f1)
    plain = temporal.occlusion_mask(flow, inverse, motion_boundaries=False)
    with_boundaries = temporal.occlusion_mask(flow, inverse, motion_boundaries=True)
    assert with_boundaries.sum() > plain.sum()
    assert not (plain & ~with_boundaries).any()


# --------------------------------------------------------------------------- blending and fills


def test_blend_init_keeps_the_warp_and_fills_occlusions_with_source_detail() -> None:
    warped = np.full((96, 96, 3), (150, 120, 130), np.uint8)  # a flat stylised output
    source = mm.texture((96, 96), 7)
    occluded = np.zeros((96, 96), bool)
    occluded[32:64, 32:64] = True
    init = temporal.blend_init(warped, source, occluded)
    assert np.array_equal(init[:20], warped[:20])  # far from the hole: the warped output untouched
    hole = init[38:58, 38:58].astype(float)
    source_detail = (source - cv2.GaussianBlur(source.astype(float), (0, 0), temporal.FILL_SIGMA))[38:58, 38:58]
    assert np.abs(hole.mean(axis=(0, 1)) - (150, 120, 130)).max() < 20  # the output's colours...
    detail = np.corrcoef((hole - hole.mean(axis=(0, 1))).ravel(), source_detail.ravel())[0, 1]
    assert detail > 0.9  # ...with the source's shapes
    pasted = temporal.blend_init(warped, source, occluded, fill="source")
    assert np.array_equal(pasted[36:60, 36:60], source[36:60, 36:60])
    assert np.array_equal(temporal.blend_init(warped, source, occluded, source_mix=1.0), source)


def _whole_frame_blend_init(
    warped: np.ndarray, source: np.ndarray, occluded: np.ndarray, source_mix: float, fill: str
) -> np.ndarray:
    """blend_init as it was before the prepared halves: every step over the whole frame."""
    patch = temporal.occlusion_fill(warped, source, occluded) if fill == "detail" and occluded.any() else source
    init = temporal._mix(warped, patch, temporal._soft(occluded, 1.5))
    return temporal._mix(init, source, np.full(occluded.shape, source_mix, np.float32)) if source_mix > 0 else init


@pytest.mark.parametrize("fill", ["detail", "source"])
@pytest.mark.parametrize("source_mix", [0.0, 0.1])
@pytest.mark.parametrize(
    "holes",
    [
        [],  # nothing occluded
        [(slice(40, 70), slice(50, 90))],  # one hole in the middle
        [(slice(0, 12), slice(0, 200)), (slice(150, 160), slice(180, 200))],  # at the frame's edges, far apart
        [(slice(0, 160), slice(0, 200))],  # all of it
        # holes in neighbouring grid cells and in cells apart, in an L whose boxes overlap
        [
            (slice(20, 24), slice(20, 24)),
            (slice(20, 60), slice(100, 104)),
            (slice(56, 60), slice(60, 104)),
            (slice(140, 143), slice(10, 190)),
        ],
    ],
    ids=["none", "middle", "edges", "all", "scattered"],
)
def test_prepared_blend_equals_the_whole_frame_computation(
    fill: str, source_mix: float, holes: list[tuple[slice, slice]]
) -> None:
    rng = np.random.default_rng(len(holes))
    warped = rng.integers(0, 256, (160, 200, 3), dtype=np.uint8)
    source = mm.texture((160, 200), 3)
    occluded = np.zeros((160, 200), bool)
    for hole in holes:
        occluded[hole] = True
    expected = _whole_frame_blend_init(warped, source, occluded, source_mix, fill)
    prepared = temporal.prepare_blend(source, occluded, source_mix, fill=fill)
    assert np.array_equal(prepared.apply(warped), expected)
    assert np.array_equal(temporal.blend_init(warped, source, occluded, source_mix, fill=fill), expected)
    if holes and holes[0][0].stop < 160:  # the fill's work stays near the holes
        assert 0 < prepared.area < 0.5 * 160 * 200


def test_blend_init_rejects_bad_input_in_one_sentence() -> None:
    warped = np.zeros((64, 64, 3), np.uint8)
    with pytest.raises(TemporalInputError, match="same size.*64x64.*64x80|same size.*80x64"):
        temporal.blend_init(warped, np.zeros((80, 64, 3), np.uint8), np.zeros((64, 64), bool))
    with pytest.raises(TemporalInputError, match="source mix"):
        temporal.blend_init(warped, warped, np.zeros((64, 64), bool), source_mix=1.5)


def styled(frame: np.ndarray) -> np.ndarray:
    """A deterministic 'style' so the right in-between output is known exactly."""
    return 255 - frame


def test_fill_between_two_keyframes_follows_the_motion() -> None:
    frames = mm.pan_frames(5, 128, step=(3, 1))
    fill = temporal.fill_between(
        frames[2],
        0.5,
        styled(frames[0]),
        temporal.correspond(frames[2], frames[0]),
        styled(frames[4]),
        temporal.correspond(frames[2], frames[4]),
    )
    error = np.abs(fill.image.astype(float) - styled(frames[2]))
    unmoved = np.abs(styled(frames[0]).astype(float) - styled(frames[2]))
    assert fill.coverage > 0.97  # what one keyframe lacks at the border, the other has
    assert interior(error).mean() < 0.2 * interior(unmoved).mean()


def test_fill_between_weights_by_temporal_distance() -> None:
    frames = mm.pan_frames(5, 128, step=(3, 1))
    near, far = styled(frames[0]), frames[4]  # two different "looks" for the two keyframes
    fill = temporal.fill_between(
        frames[1], 0.25, near, temporal.correspond(frames[1], frames[0]), far, temporal.correspond(frames[1], frames[4])
    )
    by_distance = 0.75 * styled(frames[1]).astype(float) + 0.25 * frames[1]
    evenly = 0.5 * (styled(frames[1]).astype(float) + frames[1])
    error = interior(np.abs(fill.image - by_distance), 16).mean()
    assert error < 6
    assert error < 0.4 * interior(np.abs(fill.image - evenly), 16).mean()


def test_fill_prefers_the_keyframe_whose_warp_fits_the_source() -> None:
    frames = mm.pan_frames(5, 128, step=(3, 1))
    good = temporal.correspond(frames[2], frames[0])
    wrong_flow = np.zeros_like(good.flow)  # a flow that missed the motion, yet is not flagged occluded
    misfit = temporal.Correspondence(
        wrong_flow, np.zeros_like(good.occluded), temporal.residual(frames[2], frames[4], wrong_flow)
    )
    fill = temporal.fill_between(frames[2], 0.5, styled(frames[0]), good, styled(frames[4]), misfit)
    assert interior(np.abs(fill.image.astype(float) - styled(frames[2])), 16).mean() < 6


def test_fill_counts_pixels_no_keyframe_warp_fits_as_uncovered() -> None:
    frames = mm.pan_frames(5, 128, step=(3, 1))
    still = np.zeros((128, 128, 2), np.float32)  # both flows missed the pan
    sides = [
        temporal.Correspondence(still, np.zeros((128, 128), bool), temporal.residual(frames[2], frames[k], still))
        for k in (0, 4)
    ]
    fill = temporal.fill_between(frames[2], 0.5, styled(frames[0]), sides[0], styled(frames[4]), sides[1])
    assert fill.coverage < 0.5
    assert np.abs(fill.image[fill.uncovered].mean() - frames[2][fill.uncovered].mean()) < 25  # filled, not left black


def test_fill_reports_low_coverage_where_a_shape_uncovers_background(square: tuple) -> None:
    (f0, f1), (left0, _) = square
    fill = temporal.fill_between(f1, 1 / 3, styled(f0), temporal.correspond(f1, f0))
    assert 0.8 < fill.coverage < 0.99
    assert fill.uncovered[64, left0 : left0 + STEP].mean() > 0.6


def test_fill_between_rejects_bad_input_in_one_sentence() -> None:
    frame = mm.texture((64, 64))
    with pytest.raises(TemporalInputError, match="between 0 and 1"):
        temporal.fill_between(frame, 1.5)
    with pytest.raises(TemporalInputError, match="correspondence"):
        temporal.fill_between(frame, 0.5, before=frame)


# --------------------------------------------------------------------------- colour


def lab_means(image: np.ndarray) -> np.ndarray:
    return temporal.lab_stats(image)[0]


def test_colour_matching_moves_lab_statistics_to_the_reference() -> None:
    image = (mm.texture((96, 96), 8) * 0.5 + np.array([90, 40, 10])).astype(np.uint8)  # dark, warm, low contrast
    reference = mm.texture((96, 96), 9)
    before = np.abs(temporal.lab_stats(image) - temporal.lab_stats(reference))
    after = np.abs(temporal.lab_stats(temporal.match_colors(image, reference)) - temporal.lab_stats(reference))
    assert before[0].max() > 10  # they did differ
    assert after[0].max() < 1.5 and after[1].max() < 1.5
    unchanged = temporal.match_colors(image, reference, strength=0.0).astype(int) - image
    assert np.abs(unchanged).max() <= 1  # float LAB round trip only


def flickering(count: int = 24) -> list:
    gains = [1.0 + (0.15 if i % 2 else -0.15) * ((i * 7) % 3) / 2 for i in range(count)]
    return [
        np.clip(f.astype(float) * g, 0, 255).astype(np.uint8)
        for f, g in zip(mm.pan_frames(count, 96, (2, 0)), gains, strict=False)
    ]


def test_deflicker_reduces_frame_to_frame_luminance_changes() -> None:
    frames = flickering()
    luminance = np.array([lab_means(f)[0] for f in frames])
    smoothed = np.array([lab_means(f)[0] for f in temporal.deflicker(frames, window=2)])
    assert np.diff(smoothed).var() < 0.1 * np.diff(luminance).var()


def test_deflicker_keeps_a_real_fade() -> None:
    frames = [
        np.clip(f.astype(float) * (0.5 + i / 30), 0, 255).astype(np.uint8)
        for i, f in enumerate(mm.pan_frames(16, 96, (2, 0)))
    ]
    luminance = np.array([lab_means(f)[0] for f in frames])
    smoothed = np.array([lab_means(f)[0] for f in temporal.deflicker(frames, window=3)])
    assert np.abs(smoothed - luminance)[3:-3].max() < 1.0


def test_deflicker_window_zero_is_a_one_sentence_user_error() -> None:
    with pytest.raises(ValueError, match="window must be 1 frame or more") as caught:
        temporal.deflicker(flickering(4), window=0)
    assert isinstance(caught.value, SpecError) and caught.value.exit_code == 2
    assert str(caught.value).count(". ") == 0 and str(caught.value).endswith(".")


def test_mismatched_frame_sizes_are_a_one_sentence_user_error() -> None:
    with pytest.raises(TemporalInputError, match="same size"):
        temporal.estimate_flow(np.zeros((64, 64, 3), np.uint8), np.zeros((64, 80, 3), np.uint8))
    with pytest.raises(TemporalInputError, match="same size"):
        temporal.deflicker([np.zeros((64, 64, 3), np.uint8), np.zeros((48, 64, 3), np.uint8)], window=1)
    with pytest.raises(TemporalInputError, match="too small for optical flow"):
        temporal.correspond(np.zeros((8, 8, 3), np.uint8), np.zeros((8, 8, 3), np.uint8))
    with pytest.raises(TemporalInputError, match="preset"):
        temporal.estimate_flow(np.zeros((64, 64, 3), np.uint8), np.zeros((64, 64, 3), np.uint8), preset="slowest")


# --------------------------------------------------------------------------- scene cuts


def test_scene_cut_is_found() -> None:
    frames, first_new = mm.cut_clip(12, 12)
    assert temporal.detect_scene_cuts(frames) == [first_new]


@pytest.mark.parametrize(
    "frames",
    [
        mm.pan_frames(24, 128, (4, 1)),
        mm.zoom_frames(24, 128, 0.03),
        [media.draw_frame(i, i / 30.0, (160, 128)) for i in range(30)],
    ],
    ids=["pan", "zoom", "test clip"],
)
def test_no_false_cuts_under_camera_and_object_motion(frames: list) -> None:
    assert temporal.detect_scene_cuts(frames) == []


def test_cut_threshold_adapts_to_a_clip_that_changes_a_lot_between_frames() -> None:
    cycling = mm.colour_cycle_frames(24)
    distances = temporal.cut_distances([temporal.frame_signature(f) for f in cycling])
    assert distances.min() > temporal.MIN_CUT_DISTANCE  # a fixed threshold would cut every frame
    after = [
        cv2.cvtColor(cv2.cvtColor(f, cv2.COLOR_RGB2GRAY) // 3, cv2.COLOR_GRAY2RGB)
        for f in mm.pan_frames(8, 128, (2, 0), seed=14)
    ]
    assert temporal.detect_scene_cuts(cycling + after) == [24]


def test_two_cuts_and_tiny_clips() -> None:
    frames, first_new = mm.cut_clip(10, 10)
    third = [cv2.cvtColor(f, cv2.COLOR_RGB2HSV) for f in mm.pan_frames(10, 128, (2, 2), seed=11)]
    assert temporal.detect_scene_cuts(frames + third) == [first_new, 20]
    assert temporal.detect_scene_cuts(frames[:1]) == []
    assert temporal.detect_scene_cuts([]) == []
