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
import functools
import itertools
import logging
import queue
import re
import shutil
import threading
import time
from concurrent.futures import Future
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO, Callable, Deque, Dict, List, Optional

import numpy as np

from .backends.base import Backend, StatusCallback
from .control import canny_map
from .errors import Cancelled, JobStateError, UserInputError, VidstyleError
from .imageio import write_png
from .job import Job, create_job, drop_intermediates, open_job
from .ledger import Ledger
from .render import CancelToken, RenderEvent, parse_frame_list, run_job, schedule_redo
from .spec import JobSpec
from .video import VideoInfo, fit_frame, plan_selection, probe, read_frame_at, read_frame_at_time

log = logging.getLogger(__name__)

BackendFactory = Callable[[JobSpec, Optional[StatusCallback]], Backend]

STATES = ("queued", "preparing", "rendering", "finishing", "done", "failed", "cancelled", "interrupted")
LIVE_STATES = ("queued", "preparing", "rendering", "finishing")
# The only job files served to the tab and over HTTP; anything else in a job folder stays private.
RESULT_FILES = ("result.mp4", "compare.mp4", "report/contact_sheet.png", "report/report.md", "report/report.json")
JOB_ID_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,99}$")
UPLOADS_DIR = "uploads"
PREVIEWS_DIR = ".previews"
KEEP_PREVIEWS = 5
RECENT_FRAMES = 24
_STAGE_STATE = {"prepare": "preparing", "preflight": "preparing", "render": "rendering", "finish": "finishing"}


class UnknownJobError(UserInputError):
    """No job of that id under the manager's output folder (HTTP 404)."""


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
    fps: Optional[float] = None
    eta_seconds: Optional[float] = None
    message: str = "waiting for the worker"
    recent: Deque[str] = field(default_factory=lambda: collections.deque(maxlen=RECENT_FRAMES))
    started_at: Optional[float] = None


@dataclass
class _Task:
    kind: str  # "run" | "preview"
    job_id: str
    future: Optional[Future] = None
    payload: Dict[str, Any] = field(default_factory=dict)


def safe_name(text: str) -> str:
    """A folder-name-safe slug of `text` ('' when nothing usable is left)."""
    slug = re.sub(r"[^A-Za-z0-9._-]+", "-", text.strip()).strip("-._")
    return slug[:64]


@functools.lru_cache(maxsize=16)
def _probe_cached(path: str, sequence_fps: float, mtime_ns: int, size: int) -> VideoInfo:
    return probe(path, sequence_fps=sequence_fps)


def probe_once(path: str, sequence_fps: float = 30.0) -> VideoInfo:
    """probe(), remembered per file version: the canny slider asks for the same file many times."""
    try:
        stat = Path(path).stat()
    except OSError:
        return probe(path, sequence_fps=sequence_fps)  # raises the one-sentence MediaError
    return _probe_cached(str(path), float(sequence_fps), stat.st_mtime_ns, stat.st_size)


def preview_positions(frame_count: int, count: int = 3) -> List[int]:
    """First, middle(s) and last selection index, without duplicates."""
    if frame_count <= 0:
        return []
    count = max(1, min(count, frame_count))
    if count == 1:
        return [0]
    return sorted({round(i * (frame_count - 1) / (count - 1)) for i in range(count)})


class JobManager:
    def __init__(
        self, output_root: Path, backend_factory: Optional[BackendFactory] = None, keep_intermediate: bool = True
    ) -> None:
        self.output_root = Path(output_root).resolve()
        try:
            self.output_root.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise UserInputError(f"Cannot create the output folder {self.output_root}: {exc.strerror}.") from None
        self.backend_factory = backend_factory
        # False: delete src/ and control/ after a finished job (they are rebuilt on redo).
        self.keep_intermediate = keep_intermediate
        self._lock = threading.RLock()
        self._live: Dict[str, _Live] = {}
        self._finished: Dict[str, _Live] = {}  # last status of jobs this process ran (cancelled jobs keep theirs)
        self._queue: "queue.PriorityQueue[Any]" = queue.PriorityQueue()
        self._order = itertools.count()
        self._busy_with: Optional[str] = None
        self._worker: Optional[threading.Thread] = None
        self._closed = False

    # -- submitting ---------------------------------------------------------------------
    def submit(self, spec: JobSpec, name: Optional[str] = None) -> str:
        """Create the job folder (validates the source now) and queue the render; returns the job id."""
        with self._lock:
            job_id = self._new_job_id(name or self._default_name(spec))
            job = create_job(spec, self.output_root / job_id)
            job.close()  # the worker thread opens it again: SQLite connections stay in their thread
            self._live[job_id] = _Live(job_id)
            self._finished.pop(job_id, None)
        self._enqueue(1, _Task("run", job_id))
        return job_id

    def resume(self, job_id: str) -> Dict[str, Any]:
        """Queue an interrupted, cancelled or failed job again; it continues where it stopped."""
        with self._lock:
            status = self.status(job_id)
            if status["state"] in LIVE_STATES:
                raise JobStateError(f"Job {job_id} is already {status['state']}; wait for it or cancel it first.")
            if status["state"] == "done":
                raise JobStateError(f"Job {job_id} is already done; use redo to render chosen frames again.")
            self._live[job_id] = _Live(job_id)
            self._finished.pop(job_id, None)
        self._enqueue(1, _Task("run", job_id))
        return self.status(job_id)

    def redo(self, job_id: str, frames: str, overrides: Optional[Dict[str, Any]] = None) -> Dict[str, Any]:
        """Mark frames like '10-20,45' for another attempt (earlier outputs kept) and queue the job."""
        with self._lock:
            root = self._job_dir(job_id)
            if job_id in self._live:
                raise JobStateError(f"Job {job_id} is {self._live[job_id].state}; wait for it or cancel it before a redo.")
            with open_job(root) as job:
                if job.ledger.frame_count() == 0:
                    raise JobStateError(f"Job {job_id} has not finished preparing; resume it before redoing frames.")
                indices = parse_frame_list(frames, job.ledger.frame_count())
                schedule_redo(job, indices, dict(overrides or {}))
            self._live[job_id] = _Live(job_id, message=f"re-rendering {len(indices)} frame(s)")
            self._finished.pop(job_id, None)
        self._enqueue(1, _Task("run", job_id))
        return self.status(job_id)

    def cancel(self, job_id: str) -> Dict[str, Any]:
        """Stop a queued or rendering job; finished frames are kept and the job stays resumable."""
        with self._lock:
            self._job_dir(job_id)
            live = self._live.get(job_id)
            if live is None:
                raise JobStateError(f"Job {job_id} is not queued or rendering, so there is nothing to cancel.")
            live.cancel.cancel()
            live.message = "cancelling: finishing the frames in flight"
        return self.status(job_id)

    # -- status -------------------------------------------------------------------------
    def status(self, job_id: str) -> Dict[str, Any]:
        root = self._job_dir(job_id)
        with self._lock:
            live = self._live.get(job_id) or self._finished.get(job_id)
            if live is not None:
                return self._live_status(root, live)
        return self._disk_status(root)

    def list_jobs(self) -> List[Dict[str, Any]]:
        """Every job under the output folder, newest first, with its state."""
        roots = [p for p in self.output_root.iterdir() if (p / "job.toml").is_file() and JOB_ID_PATTERN.match(p.name)]
        roots.sort(key=lambda p: p.stat().st_mtime, reverse=True)
        jobs = []
        for root in roots:
            try:
                jobs.append(self.status(root.name))
            except VidstyleError as err:  # a damaged folder is listed, not fatal to the list
                jobs.append({"id": root.name, "state": "failed", "message": str(err)})
        return jobs

    def file_path(self, job_id: str, name: str) -> Path:
        """Path of one of the job's result files (RESULT_FILES only); raises when absent."""
        root = self._job_dir(job_id)
        if name not in RESULT_FILES:
            raise UserInputError(f"'{name}' is not a job result; ask for one of: {', '.join(RESULT_FILES)}.")
        path = root / name
        if not path.is_file():
            raise UnknownJobError(f"Job {job_id} has no {name} yet; it appears when the job finishes.")
        return path

    # -- previews -----------------------------------------------------------------------
    def preview(self, spec: JobSpec, count: int = 3) -> List[Path]:
        """Render the first, middle and last frame of the selection with the job's settings.

        Runs on the worker (GPU work stays serial) in a scratch job under .previews/; the
        returned PNGs are named frame_NNNNNN.png after their index in the selection.
        """
        with self._lock:
            if self._busy_with is not None and not self._busy_with.startswith(PREVIEWS_DIR):
                raise JobStateError(f"Job {self._busy_with} is rendering now; preview when it finishes or cancel it.")
        future: Future = Future()
        self._enqueue(0, _Task("preview", PREVIEWS_DIR, future, {"spec": spec, "count": count}))
        return future.result()

    def canny_preview(self, spec: JobSpec, frame_index: int) -> np.ndarray:
        """Source frame `frame_index` fitted to the job size, through the job's canny settings."""
        if not spec.source.path:
            raise UserInputError("No source video given; upload a video or enter a path first.")
        info = probe_once(spec.source.path, spec.source.sequence_fps)
        image = read_frame_at(spec.source.path, int(frame_index), info)
        fitted = fit_frame(image, spec.size.width, spec.size.height, spec.size.fit)
        cn = spec.controlnet
        return canny_map(fitted, cn.low_threshold, cn.high_threshold, cn.blur)

    def source_info(self, path: str, sequence_fps: float = 30.0) -> Dict[str, Any]:
        """probe() as a JSON-friendly dict (frames, fps, duration, size) for sliders and clients."""
        if not path:
            raise UserInputError("No source video given; upload a video or enter a path first.")
        return probe_once(path, sequence_fps).as_dict()

    def save_upload(self, stream: BinaryIO, filename: str) -> Path:
        """Copy an uploaded video into output_root/uploads/<stamp>/ under its own (cleaned) name.

        Jobs read their source until they finish (and on resume), so they get a copy that
        gradio's temp-file cleanup or an HTTP client cannot take away.
        """
        stem = safe_name(Path(filename or "").stem) or "video"
        suffix = safe_name(Path(filename or "").suffix.lstrip(".")) or "mp4"
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
    def wait_idle(self, timeout: Optional[float] = None) -> bool:
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
    def _job_dir(self, job_id: str) -> Path:
        if not isinstance(job_id, str) or not JOB_ID_PATTERN.match(job_id):
            raise UnknownJobError(f"'{job_id}' is not a job id; job ids are folder names like dance-20240101-120000.")
        root = self.output_root / job_id
        if not (root / "job.toml").is_file():
            raise UnknownJobError(f"There is no job '{job_id}' in {self.output_root}; list the jobs to see their ids.")
        return root

    def _default_name(self, spec: JobSpec) -> str:
        stem = safe_name(Path(spec.source.path).stem) if spec.source.path else ""
        return f"{stem or 'job'}-{time.strftime('%Y%m%d-%H%M%S')}"

    def _new_job_id(self, name: str) -> str:
        base = safe_name(name)
        if not base or not JOB_ID_PATTERN.match(base) or base in (UPLOADS_DIR,):
            raise UserInputError(f"'{name}' cannot be a job name; use letters, digits, '-', '_' or '.'.")
        candidate, n = base, 2
        while (self.output_root / candidate).exists() or candidate in self._live:
            candidate = f"{base}-{n}"
            n += 1
        return candidate

    # -- internals: status ----------------------------------------------------------------
    def _outputs(self, root: Path) -> List[str]:
        return [name for name in RESULT_FILES if (root / name).is_file()]

    def _live_status(self, root: Path, live: _Live) -> Dict[str, Any]:
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
        }

    def _disk_status(self, root: Path) -> Dict[str, Any]:
        """State of a job no worker of this process is running, from its ledger and files."""
        base: Dict[str, Any] = {
            "id": root.name, "state": "interrupted", "stage": "", "frames": 0, "done": 0, "failed": 0,
            "fps": None, "eta_seconds": None, "message": "", "latest_frame": None, "recent_frames": [],
            "outputs": self._outputs(root), "path": str(root),
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
        finally:
            ledger.close()
        recent = sorted((root / "out").glob("*.png"))[-RECENT_FRAMES:]
        base.update(frames=frames, done=counts["done"], failed=counts["failed"], message=message,
                    recent_frames=[str(p) for p in recent], latest_frame=str(recent[-1]) if recent else None)
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
                if task.kind == "preview":
                    self._run_preview(task)
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

    def _on_event(self, live: _Live) -> Callable[[RenderEvent], None]:
        def handle(event: RenderEvent) -> None:
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
                    if event.image_path:
                        live.recent.append(event.image_path)
                if event.kind == "progress":
                    live.eta_seconds = event.eta_seconds
                if event.kind == "failed":
                    live.failed += 1
                if event.message and not live.cancel.cancelled:
                    live.message = event.message
        return handle

    def _run(self, job_id: str) -> None:
        with self._lock:
            live = self._live.get(job_id)
        if live is None:
            return
        self._set(live, state="preparing", message="opening the job", started_at=time.time())
        try:
            with open_job(self.output_root / job_id) as job:
                if live.cancel.cancelled:
                    state, message = "cancelled", "cancelled before it started; resume to render it"
                else:
                    self._record(job, "running", "")
                    state, message = self._render(job, live)
                self._record(job, state, message)
        except VidstyleError as err:  # opening failed (locked by another process, damaged folder)
            state, message = "failed", str(err)
        self._finish(job_id, live, state, message)

    def _render(self, job: Job, live: _Live) -> "tuple[str, str]":
        on_event = self._on_event(live)
        backend = None
        try:
            if self.backend_factory is not None:
                backend = self.backend_factory(job.spec, lambda msg: on_event(RenderEvent("status", "render", message=msg)))
            run_job(job, backend=backend, on_event=on_event, cancel=live.cancel)
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
            if backend is not None:
                backend.close()

    def _record(self, job: Job, state: str, message: str) -> None:
        job.ledger.set_meta("manager_state", state)
        job.ledger.set_meta("manager_message", message)

    def _finish(self, job_id: str, live: _Live, state: str, message: str) -> None:
        with self._lock:
            live.state, live.message, live.eta_seconds = state, message, None
            self._live.pop(job_id, None)
            self._finished[job_id] = live

    def _run_preview(self, task: _Task) -> None:
        assert task.future is not None
        if not task.future.set_running_or_notify_cancel():
            return
        try:
            task.future.set_result(self._render_preview(task.payload["spec"], int(task.payload["count"])))
        except BaseException as exc:
            task.future.set_exception(exc)

    def _render_preview(self, spec: JobSpec, count: int) -> List[Path]:
        """A scratch job whose source is a folder holding just the picked frames.

        The job fits, edge-maps and renders them exactly like the full job would (same size,
        canny settings, sampling); only the per-frame seed policy sees scratch indices.
        """
        if not spec.source.path:
            raise UserInputError("No source video given; upload a video or enter a path first.")
        scratch_root = self.output_root / PREVIEWS_DIR
        scratch_root.mkdir(exist_ok=True)
        self._prune_previews(scratch_root)
        scratch = scratch_root / f"preview-{time.strftime('%Y%m%d-%H%M%S')}-{next(self._order)}"
        frames_dir = scratch / "frames"
        frames_dir.mkdir(parents=True)
        positions = self._write_preview_sources(spec, count, frames_dir)
        scratch_spec = spec.with_overrides({
            "source.path": str(frames_dir), "source.start_time": None, "source.end_time": None,
            "source.start_frame": None, "source.end_frame": None, "source.every_nth": 1, "source.target_fps": None,
        })
        job = create_job(scratch_spec, scratch / "job")
        backend = None
        try:
            if self.backend_factory is not None:
                backend = self.backend_factory(job.spec, None)
            run_job(job, backend=backend, finish=False)
            results = []
            for n, position in enumerate(positions):
                target = scratch / f"frame_{position:06d}.png"
                shutil.copyfile(job.out_path(n), target)
                results.append(target)
            return results
        finally:
            if backend is not None:
                backend.close()
            job.close()

    def _write_preview_sources(self, spec: JobSpec, count: int, folder: Path) -> List[int]:
        info = probe(spec.source.path, sequence_fps=spec.source.sequence_fps)
        selection = plan_selection(info, spec.source)
        positions = preview_positions(selection.frame_count, count)
        for n, position in enumerate(positions):
            if selection.resample:
                image = read_frame_at_time(spec.source.path, selection.start_time + position / selection.fps, info)
            else:
                index = min(selection.start_frame + position * selection.every_nth, info.frame_count - 1)
                image = read_frame_at(spec.source.path, index, info)
            write_png(folder / f"{n:06d}.png", image)
        return positions

    def _prune_previews(self, scratch_root: Path) -> None:
        """Scratch previews are ours alone; keep the newest few so the folder does not grow."""
        old = sorted((p for p in scratch_root.iterdir() if p.is_dir()), key=lambda p: p.stat().st_mtime)
        for path in old[:-KEEP_PREVIEWS] if len(old) > KEEP_PREVIEWS else []:
            shutil.rmtree(path, ignore_errors=True)
