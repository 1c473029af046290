"""JobManager: one job at a time on a worker thread, live status, cancel/resume/redo, previews.

Runs on the passthrough backend (no torch), so it also runs under the WebUI's pins.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from vidstyle.backends.base import Img2ImgRequest, Img2ImgResult
from vidstyle.backends.passthrough import PassthroughBackend
from vidstyle.control import canny_map
from vidstyle.epoch_preview import HEADER_HEIGHT, LABEL_WIDTH
from vidstyle.errors import BackendError, JobStateError, SpecError, UserInputError
from vidstyle.imageio import read_png
from vidstyle.job import create_job, open_job
from vidstyle.manager import JobManager, QueueFullError, UnknownJobError
from vidstyle.spec import JobSpec, load_spec
from vidstyle.video import fit_frame, read_frame_at

WAIT = 120.0  # generous upper bound so a broken worker fails the test instead of hanging it


def make_spec(clip: Path, **extra: object) -> JobSpec:
    overrides = {
        "source.path": str(clip),
        "size.width": 64,
        "size.height": 64,
        "backend.kind": "passthrough",
        "sampling.seed": 7,
        "source.end_frame": 6,
        # frames that do not depend on each other (the preset's flow chains: test_coherence_render.py)
        "coherence.mode": "independent",
    }
    overrides.update(extra)
    return load_spec("anime-canny-sd15", overrides)


class GateBackend(PassthroughBackend):
    """Passthrough that blocks every frame until the test opens the gate; counts overlap."""

    name = "gate"
    active = 0
    max_active = 0
    calls: list[int] = []
    lock = threading.Lock()

    def __init__(self, spec: JobSpec, gate: threading.Event, started: threading.Event) -> None:
        super().__init__(spec)
        self.gate = gate
        self.started = started
        self.closed = False

    def img2img(self, request: Img2ImgRequest) -> Img2ImgResult:
        with GateBackend.lock:
            GateBackend.active += 1
            GateBackend.max_active = max(GateBackend.max_active, GateBackend.active)
            GateBackend.calls.append(request.frame_index)
        self.started.set()
        try:
            if not self.gate.wait(WAIT):
                raise BackendError("gate never opened")
            return super().img2img(request)
        finally:
            with GateBackend.lock:
                GateBackend.active -= 1

    def close(self) -> None:
        self.closed = True


class Gate:
    def __init__(self) -> None:
        self.open = threading.Event()
        self.started = threading.Event()
        self.backends: list[GateBackend] = []
        GateBackend.active = GateBackend.max_active = 0
        GateBackend.calls = []

    def factory(self, spec: JobSpec, on_status: object) -> GateBackend:
        backend = GateBackend(spec, self.open, self.started)
        self.backends.append(backend)
        return backend


def wait_state(manager: JobManager, job_id: str, states: tuple, timeout: float = WAIT) -> dict:
    import time

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        status = manager.status(job_id)
        if status["state"] in states:
            return status
        time.sleep(0.02)
    raise AssertionError(f"job {job_id} never reached {states}: {manager.status(job_id)}")


@pytest.fixture
def manager(tmp_path: Path) -> Iterator[JobManager]:
    mgr = JobManager(tmp_path / "jobs")
    yield mgr
    mgr.close()


@pytest.fixture
def gate() -> Iterator[Gate]:
    g = Gate()
    yield g
    g.open.set()  # never leave a worker blocked


def gated_manager(tmp_path: Path, gate: Gate) -> JobManager:
    return JobManager(tmp_path / "jobs", backend_factory=gate.factory)


def test_submit_renders_to_done_with_outputs(manager: JobManager, demo_clip: Path) -> None:
    job_id = manager.submit(make_spec(demo_clip), name="dance")
    assert job_id == "dance"
    assert manager.wait_idle(WAIT)
    status = manager.status(job_id)
    assert status["state"] == "done", status
    assert (status["frames"], status["done"], status["failed"]) == (6, 6, 0)
    assert set(status["outputs"]) == {
        "result.mp4",
        "compare.mp4",
        "report/contact_sheet.png",
        "report/report.md",
        "report/report.json",
        "report/index.html",
    }
    assert sorted(Path(p).name for p in status["recent_frames"]) == [f"{i:06d}.png" for i in range(6)]
    assert status["latest_frame"] == status["recent_frames"][-1]
    assert manager.file_path(job_id, "result.mp4").stat().st_size > 0
    listed = manager.list_jobs()
    assert [j["id"] for j in listed] == ["dance"] and listed[0]["state"] == "done"


def test_jobs_run_one_at_a_time_in_order(tmp_path: Path, demo_clip: Path, gate: Gate) -> None:
    manager = gated_manager(tmp_path, gate)
    try:
        first = manager.submit(make_spec(demo_clip, **{"source.end_frame": 2}), name="first")
        second = manager.submit(make_spec(demo_clip, **{"source.end_frame": 2}), name="second")
        assert gate.started.wait(WAIT)
        assert manager.status(first)["state"] == "rendering"
        assert manager.status(second)["state"] == "queued"
        gate.open.set()
        assert manager.wait_idle(WAIT)
        assert manager.status(first)["state"] == manager.status(second)["state"] == "done"
        assert GateBackend.max_active == 1  # never two frames of two jobs on the GPU at once
        assert len(gate.backends) == 2 and all(b.closed for b in gate.backends)
    finally:
        manager.close()


def test_cancel_rendering_job_keeps_frames_and_resume_finishes(tmp_path: Path, demo_clip: Path, gate: Gate) -> None:
    manager = gated_manager(tmp_path, gate)
    try:
        job_id = manager.submit(make_spec(demo_clip))
        assert gate.started.wait(WAIT)
        manager.cancel(job_id)
        gate.open.set()  # the frame in flight finishes and is kept
        status = wait_state(manager, job_id, ("cancelled",))
        assert 0 < status["done"] < 6
        assert "resum" in status["message"].lower()
        with pytest.raises(JobStateError):
            manager.cancel(job_id)
    finally:
        manager.close()
    # A new manager (a restarted UI) still knows the job was cancelled, and resumes it.
    again = JobManager(tmp_path / "jobs")
    try:
        assert again.status(job_id)["state"] == "cancelled"
        again.resume(job_id)
        assert again.wait_idle(WAIT)
        status = again.status(job_id)
        assert status["state"] == "done" and status["done"] == 6
        with pytest.raises(JobStateError, match="already done"):
            again.resume(job_id)
    finally:
        again.close()


def test_cancel_queued_job_never_renders_it(tmp_path: Path, demo_clip: Path, gate: Gate) -> None:
    manager = gated_manager(tmp_path, gate)
    try:
        first = manager.submit(make_spec(demo_clip, **{"source.end_frame": 1}), name="first")
        second = manager.submit(make_spec(demo_clip, **{"source.end_frame": 1}), name="second")
        assert gate.started.wait(WAIT)
        manager.cancel(second)
        gate.open.set()
        assert manager.wait_idle(WAIT)
        assert manager.status(first)["state"] == "done"
        status = manager.status(second)
        assert status["state"] == "cancelled" and status["done"] == 0
        assert len(gate.backends) == 1
    finally:
        manager.close()


def test_redo_renders_chosen_frames_again(manager: JobManager, demo_clip: Path) -> None:
    job_id = manager.submit(make_spec(demo_clip))
    assert manager.wait_idle(WAIT)
    manager.redo(job_id, "1-2", {"prompt": "another prompt"})
    assert manager.wait_idle(WAIT)
    assert manager.status(job_id)["state"] == "done"
    root = manager.output_root / job_id
    with open_job(root) as job:
        assert job.ledger.frame(1).attempt == 1 and job.ledger.frame(1).overrides == {"prompt": "another prompt"}
        assert job.ledger.frame(0).attempt == 0
        assert job.history_path(1, 0).is_file() and job.history_path(2, 0).is_file()


def test_redo_refuses_bad_requests(manager: JobManager, demo_clip: Path) -> None:
    job_id = manager.submit(make_spec(demo_clip))
    assert manager.wait_idle(WAIT)
    with pytest.raises(SpecError, match="outside"):
        manager.redo(job_id, "2-40", {})
    with pytest.raises(SpecError, match="whole job"):
        manager.redo(job_id, "1", {"size.width": 128})
    with pytest.raises(SpecError):
        manager.redo(job_id, "x", {})
    assert manager.status(job_id)["state"] == "done"  # nothing was queued


def test_failing_backend_marks_job_failed_with_message(tmp_path: Path, demo_clip: Path) -> None:
    class Broken(PassthroughBackend):
        def img2img(self, request: Img2ImgRequest) -> Img2ImgResult:
            raise BackendError("the server refused the frame")

    manager = JobManager(tmp_path / "jobs", backend_factory=lambda spec, on_status: Broken(spec))
    try:
        job_id = manager.submit(make_spec(demo_clip, **{"source.end_frame": 2}))
        assert manager.wait_idle(WAIT)
        status = manager.status(job_id)
        assert status["state"] == "failed" and status["failed"] == 2
        assert "refused" in status["message"]
    finally:
        manager.close()
    assert JobManager(tmp_path / "jobs").status(job_id)["state"] == "failed"


def test_preview_renders_frames_like_the_job(manager: JobManager, demo_clip: Path) -> None:
    spec = make_spec(demo_clip, **{"source.start_frame": 2, "source.end_frame": 9, "coherence.mode": "independent"})
    result = manager.preview(spec, "0,3,6")
    assert result.frames == [0, 3, 6] and result.grid_path.parent.parent == manager.output_root / ".previews"
    grid = np.asarray(Image.open(result.grid_path).convert("RGB"))
    job_id = manager.submit(spec)
    assert manager.wait_idle(WAIT)
    root = manager.output_root / job_id
    top = HEADER_HEIGHT + 2 * 64  # the result row, below source and canny
    for n, index in enumerate(result.frames):
        # passthrough: the preview's result cell and the job's frame are the very same pixels
        cell = grid[top : top + 64, LABEL_WIDTH + n * 64 : LABEL_WIDTH + (n + 1) * 64]
        assert np.array_equal(cell, read_png(root / "out" / f"{index:06d}.png"))
    assert manager.preview_file(result.grid_path.parent.name, "preview.png") == result.grid_path
    assert [j["id"] for j in manager.list_jobs()] == [job_id]  # scratch previews are not jobs


def test_previews_waiting_are_limited(tmp_path: Path, demo_clip: Path, gate: Gate) -> None:
    manager = gated_manager(tmp_path, gate)
    try:
        waiting = [threading.Thread(target=manager.preview, args=(make_spec(demo_clip), "1")) for _ in range(2)]
        for thread in waiting:
            thread.start()
        assert gate.started.wait(WAIT)
        deadline = time.monotonic() + WAIT
        while manager._previews_waiting < 2 and time.monotonic() < deadline:  # the second one has queued
            time.sleep(0.01)
        with pytest.raises(QueueFullError, match="previews are already waiting"):
            manager.preview(make_spec(demo_clip), "1")
    finally:
        gate.open.set()
        for thread in waiting:
            thread.join(WAIT)
        manager.close()


def test_preview_refuses_while_a_job_renders(tmp_path: Path, demo_clip: Path, gate: Gate) -> None:
    manager = gated_manager(tmp_path, gate)
    try:
        manager.submit(make_spec(demo_clip, **{"source.end_frame": 1}))
        assert gate.started.wait(WAIT)
        with pytest.raises(JobStateError, match="rendering now"):
            manager.preview(make_spec(demo_clip))
    finally:
        gate.open.set()
        manager.close()


def test_canny_preview_matches_the_jobs_control_map(manager: JobManager, demo_clip: Path) -> None:
    spec = make_spec(
        demo_clip, **{"controlnet.low_threshold": 50, "controlnet.high_threshold": 120, "controlnet.blur": 3}
    )
    edges = manager.canny_preview(spec, 4)
    expected = canny_map(fit_frame(read_frame_at(demo_clip, 4), 64, 64, "crop"), 50, 120, 3)
    assert edges.shape == (64, 64, 3) and np.array_equal(edges, expected)
    with create_job(spec, manager.output_root / "check") as job:
        from vidstyle.job import prepare

        prepare(job)
        assert np.array_equal(edges, read_png(job.control_path(4)))
    with pytest.raises(UserInputError):
        manager.canny_preview(spec.with_overrides({"source.path": ""}), 0)


def test_file_path_serves_only_result_files(manager: JobManager, demo_clip: Path) -> None:
    job_id = manager.submit(make_spec(demo_clip, **{"source.end_frame": 2}))
    assert manager.wait_idle(WAIT)
    for name in ("job.toml", "ledger.sqlite", "out/000000.png", "../x", "report/../job.toml"):
        with pytest.raises(UserInputError):
            manager.file_path(job_id, name)
    for bad_id in ("..", "../jobs", "/etc", "", "a/b", "nope"):
        with pytest.raises(UnknownJobError):
            manager.status(bad_id)


def test_disk_jobs_get_states_from_their_ledger(tmp_path: Path, demo_clip: Path) -> None:
    root = tmp_path / "jobs"
    root.mkdir()
    create_job(make_spec(demo_clip), root / "never-started").close()
    with create_job(make_spec(demo_clip, **{"source.end_frame": 2}), root / "cli-done") as job:
        from vidstyle.render import run_job

        run_job(job)
    (root / "not-a-job").mkdir()
    manager = JobManager(root)
    try:
        states = {j["id"]: j["state"] for j in manager.list_jobs()}
        assert states == {"never-started": "interrupted", "cli-done": "done"}
        manager.resume("never-started")
        assert manager.wait_idle(WAIT)
        assert manager.status("never-started")["state"] == "done"
    finally:
        manager.close()


def test_job_names_are_safe_and_unique(manager: JobManager, demo_clip: Path) -> None:
    spec = make_spec(demo_clip, **{"source.end_frame": 1})
    assert manager.submit(spec, name="../../evil name") == "evil-name"
    assert manager.submit(spec, name="evil name") == "evil-name-2"
    assert manager.submit(spec).startswith("clip-")
    with pytest.raises(UserInputError):
        manager.submit(spec, name="../..")
    assert manager.wait_idle(WAIT)
    assert not (manager.output_root.parent / "evil name").exists()


def test_submit_rejects_a_missing_source_before_queueing(manager: JobManager, tmp_path: Path) -> None:
    with pytest.raises(UserInputError):
        manager.submit(make_spec(tmp_path / "missing.mp4"))
    assert manager.list_jobs() == []


def test_save_upload_keeps_the_name_inside_uploads(manager: JobManager, demo_clip: Path) -> None:
    with open(demo_clip, "rb") as stream:
        stored = manager.save_upload(stream, "../../My Dance!.mp4")
    assert stored.name == "My-Dance.mp4"
    assert stored.parent.parent == manager.output_root / "uploads"
    assert stored.read_bytes() == demo_clip.read_bytes()


def test_without_intermediate_frames_a_finished_job_keeps_only_results(tmp_path: Path, demo_clip: Path) -> None:
    manager = JobManager(tmp_path / "jobs", keep_intermediate=False)
    try:
        job_id = manager.submit(make_spec(demo_clip), name="lean")
        assert manager.wait_idle(WAIT)
        assert manager.status(job_id)["state"] == "done"
        reopened = JobManager(tmp_path / "jobs")  # state read back from the ledger on disk
        assert reopened.status(job_id)["state"] == "done"
        reopened.close()
        root = tmp_path / "jobs" / job_id
        assert not any((root / "src").iterdir()) and not any((root / "control").iterdir())
        assert len(list((root / "out").glob("*.png"))) == 6 and (root / "result.mp4").is_file()
        manager.redo(job_id, "1", {"sampling.denoise": 0.2})
        assert manager.wait_idle(WAIT)
        assert manager.status(job_id)["state"] == "done"
    finally:
        manager.close()
