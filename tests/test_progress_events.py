"""The one progress event (vidstyle/events.py): encoding reports progress and warnings through it,
and the Backend protocol declares frame-level progress (backends/base.py)."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from vidstyle.backends.base import Img2ImgRequest, Img2ImgResult, renders_at_once, set_frame_progress
from vidstyle.backends.passthrough import PassthroughBackend
from vidstyle.cli import ProgressPrinter, main
from vidstyle.events import ProgressEvent
from vidstyle.job import create_job, prepare
from vidstyle.manager import JobManager
from vidstyle.outputs import write_outputs
from vidstyle.render import render_pending, run_job
from vidstyle.spec import JobSpec, load_spec

DAMAGED = "damaged or unreadable"


def _spec(clip: Path) -> JobSpec:
    return load_spec(
        "anime-canny-sd15",
        {
            "source.path": str(clip),
            "size.width": 64,
            "size.height": 64,
            "backend.kind": "passthrough",
            "sampling.seed": 7,
            "source.end_frame": 4,
            "coherence.mode": "independent",
            "repair.enabled": False,
        },
    )


def _damage(clip: Path) -> None:
    """The source's audio cannot be read any more: the frames were decoded already, so only encoding notices."""
    clip.write_bytes(b"not a video any more" * 64)


@pytest.fixture
def clip(tmp_path: Path, demo_clip: Path) -> Path:
    copy = tmp_path / "source.mp4"
    shutil.copyfile(demo_clip, copy)
    return copy


def test_encoding_reports_progress_and_the_dropped_audio(tmp_path: Path, clip: Path) -> None:
    events: list[ProgressEvent] = []
    with create_job(_spec(clip), tmp_path / "job") as job:
        prepare(job)
        render_pending(job, PassthroughBackend(job.spec))
        _damage(clip)
        report = write_outputs(job, events.append)
    encoding = [(e.message, e.done, e.total) for e in events if e.kind == "progress"]
    assert encoding == [("encoding result.mp4", n, 4) for n in range(1, 5)] + [
        ("encoding compare.mp4", n, 4) for n in range(1, 5)
    ]
    warnings = [e.message for e in events if e.kind == "warning"]
    assert len(warnings) == 1 and warnings[0].startswith("result.mp4: ") and DAMAGED in warnings[0]
    assert DAMAGED in report["audio"]  # the report says the same


def test_cli_prints_the_encoding_warning(tmp_path: Path, clip: Path, capsys: pytest.CaptureFixture) -> None:
    with create_job(_spec(clip), tmp_path / "job") as job:
        run_job(job, backend=PassthroughBackend(job.spec), finish=False)
    _damage(clip)
    assert main(["resume", str(tmp_path / "job")]) == 0
    err = capsys.readouterr().err
    assert "warning: result.mp4: " in err and DAMAGED in err


def test_quiet_printer_prints_nothing(capsys: pytest.CaptureFixture) -> None:
    ProgressPrinter(quiet=True)(ProgressEvent("warning", "finish", message="audio dropped"))
    assert capsys.readouterr() == ("", "")


class _DamagesSource(PassthroughBackend):
    """Damages the source while rendering frame 0: after prepare, before encoding."""

    def __init__(self, spec: JobSpec, clip: Path) -> None:
        super().__init__(spec)
        self.clip = clip

    def img2img(self, request: Img2ImgRequest) -> Img2ImgResult:
        if request.frame_index == 0:
            _damage(self.clip)
        return super().img2img(request)


def test_api_status_shows_the_encoding_warning(tmp_path: Path, clip: Path) -> None:
    manager = JobManager(tmp_path / "jobs", backend_factory=lambda spec, on_status: _DamagesSource(spec, clip))
    try:
        job_id = manager.submit(_spec(clip), name="silent")
        assert manager.wait_idle(120.0)
        status = manager.status(job_id)
        assert status["state"] == "done", status
        assert len(status["warnings"]) == 1 and DAMAGED in status["warnings"][0]
    finally:
        manager.close()
    # Another process (a new manager) reads the same warning from the ledger.
    again = JobManager(tmp_path / "jobs")
    try:
        status = again.status("silent")
        assert status["state"] == "done" and DAMAGED in status["warnings"][0]
    finally:
        again.close()


# -- frame-level progress in the Backend protocol ------------------------------------------------


class _WithProgress(PassthroughBackend):
    on_progress = None


def test_frame_progress_goes_only_to_backends_that_declare_it(demo_clip: Path) -> None:
    spec = _spec(demo_clip)
    plain, reporting = PassthroughBackend(spec), _WithProgress(spec)
    seen: list[tuple] = []

    def callback(fraction: float, eta: float | None) -> None:
        seen.append((fraction, eta))

    assert set_frame_progress(plain, callback) is False and not hasattr(plain, "on_progress")
    assert set_frame_progress(reporting, callback) is True
    assert reporting.on_progress is not None
    reporting.on_progress(0.5, 3.0)
    assert seen == [(0.5, 3.0)]


def test_renders_at_once_defaults_to_concurrency(demo_clip: Path) -> None:
    backend = PassthroughBackend(_spec(demo_clip))
    assert renders_at_once(backend) == backend.concurrency
    backend.renders_at_once = 1  # type: ignore[attr-defined]  # a WebUI queues the next frame behind this one
    backend.concurrency = 3
    assert renders_at_once(backend) == 1


# -- job state: the ledger and the folder lock, not this process's memory ---------------------------


def test_a_finished_jobs_state_is_read_from_its_ledger(tmp_path: Path, clip: Path) -> None:
    manager = JobManager(tmp_path / "jobs")
    try:
        job_id = manager.submit(_spec(clip), name="ledger")
        assert manager.wait_idle(120.0) and manager.status(job_id)["state"] == "done"
        # Another process finished a redo of the job meanwhile and recorded its own outcome.
        from vidstyle.job import open_job

        with open_job(tmp_path / "jobs" / job_id) as job:
            job.ledger.set_metas(
                {
                    "manager_state": "done",
                    "manager_message": "done again by another process",
                    "manager_counts": job.ledger.counts(),
                    "manager_warnings": [],
                }
            )
        status = manager.status(job_id)
        assert status["state"] == "done" and status["message"] == "done again by another process"
        # While another process holds the job, that is its state here too.
        with open_job(tmp_path / "jobs" / job_id):
            assert manager.status(job_id)["message"] == "running in another process; wait for it or stop it there"
    finally:
        manager.close()


def test_the_tabs_status_box_shows_warnings_escaped() -> None:
    from vidstyle.tab_status import status_html

    box = status_html({"id": "a", "state": "done", "warnings": ["result.mp4: audio <track> dropped"]})
    assert "Warning: result.mp4: audio &lt;track&gt; dropped" in box
    assert "Warning" not in status_html({"id": "a", "state": "done", "warnings": []})
