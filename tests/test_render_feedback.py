"""What the render loop tells the user, and in which order it renders (issue 9 items 2-4).

* The WebUI's own Interrupt button stopping a job is said as such, not as our generic cancel.
* The ETA inside a long frame does not take the WebUI's early eta_relative at face value.
* Frames start in order, also when the pool thread preparing frame 1 is faster than frame 0's.
"""

from __future__ import annotations

import threading
from pathlib import Path

import pytest

import vidstyle.render as render
from vidstyle.backends.base import Img2ImgRequest, Img2ImgResult
from vidstyle.backends.passthrough import PassthroughBackend
from vidstyle.backends.webui_local import INTERRUPTED as WEBUI_INTERRUPTED  # the Interrupt button's message
from vidstyle.errors import Cancelled
from vidstyle.job import create_job, prepare
from vidstyle.render import CancelToken, RenderEvent, _attach_frame_progress, _Rate, render_pending, run_job
from vidstyle.spec import load_spec


def _spec(clip: Path, frames: int = 6):
    return load_spec(
        "anime-canny-sd15",
        {
            "source.path": str(clip),
            "size.width": 64,
            "size.height": 64,
            "backend.kind": "passthrough",
            "sampling.seed": 5,
            "source.end_frame": frames,
            # frames that do not depend on each other (flow chains: test_coherence_render.py)
            "coherence.mode": "independent",
        },
    )


class InterruptedAt(PassthroughBackend):
    """Raises Cancelled with the WebUI's own message on one frame, as webui_local does for its Interrupt button."""

    def __init__(self, spec, frame: int, message: str = WEBUI_INTERRUPTED) -> None:
        super().__init__(spec)
        self.frame = frame
        self.message = message

    def img2img(self, request: Img2ImgRequest) -> Img2ImgResult:
        if request.frame_index == self.frame:
            raise Cancelled(self.message)
        return super().img2img(request)


# -- 9.2: whose button stopped the job ---------------------------------------------------------------


def test_webui_interrupt_message_reaches_the_user(tmp_path: Path, demo_clip: Path) -> None:
    with create_job(_spec(demo_clip), tmp_path / "job") as job:
        with pytest.raises(Cancelled) as caught:
            run_job(job, backend=InterruptedAt(job.spec, frame=2))
        assert str(caught.value) == WEBUI_INTERRUPTED
        assert job.ledger.frame(2).status != "done"  # the interrupted frame is not kept
        assert all(job.ledger.frame(i).status == "done" for i in (0, 1))  # the frames before it are


def test_our_own_cancel_keeps_the_resume_hint(tmp_path: Path, demo_clip: Path) -> None:
    cancel = CancelToken()

    class CancelledByUs(PassthroughBackend):
        def img2img(self, request: Img2ImgRequest) -> Img2ImgResult:
            if request.frame_index == 1:
                cancel.cancel()  # the tab's Cancel / Ctrl-C: the backend then raises its own Cancelled
                raise Cancelled("Render cancelled; the job is saved and Resume continues it.")
            return super().img2img(request)

    with create_job(_spec(demo_clip), tmp_path / "job") as job:
        prepare(job)
        with pytest.raises(Cancelled, match="vidstyle resume"):
            render_pending(job, CancelledByUs(job.spec), cancel=cancel)


# -- 9.3: the ETA inside a frame ----------------------------------------------------------------------


class _Reporting:
    """Only what _attach_frame_progress looks at: one at a time, an on_progress slot."""

    concurrency = 1
    on_progress = None


def _progress(rate: _Rate, done: int, total: int, reports: list[tuple]) -> list[RenderEvent]:
    events: list[RenderEvent] = []
    backend = _Reporting()
    _attach_frame_progress(backend, events.append, {"done": done, "total": total}, rate)
    for fraction, eta_relative in reports:
        backend.on_progress(fraction, eta_relative)
    return events


def _rate_of(seconds_per_frame: float, frames: int) -> _Rate:
    rate = _Rate()
    rate.times = [i * seconds_per_frame for i in range(frames)]  # frame completion times, as tick() records them
    return rate


def test_known_frame_time_wins_over_the_webuis_early_eta() -> None:
    # The numbers: 27 s/frame known, then the WebUI says 1 % and eta_relative 8292 s, climbing.
    events = _progress(_rate_of(27.0, 3), done=2, total=10, reports=[(0.01, 8292.0), (0.01, 8442.0), (0.51, 72.0)])
    etas = [e.eta_seconds for e in events]
    assert etas[0] == pytest.approx(0.99 * 27 + 7 * 27)
    assert etas[1] == pytest.approx(0.99 * 27 + 7 * 27)  # no climb while the WebUI's figure climbs
    assert etas[2] == pytest.approx(0.49 * 27 + 7 * 27)
    assert [e.frame_fraction for e in events] == [0.01, 0.01, 0.51]


def test_without_a_known_rate_the_warm_up_eta_is_not_shown() -> None:
    # First frame: no rate yet. At 1 % the WebUI's figure is elapsed x 99: no ETA rather than 8292 s.
    events = _progress(_Rate(), done=0, total=10, reports=[(0.01, 8292.0), (0.5, 13.5)])
    assert events[0].eta_seconds is None and events[0].frame_fraction == 0.01
    # Once sampling is under way its figure is usable: 13.5 s left, 9 more frames of 27 s.
    assert events[1].eta_seconds == pytest.approx(13.5 + 9 * 27.0)


def test_first_frame_time_is_used_before_two_frames_have_finished(tmp_path: Path, demo_clip: Path) -> None:
    """After one finished frame the per-frame time is known (its render time), not only after two."""

    class Reporting(PassthroughBackend):
        on_progress = None

        def img2img(self, request: Img2ImgRequest) -> Img2ImgResult:
            if self.on_progress is not None and request.frame_index == 1:
                self.on_progress(0.01, 1e6)  # a wild warm-up figure
            return super().img2img(request)

    events: list[RenderEvent] = []
    with create_job(_spec(demo_clip), tmp_path / "job") as job:
        prepare(job)
        render_pending(job, Reporting(job.spec), on_event=events.append)
    progress = [e for e in events if e.kind == "progress"]
    assert len(progress) == 1 and progress[0].eta_seconds is not None
    assert progress[0].eta_seconds < 1e6 / 10  # the measured frame time, not the WebUI's warm-up figure


# -- 9.4: frames start in order ------------------------------------------------------------------------


def test_one_at_a_time_frames_start_in_order(tmp_path: Path, demo_clip: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Frame 0's inputs take longer to read than frame 1's: frame 0 must still render first."""
    prepared = {i: threading.Event() for i in range(6)}
    real_build = render.build_request

    def slow_for_even_frames(job, row, spec):  # type: ignore[no-untyped-def]
        request = real_build(job, row, spec)
        if row.idx % 2 == 0 and row.idx + 1 in prepared:
            prepared[row.idx + 1].wait(timeout=10)  # the next frame's thread reaches the backend first
        prepared[row.idx].set()
        return request

    monkeypatch.setattr(render, "build_request", slow_for_even_frames)

    class Recording(PassthroughBackend):
        def __init__(self, spec) -> None:
            super().__init__(spec)
            self.order: list[int] = []

        def img2img(self, request: Img2ImgRequest) -> Img2ImgResult:
            self.order.append(request.frame_index)
            return super().img2img(request)

    with create_job(_spec(demo_clip), tmp_path / "job") as job:
        prepare(job)
        backend = Recording(job.spec)
        render_pending(job, backend)
    assert backend.order == list(range(6))


def test_several_slots_still_render_concurrently(tmp_path: Path, demo_clip: Path) -> None:
    """Ordering the starts must not serialise a backend that takes several frames at once."""
    together = threading.Barrier(3, timeout=20)

    class ThreeAtOnce(PassthroughBackend):
        concurrency = 3

        def __init__(self, spec) -> None:
            super().__init__(spec)
            self.lock = threading.Lock()
            self.started: list[int] = []

        def img2img(self, request: Img2ImgRequest) -> Img2ImgResult:
            with self.lock:
                self.started.append(request.frame_index)
            together.wait()  # breaks (BrokenBarrierError) unless three calls are in flight at once
            return super().img2img(request)

    with create_job(_spec(demo_clip), tmp_path / "job") as job:
        prepare(job)
        backend = ThreeAtOnce(job.spec)
        summary = render_pending(job, backend)
    assert summary.rendered == 6 and not summary.failed
    assert sorted(backend.started[:3]) == [0, 1, 2]


def test_a_frame_whose_inputs_cannot_be_read_does_not_block_the_next(tmp_path: Path, demo_clip: Path) -> None:
    """A frame failing before it reaches the backend gives up its turn (no deadlock)."""
    with create_job(_spec(demo_clip, frames=4), tmp_path / "job") as job:
        prepare(job)
        job.src_path(1).unlink()
        with pytest.raises(FileNotFoundError):
            render_pending(job, PassthroughBackend(job.spec))
