"""The job folder: the unit of work and of safety.

    JOB/job.toml        the resolved JobSpec (seed pinned); rewritten only before frame 1 (retarget)
    JOB/ledger.sqlite   frame ledger (see ledger.py)
    JOB/src/NNNNNN.png  selected source frames, fitted to the output size
    JOB/control/        canny maps
    JOB/out/            the current output of each frame (atomic writes)
    JOB/history/        earlier attempts kept when a frame is redone
    JOB/report/         contact sheet, report.json / report.md
    JOB/result.mp4, JOB/compare.mp4

One process works on a job at a time: it holds the lock on JOB/.lock (filelock: flock on
POSIX, msvcrt on Windows) from before the first byte of a new job is written until it closes
the job, so two runs on one folder can never overwrite each other's files.
"""

from __future__ import annotations

import os
import shutil
import time
from collections import deque
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import closing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from filelock import FileLock, Timeout

from . import atomic
from .control import canny_map
from .errors import JobStateError, MediaError, OutputError, UserInputError
from .events import EventCallback, ProgressEvent, ignore_event
from .imageio import write_png
from .ledger import Ledger
from .overrides import read_toml
from .spec import JobSpec, build_spec, pop_stored_credentials
from .video import VideoInfo, fit_frame, iter_frames, plan_selection, probe

FRAME_NAME = "{:06d}.png"
LOCK_NAME = ".lock"
# How long taking a job's lock waits: long enough to outlast a server that only checks
# whether the job is in use (status), far shorter than any real run holding it.
LOCK_WAIT_SECONDS = 2.0
# What a job folder may hold; a job with no rendered frame is made only of these, so a
# corrected `stylize` may replace it without touching anything else.
_JOB_FILES = ("job.toml", "ledger.sqlite", "ledger.sqlite-wal", "ledger.sqlite-shm", "ledger.sqlite-journal")
_DERIVED_DIRS = ("src", "control", "out", "history", "report")


@dataclass
class Job:
    root: Path
    spec: JobSpec
    ledger: Ledger
    _lock_handle: FileLock | None = None
    replaced: bool = False  # create_job replaced an earlier attempt that had rendered no frame
    # user:password for WebUI servers, for this run only: never saved in the job folder. The
    # caller sets it (--webui-auth, the server's policy); VIDSTYLE_WEBUI_AUTH is the fallback.
    webui_auth: str | None = field(default=None, repr=False)

    # -- paths ------------------------------------------------------------------------
    @property
    def spec_path(self) -> Path:
        return self.root / "job.toml"

    def src_path(self, idx: int) -> Path:
        return self.root / "src" / FRAME_NAME.format(idx)

    def control_path(self, idx: int) -> Path:
        return self.root / "control" / FRAME_NAME.format(idx)

    def out_path(self, idx: int) -> Path:
        return self.root / "out" / FRAME_NAME.format(idx)

    def history_path(self, idx: int, attempt: int) -> Path:
        return self.root / "history" / f"{idx:06d}_a{attempt}.png"

    @property
    def report_dir(self) -> Path:
        return self.root / "report"

    @property
    def result_path(self) -> Path:
        return self.root / "result.mp4"

    @property
    def compare_path(self) -> Path:
        return self.root / "compare.mp4"

    # -- state ------------------------------------------------------------------------
    @property
    def prepared(self) -> bool:
        return bool(self.ledger.get_meta("prepared", False))

    @property
    def fps(self) -> float:
        return float(self.ledger.get_meta("fps"))

    def close(self) -> None:
        self.ledger.close()
        if self._lock_handle is not None:
            self._lock_handle.release()
            self._lock_handle = None

    def __enter__(self) -> Job:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class JobLockedError(JobStateError):
    """Another process (or another open Job of this one) holds the job folder's lock."""


def _lock(root: Path, wait: float = LOCK_WAIT_SECONDS) -> FileLock:
    # thread_local=False: the manager opens a job on one thread and may close it on another.
    lock = FileLock(str(root / LOCK_NAME), thread_local=False)
    try:
        lock.acquire(timeout=wait)
    except Timeout:
        raise JobLockedError(f"Another vidstyle process is working on {root}; wait for it or stop it first.") from None
    except OSError as exc:
        raise OutputError(
            f"Cannot lock the job folder {root}: {exc.strerror or exc}; choose a folder you can write to."
        ) from None
    return lock


def locked_elsewhere(root: Path) -> bool:
    """True while another process (or another open Job of this one) holds the job's lock."""
    if not (Path(root) / LOCK_NAME).exists():  # filelock may remove the file on release
        return False
    lock = FileLock(str(Path(root) / LOCK_NAME), thread_local=False)
    try:
        lock.acquire(timeout=0)
    except Timeout:
        return True
    except OSError:  # a folder we cannot write to cannot be worked on by anyone else either
        return False
    lock.release()
    return False


def check_output_folder(root: Path, source: str | None = None) -> bool:
    """Can a new job go into `root`? False: it is new or empty; True: it holds a job that
    rendered no frame (an earlier attempt that failed before frame 1), which may be replaced.

    Writes nothing. Raises one sentence for a folder that must stay as it is: a job with
    rendered frames, or anything that is not a vidstyle job.
    """
    root = Path(root)
    if not root.exists():
        return False
    if not root.is_dir():
        raise UserInputError(f"{root} is a file, not a folder; choose a new output folder.")
    try:
        names = {entry.name for entry in root.iterdir()} - {LOCK_NAME}
    except OSError as exc:
        raise OutputError(f"Cannot read the folder {root}: {exc.strerror}; choose a folder you can write to.") from None
    if not names:
        return False
    if "job.toml" not in names:
        raise UserInputError(
            f"{root} exists and is not empty; choose a new output folder so nothing in it is overwritten."
        )
    foreign = sorted(n for n in names if n not in _JOB_FILES and n not in _DERIVED_DIRS and not n.startswith(".job."))
    finished = any((root / sub).is_dir() and any((root / sub).glob("*.png")) for sub in ("out", "history"))
    if foreign or finished:
        raise UserInputError(
            f"{root} already holds a job; use `vidstyle resume {root}` or choose another output folder."
        )
    if source and _inside(Path(source), root):
        raise UserInputError(f"The source {source} is inside the output folder {root}; choose another output folder.")
    return True


def _inside(path: Path, folder: Path) -> bool:
    try:
        path.resolve().relative_to(folder.resolve())
    except ValueError:
        return False
    return True


def _claim(root: Path) -> FileLock:
    """Create `root` (if new) and take its lock before anything is written into it."""
    try:
        root.mkdir(parents=True, exist_ok=True)
    except FileExistsError:
        raise UserInputError(f"{root} is a file, not a folder; choose a new output folder.") from None
    except OSError as exc:
        raise OutputError(
            f"Cannot create the job folder {root}: {exc.strerror}; choose a folder you can write to."
        ) from None
    return _lock(root)


def _ledger_shows_rendered(root: Path) -> bool:
    """The ledger's word on rendered frames, in case their files were moved away (read under the lock)."""
    if not (root / "ledger.sqlite").is_file():
        return False
    ledger = Ledger(root / "ledger.sqlite")
    try:
        return ledger.counts()["done"] > 0 or bool(ledger.db.execute("SELECT 1 FROM attempts LIMIT 1").fetchone())
    finally:
        ledger.close()


def _clear_unstarted(root: Path) -> None:
    """Remove an earlier attempt that rendered no frame (checked by check_output_folder, under the lock)."""
    for sub in _DERIVED_DIRS:
        shutil.rmtree(root / sub, ignore_errors=True)
    for name in _JOB_FILES:
        (root / name).unlink(missing_ok=True)
    for leftover in root.glob(".job.*"):  # a temp job.toml of a crashed write
        leftover.unlink(missing_ok=True)


@dataclass
class CheckedJob:
    spec: JobSpec  # resolved: the seed is pinned
    info: VideoInfo
    replaces: bool  # the folder holds an earlier attempt that rendered no frame


def check_new_job(spec: JobSpec, root: Path, replace_unstarted: bool = False) -> CheckedJob:
    """Every check of a new job that needs no backend, writing nothing.

    The source is given and readable, its selection holds frames, and the output folder
    is new, empty, or (with `replace_unstarted`) an earlier attempt that rendered no frame.
    """
    root = Path(root)
    if not spec.source.path:
        raise UserInputError("No source video given; pass a video file or a folder of frames.")
    info = probe(spec.source.path, sequence_fps=spec.source.sequence_fps)
    plan_selection(info, spec.source)  # one sentence when the time or frame range is empty
    replaces = check_output_folder(root, spec.source.path)
    if replaces and not replace_unstarted:
        raise UserInputError(
            f"{root} already holds a job; use `vidstyle resume {root}` or choose another output folder."
        )
    _check_writable(root)
    return CheckedJob(spec=spec.resolved(), info=info, replaces=replaces)


def _check_writable(root: Path) -> None:
    existing = root.absolute()
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    if not existing.is_dir() or not os.access(existing, os.W_OK | os.X_OK):
        raise OutputError(f"Cannot write into {existing}; choose an output folder you can write to.")


def create_job(spec: JobSpec, root: Path, info: VideoInfo | None = None, replace_unstarted: bool = False) -> Job:
    """Claim the folder, pin the seed and write job.toml and the ledger, in that order.

    `info` is the source's probe when the caller already checked it (see check_new_job).
    With `replace_unstarted`, a folder holding a job that rendered no frame is replaced
    (job.replaced says so); a folder with rendered frames or other files never is.
    """
    root = Path(root)
    if not spec.source.path:
        raise UserInputError("No source video given; pass a video file or a folder of frames.")
    replacing = check_output_folder(root, spec.source.path)  # before any write: a clear refusal
    if replacing and not replace_unstarted:
        raise UserInputError(
            f"{root} already holds a job; use `vidstyle resume {root}` or choose another output folder."
        )
    if info is None:
        info = probe(spec.source.path, sequence_fps=spec.source.sequence_fps)
    spec = spec.resolved()
    lock = _claim(root)
    try:
        # Again under the lock: another process may have claimed the folder in between.
        replacing = check_output_folder(root, spec.source.path)
        if replacing and (not replace_unstarted or _ledger_shows_rendered(root)):
            raise UserInputError(
                f"{root} already holds a job; use `vidstyle resume {root}` or choose another output folder."
            )
        if replacing:
            _clear_unstarted(root)
        try:
            for sub in ("src", "control", "out"):
                (root / sub).mkdir(exist_ok=True)
        except OSError as exc:
            raise OutputError(
                f"Cannot create the job folder {root}: {exc.strerror}; choose a folder you can write to."
            ) from None
        atomic.write_text(root / "job.toml", spec.to_toml())
        ledger = Ledger(root / "ledger.sqlite")
        ledger.set_metas(
            {
                "source": {"path": str(Path(spec.source.path).resolve()), "has_audio": bool(info.audio)},
                "created_at": time.time(),
            }
        )
    except BaseException:
        lock.release()
        raise
    return Job(root=root, spec=spec, ledger=ledger, _lock_handle=lock, replaced=replacing)


def open_job(root: Path) -> Job:
    root = Path(root)
    if not (root / "job.toml").is_file() or not (root / "ledger.sqlite").is_file():
        raise JobStateError(f"{root} is not a vidstyle job folder (no job.toml and ledger.sqlite).")
    lock = _lock(root)  # before reading job.toml: a resume with overrides may rewrite it
    try:
        data = read_toml(root / "job.toml", "job file")
        stored_auth = pop_stored_credentials(data)  # jobs from before credentials left the spec
        spec = build_spec(data, what=f"job file {root / 'job.toml'}")
        return Job(
            root=root, spec=spec, ledger=Ledger(root / "ledger.sqlite"), _lock_handle=lock, webui_auth=stored_auth
        )
    except BaseException:
        lock.release()
        raise


def rendered_any(job: Job) -> bool:
    """Whether any frame of the job was ever rendered (done now, or kept from a redo)."""
    return job.ledger.counts()["done"] > 0 or bool(job.ledger.db.execute("SELECT 1 FROM attempts LIMIT 1").fetchone())


def retarget(job: Job, overrides: dict[str, Any]) -> None:
    """Change the settings of a job that has rendered no frame yet (resume with options).

    Nothing rendered depends on the old settings, so job.toml is rewritten; frames already
    prepared are kept only when what shapes them (source, size, canny) is unchanged.
    """
    if rendered_any(job):
        raise UserInputError(
            f"{job.root} already has rendered frames, so its settings stay; use `vidstyle redo {job.root}` to change "
            "frames."
        )
    spec = job.spec.with_overrides(overrides).resolved()
    if _preparation(spec) != _preparation(job.spec):
        info = probe(spec.source.path, sequence_fps=spec.source.sequence_fps)
        plan_selection(info, spec.source)  # an empty selection fails here, before anything changes
        with job.ledger.transaction():
            job.ledger.db.execute("DELETE FROM frames")
            job.ledger.set_metas(
                {
                    "prepared": False,
                    "source": {"path": str(Path(spec.source.path).resolve()), "has_audio": bool(info.audio)},
                }
            )
        for sub in ("src", "control"):
            shutil.rmtree(job.root / sub, ignore_errors=True)
            (job.root / sub).mkdir(exist_ok=True)
    atomic.write_text(job.spec_path, spec.to_toml())
    job.spec = spec


def _preparation(spec: JobSpec) -> tuple[Any, ...]:
    """What the prepared frames (src/, control/) depend on."""
    cn = spec.controlnet
    return (spec.source, spec.size, cn.low_threshold, cn.high_threshold, cn.blur)


def source_info(job: Job) -> VideoInfo:
    return probe(job.spec.source.path, sequence_fps=job.spec.source.sequence_fps)


@dataclass
class Preparation:
    """A selection about to be decoded into src/ and control/ (see `prepare`)."""

    source: Path
    info: VideoInfo
    estimated_frames: int | None  # the selection's frame count when the container tells it


def start_preparation(job: Job) -> Preparation:
    """Check the source is still there and record the selection's fps and time range."""
    spec = job.spec
    source = Path(spec.source.path)
    if not source.exists():
        raise MediaError(f"The job's source {source} no longer exists; put it back to continue this job.")
    info = source_info(job)
    selection = plan_selection(info, spec.source)
    job.ledger.set_metas(
        {
            "fps": spec.encode.fps or selection.fps,
            "selection": {"start": selection.start_time, "end": selection.end_time},
        }
    )
    return Preparation(source, info, getattr(selection, "frame_count", None))


def finish_preparation(job: Job, preparation: Preparation, count: int) -> None:
    """Mark the stage complete, only after the last frame is on disk and in the ledger."""
    if count == 0:
        raise MediaError(f"The selection of {preparation.source} holds no frames; widen the time or frame range.")
    job.ledger.set_metas({"prepared": True, "frame_count": count})


def prepare(job: Job, on_event: EventCallback = ignore_event, should_stop: Callable[[], bool] = lambda: False) -> int:
    """Decode the selection once: fitted source frames and canny maps into the job folder.

    Resumable: frames already written are skipped (decode is cheap next to rendering),
    and the ledger marks the stage complete only after the last frame.
    """
    if job.prepared:
        return job.ledger.frame_count()
    preparation = start_preparation(job)
    rows: list[FrameRowData] = []
    count = 0
    for row in prepared_rows(job, preparation, should_stop):
        rows.append(row)
        count += 1
        if len(rows) >= 64:
            job.ledger.add_frames(rows)
            rows = []
        total = preparation.estimated_frames or 0
        on_event(ProgressEvent("stage", "prepare", count, total, message="decoding frames and canny maps"))
    job.ledger.add_frames(rows)
    if should_stop():
        return count
    finish_preparation(job, preparation, count)
    return count


# (idx, source_index, time): a prepared frame's ledger row
FrameRowData = tuple[int, int, float]


def prepared_rows(job: Job, preparation: Preparation, should_stop: Callable[[], bool]) -> Iterator[FrameRowData]:
    """Each frame's ledger row once its PNGs are written, in frame order; never touches the ledger,
    so it may run on another thread than the job's.

    Fit, canny and PNG encoding run on two threads while this one decodes. OpenCV releases the
    GIL, so this uses both cores; at most a few frames are in flight, so memory does not grow
    with the video's length.
    """
    frames = iter_frames(preparation.source, job.spec.source, info=preparation.info)
    pending: deque[tuple[Future[None], FrameRowData]] = deque()
    # closing(): a decoder stopped early is released here, on this thread, not whenever it is collected.
    with closing(frames), ThreadPoolExecutor(max_workers=2, thread_name_prefix="vidstyle-prepare") as pool:
        for frame in frames:
            if should_stop():
                break
            future = pool.submit(_write_prepared_frame, job, frame.index, frame.image)
            pending.append((future, (frame.index, frame.source_index, frame.time)))
            while len(pending) > 4:
                yield _settled(pending)
        while pending:
            yield _settled(pending)


def _settled(pending: deque[tuple[Future[None], FrameRowData]]) -> FrameRowData:
    future, row = pending.popleft()
    future.result()
    return row


def _write_prepared_frame(job: Job, idx: int, image: Any) -> None:
    src_path = job.src_path(idx)
    control_path = job.control_path(idx)
    if src_path.exists() and control_path.exists():
        return
    size = job.spec.size
    fitted = fit_frame(image, size.width, size.height, size.fit)
    write_png(src_path, fitted)
    cn = job.spec.controlnet
    write_png(control_path, canny_map(fitted, cn.low_threshold, cn.high_threshold, cn.blur))


def drop_intermediates(job: Job) -> None:
    """Free the disk the fitted source frames and canny maps take, once the job is finished.

    Only derived files go: out/, history/ and the videos stay. They are rebuilt from the
    source video if the job is redone later (prepare skips nothing it cannot find).
    """
    counts = job.ledger.counts()
    if counts["done"] != job.ledger.frame_count() or not job.result_path.exists():
        raise JobStateError("Intermediate frames are kept until the job has finished.")
    job.ledger.set_meta("prepared", False)
    for folder in (job.root / "src", job.root / "control"):
        shutil.rmtree(folder, ignore_errors=True)
        folder.mkdir(exist_ok=True)


def job_summary(job: Job) -> dict[str, Any]:
    counts = job.ledger.counts()
    return {
        "job": str(job.root),
        "prepared": job.prepared,
        "frames": job.ledger.frame_count(),
        **counts,
        "result": str(job.result_path) if job.result_path.exists() else None,
        "compare": str(job.compare_path) if job.compare_path.exists() else None,
        "source": job.spec.source.path,
    }
