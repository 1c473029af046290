"""The job folder: the unit of work and of safety.

    JOB/job.toml        the resolved JobSpec (seed pinned), written once
    JOB/ledger.sqlite   frame ledger (see ledger.py)
    JOB/src/NNNNNN.png  selected source frames, fitted to the output size
    JOB/control/        canny maps
    JOB/out/            the current output of each frame (atomic writes)
    JOB/history/        earlier attempts kept when a frame is redone
    JOB/report/         contact sheet, report.json / report.md
    JOB/result.mp4, JOB/compare.mp4

One process works on a job at a time (an advisory lock on JOB/.lock).
"""

from __future__ import annotations

import shutil
import time
from collections import deque
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Deque, Dict, Iterable, List, Optional, Tuple

from . import atomic
from .control import canny_map
from .errors import JobStateError, MediaError, OutputError, UserInputError
from .imageio import write_png
from .ledger import Ledger
from .spec import JobSpec, build_spec, read_toml
from .video import VideoInfo, fit_frame, iter_frames, plan_selection, probe

try:  # POSIX advisory locks; Windows users get no lock rather than no tool
    import fcntl
except ImportError:  # pragma: no cover
    fcntl = None  # type: ignore[assignment]

FRAME_NAME = "{:06d}.png"
PrepareCallback = Callable[[int, Optional[int]], None]


@dataclass
class Job:
    root: Path
    spec: JobSpec
    ledger: Ledger
    _lock_handle: Any = None

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
            self._lock_handle.close()
            self._lock_handle = None

    def __enter__(self) -> "Job":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _lock(root: Path) -> Any:
    handle = open(root / ".lock", "a+")
    if fcntl is not None:
        try:
            fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            handle.close()
            raise JobStateError(f"Another vidstyle process is working on {root}; wait for it or stop it first.") from None
    return handle


def create_job(spec: JobSpec, root: Path) -> Job:
    """Validate the source, pin the seed and write job.toml into a new (or empty) folder."""
    root = Path(root)
    if (root / "job.toml").exists():
        raise UserInputError(f"{root} already holds a job; use `vidstyle resume {root}` or choose another output folder.")
    if root.exists() and (not root.is_dir() or any(root.iterdir())):
        raise UserInputError(f"{root} exists and is not empty; choose a new output folder so nothing in it is overwritten.")
    if not spec.source.path:
        raise UserInputError("No source video given; pass a video file or a folder of frames.")
    info = probe(spec.source.path, sequence_fps=spec.source.sequence_fps)
    spec = spec.resolved()
    try:
        root.mkdir(parents=True, exist_ok=True)
        for sub in ("src", "control", "out"):
            (root / sub).mkdir(exist_ok=True)
    except OSError as exc:
        raise OutputError(f"Cannot create the job folder {root}: {exc.strerror}; choose a folder you can write to.") from None
    atomic.write_text(root / "job.toml", spec.to_toml())
    job = Job(root=root, spec=spec, ledger=Ledger(root / "ledger.sqlite"), _lock_handle=_lock(root))
    job.ledger.set_meta("source", {"path": str(Path(spec.source.path).resolve()), "has_audio": bool(info.audio)})
    job.ledger.set_meta("created_at", time.time())
    return job


def open_job(root: Path) -> Job:
    root = Path(root)
    if not (root / "job.toml").is_file() or not (root / "ledger.sqlite").is_file():
        raise JobStateError(f"{root} is not a vidstyle job folder (no job.toml and ledger.sqlite).")
    spec = build_spec(read_toml(root / "job.toml", "job file"), what=f"job file {root / 'job.toml'}")
    lock = _lock(root)
    return Job(root=root, spec=spec, ledger=Ledger(root / "ledger.sqlite"), _lock_handle=lock)


def source_info(job: Job) -> VideoInfo:
    return probe(job.spec.source.path, sequence_fps=job.spec.source.sequence_fps)


def prepare(job: Job, on_progress: Optional[PrepareCallback] = None, should_stop: Callable[[], bool] = lambda: False) -> int:
    """Decode the selection once: fitted source frames and canny maps into the job folder.

    Resumable: frames already written are skipped (decode is cheap next to rendering),
    and the ledger marks the stage complete only after the last frame.
    """
    if job.prepared:
        return job.ledger.frame_count()
    spec = job.spec
    source = Path(spec.source.path)
    if not source.exists():
        raise MediaError(f"The job's source {source} no longer exists; put it back to continue this job.")
    info = source_info(job)
    selection = plan_selection(info, spec.source)
    job.ledger.set_meta("fps", spec.encode.fps or selection.fps)
    job.ledger.set_meta("selection", {"start": selection.start_time, "end": selection.end_time})
    total = getattr(selection, "frame_count", None)
    count = _write_selection(job, iter_frames(source, spec.source, info=info), total, on_progress, should_stop)
    if should_stop():
        return count
    if count == 0:
        raise MediaError(f"The selection of {source} holds no frames; widen the time or frame range.")
    job.ledger.set_meta("prepared", True)
    job.ledger.set_meta("frame_count", count)
    return count


def _write_selection(
    job: Job, frames: Iterable[Any], total: Optional[int], on_progress: Optional[PrepareCallback], should_stop: Callable[[], bool]
) -> int:
    """Fit, canny and PNG-encode on two threads while the main thread decodes.

    OpenCV releases the GIL, so this uses both cores; at most a few frames are in flight,
    so memory does not grow with the video's length.
    """
    rows: List[Tuple[int, int, float]] = []
    pending: Deque[Tuple[Future, Tuple[int, int, float]]] = deque()
    count = 0

    def settle(limit: int) -> None:
        nonlocal count, rows
        while len(pending) > limit:
            future, row = pending.popleft()
            future.result()
            rows.append(row)
            count += 1
            if len(rows) >= 64:
                job.ledger.add_frames(rows)
                rows = []
            if on_progress:
                on_progress(count, total)

    with ThreadPoolExecutor(max_workers=2, thread_name_prefix="vidstyle-prepare") as pool:
        for frame in frames:
            if should_stop():
                break
            future = pool.submit(_write_prepared_frame, job, frame.index, frame.image)
            pending.append((future, (frame.index, frame.source_index, frame.time)))
            settle(limit=4)
        settle(limit=0)
    job.ledger.add_frames(rows)
    return count


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


def job_summary(job: Job) -> Dict[str, Any]:
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
