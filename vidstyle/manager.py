"""JobManager: jobs of one output folder, rendered one at a time on a background thread.

The tab (WebUI or standalone) and the /vidstyle/v1 routes share one manager. GPU work is
serial, so one worker thread takes jobs (and previews) from a queue and runs them with the
engine's `render.run_job`; each job has its own CancelToken, and an `on_event` callback keeps
a live status that callers poll. Jobs found on disk (earlier runs, the CLI) are listed with
a state read from their ledger, so a restart forgets nothing.

A job's id is its folder name under `output_root`; ids are checked against a strict pattern
before they touch the file system, so no id can point outside that folder.
"""

from __future__ import annotations

import collections
import itertools
import logging
import queue
import re
import shutil
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import Future
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, BinaryIO

import numpy as np

from .backends import create_backend
from .backends.base import Backend, BackendFactory
from .control import canny_map
from .errors import Cancelled, JobStateError, UserInputError, VidstyleError
from .events import EventCallback, ProgressEvent, status_reporter
from .filenames import safe_name
from .job import (
    CheckedJob,
    Job,
    JobLockedError,
    check_new_job,
    create_job,
    drop_intermediates,
    locked_elsewhere,
    open_job,
    retarget,
)
from .ledger import Ledger
from .overrides import read_toml
from .render import CancelToken, parse_frame_list, preflight, run_job, schedule_redo
from .report_html import is_report_file
from .spec import JobSpec, build_spec, pop_stored_credentials
from .video import fit_frame, plan_selection, probe, read_frame_at

if TYPE_CHECKING:
    from .settings_preview import SettingsPreview

log = logging.getLogger(__name__)


STATES = ("queued", "preparing", "rendering", "finishing", "done", "failed", "cancelled", "interrupted")
LIVE_STATES = ("queued", "preparing", "rendering", "finishing")
# The only job files served to the tab and over HTTP; anything else in a job folder stays private.
RESULT_FILES = (
    "result.mp4",
    "compare.mp4",
    "report/contact_sheet.png",
    "report/report.md",
    "report/report.json",
    "report/index.html",
)
JOB_ID_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,99}$")
UPLOADS_DIR = "uploads"
PREVIEWS_DIR = ".previews"
KEEP_PREVIEWS = 5
MAX_WAITING_PREVIEWS = 2
PREVIEW_GRID_NAME = "preview"
PREVIEW_FILES = (f"{PREVIEW_GRID_NAME}.png", f"{PREVIEW_GRID_NAME}.html")
PREVIEW_ID_PATTERN = re.compile(r"^grid-\d{8}-\d{6}-\d{1,9}$")
RECENT_FRAMES = 24
_STAGE_STATE = {"prepare": "preparing", "preflight": "preparing", "render": "rendering", "finish": "finishing"}


class UnknownJobError(UserInputError):
    """No job of that id under the manager's output folder (HTTP 404)."""


class QueueFullError(JobStateError):
    """As many jobs are queued or rendering as the caller allows (HTTP 429)."""


@dataclass
class _Live:
    """What the worker knows about a job of this process while it is queued or running."""

    job_id: str
    cancel: CancelToken = field(default_factory=CancelToken)
    state: str = "queued"
    stage: str = ""
    frames: int = 0
    done: int = 0
    failed: int = 0
    fps: float | None = None
    eta_seconds: float | None = None
    message: str = "waiting for the worker"
    recent: collections.deque[str] = field(default_factory=lambda: collections.deque(maxlen=RECENT_FRAMES))
    started_at: float | None = None
    workers: list[dict[str, Any]] | None = None  # per-worker progress (Ray backend)
    # What the job reported that did not stop it (e.g. the audio was dropped while encoding).
    warnings: list[str] = field(default_factory=list)
    # A submitted job whose folder does not exist yet: the worker writes it only after the
    # backend's preflight passed, so a failed check leaves nothing behind.
    pending: CheckedJob | None = None


@dataclass
class _Task:
    kind: str  # "run" | "call" (run_exclusive: previews)
    job_id: str
    future: Future[Any] | None = None
    payload: dict[str, Any] = field(default_factory=dict)


def is_result_file(name: str) -> bool:
    """A job file clients may fetch: a result, or the HTML report and the PNGs it shows."""
    return name in RESULT_FILES or is_report_file(name)


def _scores_or_none(ledger: Ledger) -> dict[str, Any] | None:
    """The job's score summary for its status (vidstyle.scores.ledger_summary), None before any frame is scored."""
    from .scores import ledger_summary

    summary = ledger_summary(ledger)
    return summary if summary["scored"] else None


class JobManager:
    def __init__(
        self,
        output_root: Path,
        backend_factory: BackendFactory | None = None,
        keep_intermediate: bool = True,
        webui_auth: str | None = None,
    ) -> None:
        self.output_root = Path(output_root).resolve()
        try:
            self.output_root.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise UserInputError(f"Cannot create the output folder {self.output_root}: {exc.strerror}.") from None
        self.backend_factory = backend_factory
        # False: delete src/ and control/ after a finished job (they are rebuilt on redo).
        self.keep_intermediate = keep_intermediate
        self._webui_auth = webui_auth  # for webui_api jobs; never written into a job folder
        # Guards the fields below only; nothing slow (probing, file copies) runs while it is held,
        # because every status call needs it.
        self._lock = threading.RLock()
        self._live: dict[str, _Live] = {}
        # A job's state is its ledger and folder lock (see _disk_status); memory holds only what runs
        # here (_live) and the last status of jobs that ended before their folder was written,
        # which exist nowhere else (a failed preflight, a cancel while queued).
        self._unwritten: dict[str, _Live] = {}
        self._queue: queue.PriorityQueue[Any] = queue.PriorityQueue()
        self._order = itertools.count()
        self._busy_with: str | None = None
        self._previews_waiting = 0  # grid previews queued or rendering (preview)
        self._worker: threading.Thread | None = None
        self._closed = False

    # -- submitting ---------------------------------------------------------------------
    def submit(self, spec: JobSpec, name: str | None = None, max_queued: int | None = None) -> str:
        """Check the job (source, selection, folder) and queue it; returns the job id.

        The id is reserved under the lock; probing the source happens outside it. Nothing is
        written here: the worker creates the job folder once the backend's preflight passed.
        `max_queued`: refuse (QueueFullError) when that many jobs are queued or running.
        """
        with self._lock:
            self._check_room(max_queued)
            job_id = self._new_job_id(name or self._default_name(spec))
            live = self._live[job_id] = _Live(job_id, message="checking the source")
        try:
            checked = check_new_job(spec, self.output_root / job_id)
        except BaseException:
            with self._lock:
                self._live.pop(job_id, None)
            raise
        with self._lock:
            live.pending, live.message = checked, "waiting for the worker"
            self._unwritten.pop(job_id, None)
        self._enqueue(1, _Task("run", job_id))
        return job_id

    def resume(
        self, job_id: str, max_queued: int | None = None, overrides: dict[str, Any] | None = None
    ) -> dict[str, Any]:
        """Queue an interrupted, cancelled or failed job again; it continues where it stopped.

        `overrides` (the settings a redo may change) apply only to a job that has rendered no
        frame yet, e.g. to fix the LoRA name a failed preflight reported.
        """
        root = self._job_dir(job_id)
        if job_id not in self._live and locked_elsewhere(root):
            raise JobStateError(f"Job {job_id} is running in another process; wait for it or stop it there first.")
        status = self.status(job_id)  # reads the disk: not under the lock
        with self._lock:
            if status["state"] in LIVE_STATES or job_id in self._live:
                raise JobStateError(f"Job {job_id} is already {status['state']}; wait for it or cancel it first.")
            if status["state"] == "done":
                raise JobStateError(f"Job {job_id} is already done; use redo to render chosen frames again.")
            self._check_room(max_queued)
            self._live[job_id] = _Live(job_id)
        try:
            if overrides:
                with open_job(root) as job:
                    retarget(job, dict(overrides))
        except BaseException:
            with self._lock:
                self._live.pop(job_id, None)
            raise
        with self._lock:
            self._unwritten.pop(job_id, None)
        self._enqueue(1, _Task("run", job_id))
        return self.status(job_id)

    def redo(
        self, job_id: str, frames: str, overrides: dict[str, Any] | None = None, max_queued: int | None = None
    ) -> dict[str, Any]:
        """Mark frames like '10-20,45' for another attempt (earlier outputs kept) and queue the job."""
        with self._lock:
            root = self._job_dir(job_id)
            if job_id in self._live:
                raise JobStateError(
                    f"Job {job_id} is {self._live[job_id].state}; wait for it or cancel it before a redo."
                )
            self._check_room(max_queued)
            # Reserved while the frames are scheduled outside the lock (copies into history/).
            live = self._live[job_id] = _Live(job_id, message="scheduling the redo")
        try:
            with open_job(root) as job:
                if job.ledger.frame_count() == 0:
                    raise JobStateError(f"Job {job_id} has not finished preparing; resume it before redoing frames.")
                indices = parse_frame_list(frames, job.ledger.frame_count())
                # Later frames of a flow chain / keyframe segment start from these: they follow.
                indices = indices + schedule_redo(job, indices, dict(overrides or {}), followers=True)
        except BaseException:
            with self._lock:
                self._live.pop(job_id, None)
            raise
        with self._lock:
            live.message = f"re-rendering {len(indices)} frame(s)"
            self._unwritten.pop(job_id, None)
        self._enqueue(1, _Task("run", job_id))
        return self.status(job_id)

    def delete(self, job_id: str) -> dict[str, Any]:
        """Remove a job's folder, and the upload it was made from when no other job uses it.

        Refused while the job is queued or running here or in another process.
        """
        with self._lock:
            root = self._job_dir(job_id)
            if job_id in self._live:
                raise JobStateError(
                    f"Job {job_id} is {self._live[job_id].state}; cancel it and wait until it "
                    "has stopped before deleting it."
                )
            self._live[job_id] = _Live(job_id, state="deleting", message="deleting")  # no resume meanwhile
        try:
            if locked_elsewhere(root):
                raise JobStateError(f"Job {job_id} is running in another process; stop it there before deleting it.")
            upload = self._upload_folder(root)
            trash = root.with_name(f".deleting-{job_id}-{next(self._order)}")
            root.rename(trash)  # the job disappears at once; removing its files may take a while
            shutil.rmtree(trash, ignore_errors=True)
            if upload is not None and not self._jobs_using(upload):
                shutil.rmtree(upload, ignore_errors=True)
        except OSError as exc:
            raise JobStateError(f"Cannot delete job {job_id}: {exc.strerror or exc}.") from None
        finally:
            with self._lock:
                self._live.pop(job_id, None)
                self._unwritten.pop(job_id, None)
        return {"id": job_id, "deleted": True}

    def job_spec(self, job_id: str) -> JobSpec:
        """A job's saved spec (read without its lock: job.toml is replaced atomically)."""
        root = self._job_dir(job_id)
        data = read_toml(root / "job.toml", "job file")
        pop_stored_credentials(data)
        return build_spec(data, what=f"job file {root / 'job.toml'}")

    def selection_frames(self, spec: JobSpec) -> int:
        """How many frames a job of this spec will have (probes the source: call it without the lock)."""
        if not spec.source.path:
            raise UserInputError("No source video given; pass a video file or a folder of frames.")
        info = probe(spec.source.path, spec.source.sequence_fps)  # cached per file version
        return plan_selection(info, spec.source).frame_count

    def cancel(self, job_id: str) -> dict[str, Any]:
        """Stop a queued or rendering job; finished frames are kept and the job stays resumable."""
        with self._lock:
            live = self._live.get(job_id)
            if live is None or live.pending is None:  # a job not yet written has no folder
                self._job_dir(job_id)
            if live is None:
                raise JobStateError(f"Job {job_id} is not queued or rendering, so there is nothing to cancel.")
            live.cancel.cancel()
            live.message = "cancelling: finishing the frames in flight"
        return self.status(job_id)

    # -- status -------------------------------------------------------------------------
    def live_status(self, job_id: str) -> dict[str, Any] | None:
        """Status of a job queued or running in this process, from memory alone (None otherwise):
        what a client polls many times a second, answered without a thread or the disk."""
        with self._lock:
            live = self._live.get(job_id)
        return None if live is None else self._live_status(self.output_root / job_id, live)

    def status(self, job_id: str) -> dict[str, Any]:
        with self._lock:
            running = self._live.get(job_id)
            live = running or self._unwritten.get(job_id)
        if live is not None:
            root = self.output_root / self._checked_id(job_id)
            if running is not None or not (root / "job.toml").is_file():
                return self._live_status(root, live)
        return self._disk_status(self._job_dir(job_id))

    def list_jobs(self) -> list[dict[str, Any]]:
        """Every job under the output folder, newest first, with its state."""
        roots = [p for p in self.output_root.iterdir() if (p / "job.toml").is_file() and JOB_ID_PATTERN.match(p.name)]
        roots.sort(key=lambda p: p.stat().st_mtime, reverse=True)
        with self._lock:  # queued jobs (no folder yet) and jobs that failed before it was written
            unwritten = [
                job_id
                for job_id in [*self._live, *self._unwritten]
                if not (self.output_root / job_id / "job.toml").is_file()
            ]
        jobs = []
        for job_id in dict.fromkeys(reversed(unwritten)):
            try:
                jobs.append(self.status(job_id))
            except UnknownJobError:  # deleted or written meanwhile: listed below or gone
                pass
        for root in roots:
            try:
                jobs.append(self.status(root.name))
            except VidstyleError as err:  # a damaged folder is listed, not fatal to the list
                jobs.append({"id": root.name, "state": "failed", "message": str(err)})
        return jobs

    def file_path(self, job_id: str, name: str) -> Path:
        """Path of one of the job's result files (RESULT_FILES, or a PNG the HTML report shows); raises when absent."""
        root = self._job_dir(job_id)
        if not is_result_file(name):
            raise UserInputError(f"'{name}' is not a job result; ask for one of: {', '.join(RESULT_FILES)}.")
        path = root / name
        # A symlink planted in report/ must not lead out of the job folder.
        if not path.is_file() or not path.resolve().is_relative_to(root.resolve()):
            raise UnknownJobError(f"Job {job_id} has no {name} yet; it appears when the job finishes.")
        return path

    # -- previews -----------------------------------------------------------------------
    def preview(
        self,
        spec: JobSpec,
        frames: str = "auto",
        count: int = 4,
        run_frames: int | None = None,
    ) -> SettingsPreview:
        """The settings on a few frames (and a short coherence run) in one grid, under .previews/grid-*/.

        Rendered on the worker (never beside a job); at most MAX_WAITING_PREVIEWS wait at once, so
        clients cannot pile up work. The result's folder name is its id for `preview_file`.
        """
        from .settings_preview import render_settings_preview

        with self._lock:
            if self._previews_waiting >= MAX_WAITING_PREVIEWS:
                raise QueueFullError(
                    f"{self._previews_waiting} previews are already waiting; try again when they are done."
                )
            self._previews_waiting += 1

        def work(factory: BackendFactory | None, auth: str | None) -> Any:
            scratch_root = self.output_root / PREVIEWS_DIR
            scratch_root.mkdir(exist_ok=True)
            self._prune_previews(scratch_root)
            folder = scratch_root / f"grid-{time.strftime('%Y%m%d-%H%M%S')}-{next(self._order)}"
            try:
                return render_settings_preview(
                    spec,
                    folder,
                    PREVIEW_GRID_NAME,
                    frames=frames,
                    count=count,
                    run_frames=run_frames,
                    webui_auth=auth,
                    backend_factory=factory,
                )
            except BaseException:
                shutil.rmtree(folder, ignore_errors=True)
                raise

        try:
            preview: SettingsPreview = self.run_exclusive(work)
            return preview
        finally:
            with self._lock:
                self._previews_waiting -= 1

    def preview_file(self, preview_id: str, name: str) -> Path:
        """A file of a grid preview (its PNG or page) by the preview's id; nothing else under .previews/."""
        if not isinstance(preview_id, str) or not PREVIEW_ID_PATTERN.match(preview_id) or name not in PREVIEW_FILES:
            raise UnknownJobError(f"There is no preview file '{str(name)[:60]}' of '{str(preview_id)[:60]}'.")
        root = (self.output_root / PREVIEWS_DIR).resolve()
        path = root / preview_id / name
        if not path.is_file() or not path.resolve().is_relative_to(root):
            raise UnknownJobError(
                f"Preview {preview_id} is gone (only the newest {KEEP_PREVIEWS} are kept); preview again."
            )
        return path

    def run_exclusive(self, work: Callable[[BackendFactory | None, str | None], Any]) -> Any:
        """`work(backend_factory, webui_auth)` on the worker thread, so it never renders beside a job
        (e.g. the epoch preview of vidstyle.epoch_preview); refused while a job renders, like preview."""
        with self._lock:
            if self._busy_with is not None and not self._busy_with.startswith(PREVIEWS_DIR):
                raise JobStateError(f"Job {self._busy_with} is rendering now; preview when it finishes or cancel it.")
        future: Future[Any] = Future()
        self._enqueue(0, _Task("call", PREVIEWS_DIR, future, {"work": work}))
        return future.result()

    def canny_preview(self, spec: JobSpec, frame_index: int) -> np.ndarray:
        """Source frame `frame_index` fitted to the job size, through the job's canny settings."""
        if not spec.source.path:
            raise UserInputError("No source video given; upload a video or enter a path first.")
        info = probe(spec.source.path, spec.source.sequence_fps)  # cached per file version
        image = read_frame_at(spec.source.path, int(frame_index), info)
        fitted = fit_frame(image, spec.size.width, spec.size.height, spec.size.fit)
        cn = spec.controlnet
        return canny_map(fitted, cn.low_threshold, cn.high_threshold, cn.blur)

    def source_info(self, path: str, sequence_fps: float = 30.0) -> dict[str, Any]:
        """probe() as a JSON-friendly dict (frames, fps, duration, size) for sliders and clients."""
        if not path:
            raise UserInputError("No source video given; upload a video or enter a path first.")
        return probe(path, sequence_fps).as_dict()

    def save_upload(self, stream: BinaryIO, filename: str) -> Path:
        """Copy an uploaded video into output_root/uploads/<stamp>/ under its own (cleaned) name.

        Jobs read their source until they finish (and on resume), so they get a copy that
        gradio's temp-file cleanup or an HTTP client cannot take away.
        """
        stem = safe_name(Path(filename or "").stem, max_len=64) or "video"
        suffix = safe_name(Path(filename or "").suffix.lstrip("."), max_len=64) or "mp4"
        folder = self.output_root / UPLOADS_DIR / f"{time.strftime('%Y%m%d-%H%M%S')}-{next(self._order)}"
        target = folder / f"{stem}.{suffix}"
        tmp = folder / f".{stem}.{suffix}.part"
        try:
            folder.mkdir(parents=True)
            with open(tmp, "wb") as handle:
                shutil.copyfileobj(stream, handle, 1024 * 1024)
            tmp.replace(target)
        except OSError as exc:
            tmp.unlink(missing_ok=True)
            raise UserInputError(f"Cannot store the upload in {folder}: {exc.strerror}.") from None
        return target

    # -- lifecycle ----------------------------------------------------------------------
    def wait_idle(self, timeout: float | None = None) -> bool:
        """Block until no job is queued or running (tests, scripts); False on timeout."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            with self._lock:
                if not self._live and self._busy_with is None and self._queue.empty():
                    return True
            if deadline is not None and time.monotonic() > deadline:
                return False
            time.sleep(0.05)

    def close(self, cancel: bool = True) -> None:
        """Stop the worker; running jobs are cancelled (and stay resumable) when `cancel`."""
        with self._lock:
            self._closed = True
            if cancel:
                for live in self._live.values():
                    live.cancel.cancel()
        self._queue.put((99, next(self._order), None))
        if self._worker is not None:
            self._worker.join(timeout=120)

    # -- internals: ids and folders -----------------------------------------------------
    def _check_room(self, max_queued: int | None) -> None:
        if max_queued is not None and len(self._live) >= max_queued:
            raise QueueFullError(
                f"{len(self._live)} jobs are queued or rendering, as many as this server takes; "
                "submit again when one has finished."
            )

    def _source_of(self, root: Path) -> Path | None:
        try:
            path = read_toml(root / "job.toml", "job file").get("source", {}).get("path")
        except VidstyleError:
            return None
        return Path(path).resolve() if isinstance(path, str) and path else None

    def _upload_folder(self, root: Path) -> Path | None:
        """uploads/<stamp>/ when the job's source is a video uploaded to this manager."""
        source = self._source_of(root)
        uploads = (self.output_root / UPLOADS_DIR).resolve()
        if source is None or not source.is_relative_to(uploads) or source == uploads:
            return None
        return uploads / source.relative_to(uploads).parts[0]

    def _jobs_using(self, upload: Path) -> list[str]:
        using = []
        for root in self.output_root.iterdir():
            source = self._source_of(root) if (root / "job.toml").is_file() else None
            if source is not None and source.is_relative_to(upload):
                using.append(root.name)
        return using

    @staticmethod
    def _checked_id(job_id: str) -> str:
        if not isinstance(job_id, str) or not JOB_ID_PATTERN.match(job_id):
            raise UnknownJobError(f"'{job_id}' is not a job id; job ids are folder names like dance-20240101-120000.")
        return job_id

    def _job_dir(self, job_id: str) -> Path:
        root = self.output_root / self._checked_id(job_id)
        if not (root / "job.toml").is_file():
            raise UnknownJobError(f"There is no job '{job_id}' in {self.output_root}; list the jobs to see their ids.")
        return root

    def _default_name(self, spec: JobSpec) -> str:
        stem = safe_name(Path(spec.source.path).stem, max_len=64) if spec.source.path else ""
        return f"{stem or 'job'}-{time.strftime('%Y%m%d-%H%M%S')}"

    def _new_job_id(self, name: str) -> str:
        base = safe_name(name, max_len=64)
        if not base or not JOB_ID_PATTERN.match(base) or base in (UPLOADS_DIR,):
            raise UserInputError(f"'{name}' cannot be a job name; use letters, digits, '-', '_' or '.'.")
        candidate, n = base, 2
        while (self.output_root / candidate).exists() or candidate in self._live:
            candidate = f"{base}-{n}"
            n += 1
        return candidate

    # -- internals: status ----------------------------------------------------------------
    def _outputs(self, root: Path) -> list[str]:
        return [name for name in RESULT_FILES if (root / name).is_file()]

    def _live_status(self, root: Path, live: _Live) -> dict[str, Any]:
        return {
            "id": live.job_id,
            "state": live.state,
            "stage": live.stage,
            "frames": live.frames,
            "done": live.done,
            "failed": live.failed,
            "fps": live.fps,
            "eta_seconds": live.eta_seconds,
            "message": live.message,
            "latest_frame": live.recent[-1] if live.recent else None,
            "recent_frames": list(live.recent),
            "outputs": self._outputs(root),
            "path": str(root),
            "scores": None,  # per-frame scores exist once a job has finished (see status())
            "workers": live.workers,
            "warnings": list(live.warnings),
        }

    def _disk_status(self, root: Path) -> dict[str, Any]:
        """State of a job no worker of this process is running, from its ledger and files."""
        base: dict[str, Any] = {
            "id": root.name,
            "state": "interrupted",
            "stage": "",
            "frames": 0,
            "done": 0,
            "failed": 0,
            "fps": None,
            "eta_seconds": None,
            "message": "",
            "latest_frame": None,
            "recent_frames": [],
            "outputs": self._outputs(root),
            "path": str(root),
            "warnings": [],
        }
        ledger_path = root / "ledger.sqlite"
        if not ledger_path.is_file():
            base["message"] = "created but never started; resume it to render"
            return base
        ledger = Ledger(ledger_path)
        try:
            counts = ledger.counts()
            frames = ledger.frame_count()
            recorded = ledger.get_meta("manager_state")
            message = ledger.get_meta("manager_message", "") or ""
            if ledger.get_meta("manager_counts", counts) != counts:  # another process rendered since
                recorded, message = None, ""
            base["scores"] = _scores_or_none(ledger)
            if recorded is not None:
                base["warnings"] = list(ledger.get_meta("manager_warnings", []) or [])
        finally:
            ledger.close()
        recent = sorted((root / "out").glob("*.png"))[-RECENT_FRAMES:]
        base.update(
            frames=frames,
            done=counts["done"],
            failed=counts["failed"],
            message=message,
            recent_frames=[str(p) for p in recent],
            latest_frame=str(recent[-1]) if recent else None,
        )
        if locked_elsewhere(root):  # e.g. `vidstyle stylize` or `resume`: its frames appear here as they finish
            base["state"] = "rendering" if frames else "preparing"
            base["message"] = "running in another process; wait for it or stop it there"
            return base
        # Not the "prepared" flag: a finished job whose intermediate frames were dropped is still done.
        complete = frames > 0 and counts["done"] == frames and (root / "result.mp4").is_file()
        if complete and recorded != "running":
            base["state"] = "done"
        elif recorded in ("failed", "cancelled"):
            base["state"] = recorded
        elif counts["failed"]:
            base["state"] = "failed"
            base["message"] = message or f"{counts['failed']} frame(s) failed; resume to render them again"
        else:
            base["message"] = message if recorded != "running" else "stopped while running; resume to continue"
        return base

    # -- internals: the worker --------------------------------------------------------------
    def _enqueue(self, priority: int, task: _Task) -> None:
        with self._lock:
            if self._closed:
                raise JobStateError("The job manager is shut down; restart the UI or server.")
            if self._worker is None or not self._worker.is_alive():
                self._worker = threading.Thread(target=self._work, name="vidstyle-jobs", daemon=True)
                self._worker.start()
        self._queue.put((priority, next(self._order), task))

    def _work(self) -> None:
        while True:
            _, _, task = self._queue.get()
            if task is None:
                return
            with self._lock:
                self._busy_with = task.job_id
            try:
                if task.kind == "call":
                    self._run_call(task)
                else:
                    self._run(task.job_id)
            except BaseException:  # the worker must survive anything a job does
                log.exception("vidstyle worker: unexpected error in %s", task.job_id)
            finally:
                with self._lock:
                    self._busy_with = None

    def _set(self, live: _Live, **values: Any) -> None:
        with self._lock:
            for key, value in values.items():
                setattr(live, key, value)

    def _on_event(self, live: _Live) -> EventCallback:
        def handle(event: ProgressEvent) -> None:
            with self._lock:
                if event.stage in _STAGE_STATE and event.kind in ("stage", "frame"):
                    live.state = _STAGE_STATE[event.stage]
                    live.stage = event.stage
                if event.kind == "stage" and event.stage == "render":
                    live.frames, live.done = event.total, event.done
                if event.kind == "stage" and event.stage == "prepare" and event.total:
                    live.frames = event.total
                if event.kind == "frame":
                    live.done, live.frames = event.done, event.total
                    live.fps, live.eta_seconds = event.fps, event.eta_seconds
                    if event.workers is not None:
                        live.workers = event.workers
                    if event.image_path:
                        live.recent.append(event.image_path)
                if event.kind == "progress":
                    live.eta_seconds = event.eta_seconds
                if event.kind == "failed":
                    live.failed += 1
                if event.kind == "warning" and event.message not in live.warnings:
                    live.warnings.append(event.message)
                if event.message and not live.cancel.cancelled:
                    live.message = event.message

        return handle

    def _run(self, job_id: str) -> None:
        with self._lock:
            live = self._live.get(job_id)
        if live is None:
            return
        self._set(live, state="preparing", message="opening the job", started_at=time.time())
        if live.pending is not None:
            self._run_new(job_id, live, live.pending)
            return
        try:
            with open_job(self.output_root / job_id) as job:
                if self._webui_auth:
                    job.webui_auth = self._webui_auth
                if live.cancel.cancelled:
                    state, message = "cancelled", "cancelled before it started; resume to render it"
                else:
                    self._record(job, "running", "")
                    state, message = self._render(job, live)
                self._record(job, state, message, live.warnings)
        except JobLockedError:  # another process took the job meanwhile: the disk tells its state
            with self._lock:
                self._live.pop(job_id, None)
                self._unwritten.pop(job_id, None)
            return
        except VidstyleError as err:  # opening failed (damaged folder)
            state, message = "failed", str(err)
        self._finish(job_id, live, state, message)

    def _run_new(self, job_id: str, live: _Live, checked: CheckedJob) -> None:
        """A submitted job: preflight, then write its folder and render it."""
        on_event = self._on_event(live)
        backend: Backend | None = None
        try:
            if live.cancel.cancelled:
                raise Cancelled("Cancelled before it started.")
            backend = self._backend(checked.spec, on_event)
            preflight(backend, on_event)
            if live.cancel.cancelled:
                raise Cancelled("Cancelled before it started.")
            job = create_job(checked.spec, self.output_root / job_id, info=checked.info)
        except Exception as exc:  # nothing was written: the job lives on only in this process's status
            if backend is not None:
                backend.close()
            state = "cancelled" if isinstance(exc, Cancelled) else "failed"
            if not isinstance(exc, VidstyleError):
                log.exception("vidstyle: job %s failed before it started", job_id)
            message = str(exc) if isinstance(exc, VidstyleError) else f"Unexpected error ({type(exc).__name__}: {exc})."
            self._finish(job_id, live, state, f"{message} Nothing was written; submit the job again.")
            return
        with self._lock:
            live.pending = None
        try:
            with job:
                if self._webui_auth:
                    job.webui_auth = self._webui_auth
                self._record(job, "running", "")
                state, message = self._render(job, live, backend)
                self._record(job, state, message, live.warnings)
        finally:
            backend.close()
        self._finish(job_id, live, state, message)

    def _backend(self, spec: JobSpec, on_event: EventCallback) -> Backend:
        on_status = status_reporter(on_event)
        if self.backend_factory is not None:
            return self.backend_factory(spec, on_status)
        return create_backend(spec, on_status, webui_auth=self._webui_auth)

    def _render(self, job: Job, live: _Live, preflighted: Backend | None = None) -> tuple[str, str]:
        """Run the job; `preflighted`: a backend the caller made and checked (and will close)."""
        on_event = self._on_event(live)
        backend = preflighted
        try:
            if backend is None and self.backend_factory is not None:
                backend = self.backend_factory(job.spec, status_reporter(on_event))
            run_job(job, backend=backend, on_event=on_event, cancel=live.cancel, preflighted=preflighted is not None)
            if not self.keep_intermediate:
                drop_intermediates(job)
            return "done", f"done: {job.result_path}"
        except Cancelled as err:
            return "cancelled", str(err).replace("`vidstyle resume`", "Resume")
        except VidstyleError as err:
            return "failed", str(err)
        except Exception as exc:  # a bug or a library error we did not translate: keep the job resumable
            log.exception("vidstyle: job %s failed", job.root.name)
            return "failed", f"Unexpected error ({type(exc).__name__}: {exc}); see the log, then resume the job."
        finally:
            if backend is not None and preflighted is None:
                backend.close()

    def _record(self, job: Job, state: str, message: str, warnings: Sequence[str] = ()) -> None:
        # The frame counts date the record: once another process renders, they differ and
        # the record is no longer the job's state (see _disk_status).
        job.ledger.set_metas(
            {
                "manager_state": state,
                "manager_message": message,
                "manager_counts": job.ledger.counts(),
                "manager_warnings": list(warnings),
            }
        )

    def _finish(self, job_id: str, live: _Live, state: str, message: str) -> None:
        """The job stopped running here: from now on its ledger tells its state (see _record),
        unless it never got a folder."""
        written = (self.output_root / job_id / "job.toml").is_file()
        with self._lock:
            live.state, live.message, live.eta_seconds = state, message, None
            self._live.pop(job_id, None)
            if not written:
                self._unwritten[job_id] = live

    def _run_call(self, task: _Task) -> None:
        assert task.future is not None
        if not task.future.set_running_or_notify_cancel():
            return
        try:
            task.future.set_result(task.payload["work"](self.backend_factory, self._webui_auth))
        except BaseException as exc:
            task.future.set_exception(exc)

    def _prune_previews(self, scratch_root: Path) -> None:
        """Scratch previews are ours alone; keep the newest few so the folder does not grow."""
        old = sorted((p for p in scratch_root.iterdir() if p.is_dir()), key=lambda p: p.stat().st_mtime)
        for path in old[:-KEEP_PREVIEWS] if len(old) > KEEP_PREVIEWS else []:
            shutil.rmtree(path, ignore_errors=True)
