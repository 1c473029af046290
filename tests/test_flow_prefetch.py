"""Source links estimated ahead (vidstyle/flow_prefetch.py): the same pixels as computing them in
`coherence.frame_inputs`, a bounded look-ahead, and no thread left behind."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator

import cv2
import numpy as np
import pytest

from vidstyle import coherence, temporal
from vidstyle.flow_prefetch import SourceFlows, step_pairs
from vidstyle.spec import JobSpec, load_spec
from vidstyle.synthetic import draw_scene

SIZE = 96
FRAMES = 9
THREAD_NAME = "vidstyle-flow-prefetch"


@pytest.fixture(autouse=True)
def no_leaked_threads() -> Iterator[None]:
    yield
    assert not [t for t in threading.enumerate() if t.name == THREAD_NAME]


@pytest.fixture(scope="module")
def sources() -> list[np.ndarray]:
    return [draw_scene(i / 10, SIZE, SIZE) for i in range(FRAMES)]


def stylised(frame: np.ndarray) -> np.ndarray:
    """A stand-in for a backend's output: not the source, so warping and filling show."""
    return cv2.applyColorMap(cv2.GaussianBlur(frame, (5, 5), 0), cv2.COLORMAP_JET)


def spec_for(mode: str) -> JobSpec:
    return load_spec(
        "anime-canny-sd15", {"source.path": "clip.mp4", "coherence.mode": mode, "coherence.source_mix": 0.1}
    )


class RecordingReader:
    """A source reader double: serves the frames and records which thread read which frame."""

    def __init__(self, frames: list[np.ndarray], delay: float = 0.0, fail_at: int | None = None) -> None:
        self.frames = frames
        self.delay = delay
        self.fail_at = fail_at
        self.reads: list[tuple[str, int]] = []

    def __call__(self, idx: int) -> np.ndarray:
        if idx == self.fail_at:
            raise FileNotFoundError(f"src/{idx:06d}.png is missing")
        self.reads.append((threading.current_thread().name, idx))
        time.sleep(self.delay)
        return self.frames[idx].copy()

    def by(self, name: str) -> list[int]:
        return [idx for thread, idx in self.reads if thread == name]


def wait_for(condition: Callable[[], bool], timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.005)


def run_chain(mode: str, sources: list[np.ndarray], flows: SourceFlows | None) -> list[coherence.FrameInputs]:
    """Every guided frame's inputs in plan order, outputs made as the render loop would."""
    spec = spec_for(mode)
    plan = coherence.plan_frames(spec.coherence, len(sources), cuts=[])
    outputs: dict[int, np.ndarray] = {}
    made = []
    order = sorted(plan.steps, key=lambda s: (s.how == "between", s.idx))  # keyframes before fills
    for step in order:
        if step.how in ("flow", "between"):
            inputs = coherence.frame_inputs(step, spec, sources.__getitem__, outputs.__getitem__, True, flows)
            made.append(inputs)
            outputs[step.idx] = stylised(inputs.init)
        else:
            outputs[step.idx] = stylised(sources[step.idx])
    return made


@pytest.mark.parametrize("mode", ["flow", "keyframes"])
# The job's source mix (0.1, as in spec_for): flow inits prepared ahead; another (a redo that
# changed it): made inline from the prefetched link; None: links only.
@pytest.mark.parametrize("prefetch_mix", [0.1, 0.3, None])
def test_prefetched_inputs_are_pixel_identical(
    mode: str, prefetch_mix: float | None, sources: list[np.ndarray]
) -> None:
    plan = coherence.plan_frames(spec_for(mode).coherence, FRAMES, cuts=[])
    reader = RecordingReader(sources)
    with SourceFlows(plan.steps, reader, ahead=3, source_mix=prefetch_mix) as flows:
        prefetched = run_chain(mode, sources, flows)
    plain = run_chain(mode, sources, None)
    assert len(prefetched) == len(plain) > 0
    for a, b in zip(prefetched, plain, strict=True):
        np.testing.assert_array_equal(a.init, b.init)
        assert a.denoise == b.denoise and a.info == b.info
    assert reader.by(THREAD_NAME), "the worker read no source frame: nothing was prefetched"


def test_links_match_correspond(sources: list[np.ndarray]) -> None:
    steps = [coherence.FrameStep(2, "between", before=0, after=4), coherence.FrameStep(5, "flow", previous=4)]
    assert [p for s in steps for p in step_pairs(s)] == [(2, 0), (2, 4), (5, 4)]
    with SourceFlows(steps, RecordingReader(sources)) as flows:
        for target, reference in [(2, 0), (2, 4), (5, 4), (7, 3)]:  # (7, 3) was never planned
            got = flows.get(target, reference)
            want = temporal.correspond(sources[target], sources[reference])
            np.testing.assert_array_equal(got.flow, want.flow)
            np.testing.assert_array_equal(got.occluded, want.occluded)
            assert got.residual is not None and want.residual is not None
            np.testing.assert_array_equal(got.residual, want.residual)


def test_worker_stays_at_most_ahead_links_ahead(sources: list[np.ndarray]) -> None:
    steps = [coherence.FrameStep(t, "flow", previous=t - 1) for t in range(1, FRAMES)]
    reader = RecordingReader(sources)
    with SourceFlows(steps, reader, ahead=2) as flows:
        wait_for(lambda: len(reader.by(THREAD_NAME)) >= 3)  # links (1, 0) and (2, 1)
        time.sleep(0.2)  # room to overrun the bound, if it could
        assert sorted(reader.by(THREAD_NAME)) == [0, 1, 2]  # frame 1 read once for both links
        flows.get(1, 0)  # served from the prefetch: no read in this thread ...
        assert reader.by(threading.current_thread().name) == []
        wait_for(lambda: 3 in reader.by(THREAD_NAME))  # ... and the freed slot goes to (3, 2)
        assert sorted(reader.by(THREAD_NAME)) == [0, 1, 2, 3]


def test_a_link_asked_twice_is_computed_again(sources: list[np.ndarray]) -> None:
    """A retried frame asks again: the prefetch handed its link out once, so it is computed inline."""
    reader = RecordingReader(sources)
    with SourceFlows([coherence.FrameStep(1, "flow", previous=0)], reader) as flows:
        first = flows.get(1, 0)
        again = flows.get(1, 0)
    np.testing.assert_array_equal(first.flow, again.flow)
    assert sorted(reader.by(threading.current_thread().name)) == [0, 1]


def test_a_link_in_the_works_is_waited_for_not_computed_twice(sources: list[np.ndarray]) -> None:
    reader = RecordingReader(sources, delay=0.1)
    with SourceFlows([coherence.FrameStep(1, "flow", previous=0)], reader) as flows:
        wait_for(lambda: len(reader.by(THREAD_NAME)) >= 1)
        flows.get(1, 0)
    assert reader.by(threading.current_thread().name) == []


def test_close_stops_a_blocked_worker(sources: list[np.ndarray]) -> None:
    steps = [coherence.FrameStep(t, "flow", previous=t - 1) for t in range(1, FRAMES)]
    reader = RecordingReader(sources)
    flows = SourceFlows(steps, reader, ahead=1)
    wait_for(lambda: len(reader.by(THREAD_NAME)) >= 2)
    assert [t for t in threading.enumerate() if t.name == THREAD_NAME]
    flows.close()
    flows.close()  # twice is harmless
    assert sorted(reader.by(THREAD_NAME)) == [0, 1]
    # After close the links are still there, computed inline.
    got = flows.get(3, 2)
    np.testing.assert_array_equal(got.flow, temporal.correspond(sources[3], sources[2]).flow)


def test_close_during_a_slow_read_returns_promptly(sources: list[np.ndarray]) -> None:
    steps = [coherence.FrameStep(t, "flow", previous=t - 1) for t in range(1, FRAMES)]
    reader = RecordingReader(sources, delay=0.05)
    flows = SourceFlows(steps, reader, ahead=8)
    wait_for(lambda: len(reader.by(THREAD_NAME)) >= 1)
    started = time.monotonic()
    flows.close()
    assert time.monotonic() - started < 1.0
    assert len(reader.by(THREAD_NAME)) < FRAMES


def test_a_failing_read_surfaces_in_the_caller(sources: list[np.ndarray]) -> None:
    steps = [coherence.FrameStep(t, "flow", previous=t - 1) for t in range(1, FRAMES)]
    reader = RecordingReader(sources, fail_at=3)
    with SourceFlows(steps, reader) as flows:
        flows.get(1, 0)
        flows.get(2, 1)
        with pytest.raises(FileNotFoundError, match="000003"):
            flows.get(3, 2)
        with pytest.raises(FileNotFoundError):
            flows.get(4, 3)


def test_nothing_to_prefetch_starts_no_thread(sources: list[np.ndarray]) -> None:
    steps = [coherence.FrameStep(t, "alone") for t in range(FRAMES)]
    before = threading.active_count()
    with SourceFlows(steps, RecordingReader(sources)):
        assert threading.active_count() == before


def test_ahead_must_be_positive(sources: list[np.ndarray]) -> None:
    with pytest.raises(ValueError, match="at least 1"):
        SourceFlows([], RecordingReader(sources), ahead=0)


def test_a_flow_init_is_the_blend_of_the_warped_previous_output(sources: list[np.ndarray]) -> None:
    """The prepared halves give what `blend_init` of the link's warp gives, pixel for pixel."""
    previous_output = stylised(sources[3])
    with SourceFlows([coherence.FrameStep(4, "flow", previous=3)], RecordingReader(sources), source_mix=0.1) as flows:
        wait_for(lambda: bool(flows._ready))
        prepared = flows.flow_init(4, 3, 0.1)
    link = temporal.correspond(sources[4], sources[3])
    want = temporal.blend_init(link.warp(previous_output), sources[4], link.occluded, 0.1)
    np.testing.assert_array_equal(prepared.init(previous_output), want)
    assert prepared.coverage == link.coverage
    np.testing.assert_array_equal(prepared.source, sources[4])


def test_a_flow_link_is_still_there_after_its_init_was_prepared(sources: list[np.ndarray]) -> None:
    """A prefetched flow step keeps its prepared init, not the link; asking for the link computes it."""
    reader = RecordingReader(sources)
    with SourceFlows([coherence.FrameStep(1, "flow", previous=0)], reader, source_mix=0.1) as flows:
        wait_for(lambda: bool(flows._ready))
        got = flows.get(1, 0)
    np.testing.assert_array_equal(got.flow, temporal.correspond(sources[1], sources[0]).flow)
    assert sorted(reader.by(threading.current_thread().name)) == [0, 1]
