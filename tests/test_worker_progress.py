"""Per-worker progress (issue 14): a backend with workers reports them through frame events
and the API status, without any backend-specific code in the render loop or the manager."""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from vidstyle.backends.base import Img2ImgRequest, Img2ImgResult
from vidstyle.backends.passthrough import PassthroughBackend
from vidstyle.job import create_job
from vidstyle.manager import JobManager
from vidstyle.render import RenderEvent, run_job
from vidstyle.spec import load_spec


@dataclass
class Worker:
    worker: str
    node: str
    pid: int
    frames: int
    fps: float | None
    state: str


class TwoWorkerDouble(PassthroughBackend):
    """Passthrough frames, credited in turn to two named workers as a Ray backend would report."""

    name = "two-workers"

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.workers = [Worker("0", "node-a", 11, 0, None, "idle"), Worker("1", "node-b", 12, 0, None, "idle")]

    def img2img(self, request: Img2ImgRequest) -> Img2ImgResult:
        result = super().img2img(request)
        self.workers[request.frame_index % 2].frames += 1
        return result

    @property
    def worker_progress(self) -> list[Worker]:
        return [Worker(**vars(w)) for w in self.workers]


def _spec(clip: Path) -> Any:
    return load_spec(
        "anime-canny-sd15",
        {
            "source.path": str(clip),
            "source.end_frame": 4,
            "size.width": 64,
            "size.height": 64,
            "backend.kind": "passthrough",
            "sampling.seed": 5,
            "coherence.mode": "independent",
        },
    )


def test_frame_events_carry_each_workers_frames(tmp_path: Path, demo_clip: Path) -> None:
    spec = _spec(demo_clip)
    events: list[RenderEvent] = []
    with create_job(spec, tmp_path / "job") as job:
        run_job(job, backend=TwoWorkerDouble(spec), on_event=events.append, finish=False)
    frames = [e for e in events if e.kind == "frame"]
    assert frames and all(e.workers is not None for e in frames)
    last = {w["node"]: w["frames"] for w in frames[-1].workers or []}
    assert last == {"node-a": 2, "node-b": 2}


def test_a_backend_without_workers_reports_none(tmp_path: Path, demo_clip: Path) -> None:
    spec = _spec(demo_clip)
    events: list[RenderEvent] = []
    with create_job(spec, tmp_path / "job") as job:
        run_job(job, backend=PassthroughBackend(spec), on_event=events.append, finish=False)
    assert [e.workers for e in events if e.kind == "frame"] == [None] * 4


class GatedTwoWorkerDouble(TwoWorkerDouble):
    """Holds frame 2 until the test has read the status, so it is read mid-job."""

    gate = threading.Event()
    waiting = threading.Event()

    def img2img(self, request: Img2ImgRequest) -> Img2ImgResult:
        if request.frame_index == 2:
            self.waiting.set()
            assert self.gate.wait(60)
        return super().img2img(request)


def test_api_status_shows_the_workers_while_the_job_runs(tmp_path: Path, demo_clip: Path) -> None:
    manager = JobManager(tmp_path / "jobs", backend_factory=lambda spec, on_status: GatedTwoWorkerDouble(spec))
    try:
        job_id = manager.submit(_spec(demo_clip))
        assert GatedTwoWorkerDouble.waiting.wait(60)
        deadline = time.monotonic() + 60
        status = manager.status(job_id)
        while status["done"] < 2 and time.monotonic() < deadline:  # frames 0 and 1 are recorded
            time.sleep(0.05)
            status = manager.status(job_id)
        GatedTwoWorkerDouble.gate.set()
        assert status["state"] == "rendering"
        assert {w["node"]: w["frames"] for w in status["workers"]} == {"node-a": 1, "node-b": 1}
        assert manager.wait_idle(60)
    finally:
        GatedTwoWorkerDouble.gate.set()
        manager.close()
