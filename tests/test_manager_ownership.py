"""The job manager (server and tab) and job folders other processes work on (issue 10 item 8),
and preflight before the manager writes a job folder (issue 16 item 1, issue 9 item 7).

Runs on the passthrough backend (no torch), so it also runs under the WebUI's pins.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from vidstyle.backends.base import Img2ImgRequest, Img2ImgResult
from vidstyle.backends.passthrough import PassthroughBackend
from vidstyle.errors import BackendError, JobStateError, PreflightError
from vidstyle.job import create_job, open_job
from vidstyle.manager import JobManager
from vidstyle.render import run_job
from vidstyle.spec import JobSpec, load_spec

REPO = Path(__file__).resolve().parents[1]
WAIT = 120.0
GOOD_LORA = "zhongli"

# Opens a job as `vidstyle resume` does and holds it until the test removes the flag file.
CLI_HOLDER = r"""
import sys, time
from pathlib import Path
from vidstyle.job import open_job

job = open_job(Path(sys.argv[1]))
flag = Path(sys.argv[2])
flag.write_text("held")
while flag.exists():
    time.sleep(0.01)
job.close()
"""


def make_spec(clip: Path, **extra: object) -> JobSpec:
    overrides = {
        "source.path": str(clip),
        "size.width": 64,
        "size.height": 64,
        "backend.kind": "passthrough",
        "sampling.seed": 7,
        "source.end_frame": 4,
    }
    overrides.update(extra)
    return load_spec("anime-canny-sd15", overrides)


class LoraCheckingBackend(PassthroughBackend):
    """Passthrough whose preflight knows one LoRA, like a WebUI with one file in models/Lora."""

    preflights = 0

    def preflight(self) -> None:
        LoraCheckingBackend.preflights += 1
        missing = [lora.name for lora in self.spec.model.loras if lora.name != GOOD_LORA]
        if missing:
            raise PreflightError(f"LoRA '{missing[0]}' is not on this server; fix its name.")


class FailingBackend(PassthroughBackend):
    def img2img(self, request: Img2ImgRequest) -> Img2ImgResult:
        raise BackendError("the GPU fell over")


def wait_state(manager: JobManager, job_id: str, states: tuple) -> dict:
    deadline = time.monotonic() + WAIT
    while time.monotonic() < deadline:
        status = manager.status(job_id)
        if status["state"] in states:
            return status
        time.sleep(0.02)
    raise AssertionError(f"job {job_id} never reached {states}: {manager.status(job_id)}")


@pytest.fixture
def checking_manager(tmp_path: Path) -> Iterator[JobManager]:
    mgr = JobManager(tmp_path / "jobs", backend_factory=lambda spec, on_status: LoraCheckingBackend(spec))
    yield mgr
    mgr.close()


def test_a_failed_preflight_writes_no_job_folder(checking_manager: JobManager, demo_clip: Path) -> None:
    typo = make_spec(demo_clip, **{"model.loras": [{"name": "zhongly", "weight": 0.8}]})
    job_id = checking_manager.submit(typo, name="dance")
    assert checking_manager.wait_idle(WAIT)
    status = checking_manager.status(job_id)
    assert status["state"] == "failed" and "zhongly" in status["message"]
    assert not (checking_manager.output_root / job_id).exists()
    assert [job["id"] for job in checking_manager.list_jobs()] == [job_id]
    # the corrected submit under the same name renders
    fixed = make_spec(demo_clip, **{"model.loras": [{"name": GOOD_LORA, "weight": 0.8}]})
    assert checking_manager.submit(fixed, name="dance") == job_id
    assert checking_manager.wait_idle(WAIT)
    assert checking_manager.status(job_id)["state"] == "done"
    assert LoraCheckingBackend.preflights >= 2


def test_resume_takes_the_fix_for_a_job_without_rendered_frames(checking_manager: JobManager, demo_clip: Path) -> None:
    root = checking_manager.output_root / "typo"
    create_job(make_spec(demo_clip, **{"model.loras": [{"name": "zhongly", "weight": 0.8}]}), root).close()
    checking_manager.resume("typo")
    assert checking_manager.wait_idle(WAIT)
    assert checking_manager.status("typo")["state"] == "failed"
    assert list((root / "src").glob("*.png")) == []  # preflight came before decoding
    checking_manager.resume("typo", overrides={"model.loras": [{"name": GOOD_LORA, "weight": 0.8}]})
    assert checking_manager.wait_idle(WAIT)
    assert checking_manager.status("typo")["state"] == "done"
    with pytest.raises(Exception, match="redo"):
        checking_manager.resume("typo", overrides={"sampling.denoise": 0.2})


def _env() -> dict:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(REPO), env.get("PYTHONPATH", "")])
    return env


def test_a_job_the_cli_runs_shows_as_running_elsewhere(tmp_path: Path, demo_clip: Path) -> None:
    manager = JobManager(tmp_path / "jobs")
    root = manager.output_root / "cli-job"
    create_job(make_spec(demo_clip), root).close()
    flag = tmp_path / "held"
    holder = subprocess.Popen([sys.executable, "-c", CLI_HOLDER, str(root), str(flag)], env=_env())
    try:
        deadline = time.monotonic() + WAIT
        while not flag.exists():
            assert time.monotonic() < deadline and holder.poll() is None, "the CLI stand-in never opened the job"
            time.sleep(0.01)
        status = manager.status("cli-job")
        assert status["state"] in ("preparing", "rendering")
        assert "running in another process" in status["message"]
        assert "running in another process" in manager.list_jobs()[0]["message"]
        with pytest.raises(JobStateError, match="running in another process"):
            manager.resume("cli-job")
        assert manager.status("cli-job")["state"] in ("preparing", "rendering")  # nothing frozen as failed
    finally:
        flag.unlink(missing_ok=True)
        holder.wait(timeout=WAIT)
        manager.close()
    assert manager.status("cli-job")["state"] == "interrupted"


def test_a_stale_failure_never_hides_what_the_disk_says(tmp_path: Path, demo_clip: Path) -> None:
    manager = JobManager(tmp_path / "jobs", backend_factory=lambda spec, on_status: FailingBackend(spec))
    try:
        job_id = manager.submit(make_spec(demo_clip), name="flaky")
        assert manager.wait_idle(WAIT)
        assert manager.status(job_id)["state"] == "failed"
        with open_job(manager.output_root / job_id) as job:  # the user resumes it with the CLI
            run_job(job)
        status = manager.status(job_id)
        assert status["state"] == "done", status
        assert status["done"] == status["frames"] == 4
    finally:
        manager.close()


def test_a_stale_failure_on_disk_gives_way_to_later_work(tmp_path: Path, demo_clip: Path) -> None:
    """The failure a server recorded is not the job's state once the CLI rendered more of it."""
    manager = JobManager(tmp_path / "jobs", backend_factory=lambda spec, on_status: FailingBackend(spec))
    job_id = manager.submit(make_spec(demo_clip), name="flaky")
    assert manager.wait_idle(WAIT)
    manager.close()
    from vidstyle.errors import Cancelled
    from vidstyle.render import CancelToken

    cancel = CancelToken()
    with open_job(tmp_path / "jobs" / job_id) as job:  # the CLI renders a frame, then Ctrl-C
        with pytest.raises(Cancelled):
            run_job(job, cancel=cancel, on_event=lambda event: cancel.cancel() if event.kind == "frame" else None)
    restarted = JobManager(tmp_path / "jobs")  # the server after a restart reads only the disk
    status = restarted.status(job_id)
    assert status["done"] >= 1, status
    # what the ledger says now (frames still marked failed are to render), not the old record
    assert "GPU fell over" not in status["message"]
    assert status["state"] == ("failed" if status["failed"] else "interrupted"), status
    restarted.close()
