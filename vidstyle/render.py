"""The frame loop: prepare, preflight, render pending frames, finish.

It knows nothing about HTTP, the WebUI or diffusers: it builds an Img2ImgRequest per
frame, calls the backend from `backend.concurrency` worker threads, and records results
from the main thread only. Long work reports through one callback of RenderEvents
(k-diffusion style), never prints.
"""

from __future__ import annotations

import io
import shutil
import threading
import time
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from typing import Any, Callable, Dict, List, Optional, Set, Tuple

from PIL import Image

from .backends import create_backend
from .backends.base import Backend, Img2ImgRequest
from .errors import BackendError, Cancelled, JobStateError, SpecError
from .imageio import write_png
from .infotext import build_parameters
from .job import Job, prepare
from .ledger import FrameRow
from .spec import JobSpec, frame_seed

import numpy as np


@dataclass
class RenderEvent:
    kind: str  # "stage" | "frame" | "progress" (inside a frame) | "failed" | "status" | "done"
    stage: str  # "prepare" | "preflight" | "render" | "finish"
    done: int = 0
    total: int = 0
    frame_index: Optional[int] = None
    fps: Optional[float] = None
    eta_seconds: Optional[float] = None
    message: str = ""
    image_path: Optional[str] = None
    frame_fraction: Optional[float] = None  # with "progress": how far the current frame is


EventCallback = Callable[[RenderEvent], None]


class CancelToken:
    """Set from any thread (a UI button, an HTTP route, SIGINT) to stop a render."""

    def __init__(self) -> None:
        self._event = threading.Event()

    def cancel(self) -> None:
        self._event.set()

    @property
    def cancelled(self) -> bool:
        return self._event.is_set()


@dataclass
class RenderSummary:
    rendered: int = 0
    failed: Dict[int, str] = field(default_factory=dict)
    seconds: float = 0.0


def _noop(event: RenderEvent) -> None:
    return None


def _attach_frame_progress(backend: Backend, on_event: EventCallback, counts: Dict[str, int], rate: "_Rate") -> None:
    """Let a one-at-a-time backend that reports progress inside a frame refine the ETA.

    For long frames (a WebUI at high resolution) the frame rate alone moves in jumps; the
    WebUI's /sdapi/v1/progress fraction and eta_relative fill the gaps.
    """
    if getattr(backend, "concurrency", 1) != 1 or not hasattr(backend, "on_progress"):
        return

    def on_progress(fraction: float, frame_eta: Optional[float]) -> None:
        fps = rate.fps()
        per_frame = 1.0 / fps if fps else (frame_eta / max(1e-3, 1.0 - fraction) if frame_eta is not None else None)
        if per_frame is None:
            return
        left_in_frame = frame_eta if frame_eta is not None else per_frame * (1.0 - fraction)
        remaining = max(0, counts["total"] - counts["done"] - 1)
        on_event(RenderEvent("progress", "render", counts["done"], counts["total"], fps=fps,
                             eta_seconds=left_in_frame + remaining * per_frame, frame_fraction=fraction))

    backend.on_progress = on_progress  # type: ignore[attr-defined]


class _Rate:
    """Frames/s over a sliding window, for the ETA."""

    def __init__(self, window: int = 20) -> None:
        self.times: List[float] = []
        self.window = window

    def tick(self) -> None:
        self.times.append(time.monotonic())
        self.times = self.times[-self.window :]

    def fps(self) -> Optional[float]:
        if len(self.times) < 2:
            return None
        span = self.times[-1] - self.times[0]
        return (len(self.times) - 1) / span if span > 0 else None


# Redo may change how a frame is sampled, not what was prepared for the whole job.
REDO_FORBIDDEN_PREFIXES = ("source.", "size.", "encode.", "backend.", "controlnet.low_threshold",
                           "controlnet.high_threshold", "controlnet.blur", "version")


def frame_spec(job: Job, overrides: Dict[str, Any], cache: Dict[str, JobSpec]) -> JobSpec:
    key = repr(sorted(overrides.items()))
    if key not in cache:
        cache[key] = job.spec.with_overrides(overrides) if overrides else job.spec
    return cache[key]


def build_request(job: Job, row: FrameRow, spec: JobSpec) -> Img2ImgRequest:
    init_png = job.src_path(row.idx).read_bytes()
    control_png = job.control_path(row.idx).read_bytes()
    with Image.open(io.BytesIO(init_png)) as src, Image.open(io.BytesIO(control_png)) as control:
        init_image = src.convert("RGB")
        control_image = control.convert("RGB")
    return Img2ImgRequest(
        frame_index=row.idx,
        init_image=init_image,
        control_image=control_image,
        prompt=spec.prompt,
        negative_prompt=spec.negative_prompt,
        checkpoint=spec.model.checkpoint,
        loras=list(spec.model.loras),
        controlnet=spec.controlnet,
        width=spec.size.width,
        height=spec.size.height,
        denoise=spec.sampling.denoise,
        steps=spec.sampling.steps,
        cfg_scale=spec.sampling.cfg_scale,
        sampler=spec.sampling.sampler,
        scheduler=spec.sampling.scheduler,
        seed=frame_seed(spec, row.idx, row.attempt),
        init_png=init_png,
        control_png=control_png,
    )


@dataclass
class _Rendered:
    seed: int
    render_ms: float
    info: Dict[str, Any]


def _render_one(job: Job, row: FrameRow, spec: JobSpec, backend: Backend, slots: threading.Semaphore) -> _Rendered:
    """Worker thread: read inputs, call the backend, write the output PNG.

    File I/O happens here so it overlaps with other frames; only the ledger update (which
    makes the frame count as done) happens on the main thread, after the file is in place.
    """
    request = build_request(job, row, spec)
    with slots:  # never more backend calls in flight than the backend allows
        started = time.perf_counter()
        result = backend.img2img(request)
        render_ms = (time.perf_counter() - started) * 1000.0
    image = result.image.convert("RGB")
    if image.size != (spec.size.width, spec.size.height):
        image = image.resize((spec.size.width, spec.size.height), Image.LANCZOS)
    parameters = result.info.get("parameters") or build_parameters(spec, request.seed, row.idx)
    write_png(job.out_path(row.idx), np.asarray(image), text={"parameters": str(parameters)})
    info = {k: v for k, v in result.info.items() if k != "parameters"}
    return _Rendered(seed=request.seed, render_ms=render_ms, info=info)


def _mark(job: Job, row: FrameRow, rendered: _Rendered, backend: Backend) -> None:
    job.ledger.mark_done(row.idx, rendered.seed, backend.name, rendered.render_ms, rendered.info)


def render_pending(
    job: Job,
    backend: Backend,
    on_event: EventCallback = _noop,
    cancel: Optional[CancelToken] = None,
    max_retries: int = 2,
) -> RenderSummary:
    """Render every frame not yet done; returns what was rendered and what failed."""
    cancel = cancel or CancelToken()
    todo = job.ledger.todo()
    total = job.ledger.frame_count()
    done = total - len(todo)
    summary = RenderSummary()
    rate = _Rate()
    specs: Dict[str, JobSpec] = {}
    retries: Dict[int, int] = {}
    queue = list(reversed(todo))
    inflight: Dict[Future, FrameRow] = {}
    started = time.monotonic()
    workers = max(1, int(getattr(backend, "concurrency", 1)))
    slots = threading.Semaphore(workers)
    counts = {"done": done, "total": total}
    _attach_frame_progress(backend, on_event, counts, rate)
    on_event(RenderEvent("stage", "render", done=done, total=total, message=f"{len(todo)} frames to render"))
    # One thread more than backend slots, so reading and writing PNGs overlaps the backend call.
    pool = ThreadPoolExecutor(max_workers=workers + 1, thread_name_prefix="vidstyle-frame")
    try:
        while queue or inflight:
            if cancel.cancelled:
                raise Cancelled("Render cancelled; the job is saved and `vidstyle resume` continues it.")
            while queue and len(inflight) < workers + 2:
                row = job.ledger.frame(queue.pop())
                spec = frame_spec(job, row.overrides, specs)
                inflight[pool.submit(_render_one, job, row, spec, backend, slots)] = row
            finished, _ = wait(list(inflight), timeout=0.25, return_when=FIRST_COMPLETED)
            for future in finished:
                row = inflight.pop(future)
                try:
                    rendered = future.result()
                except Cancelled:
                    raise
                except BackendError as exc:
                    retries[row.idx] = retries.get(row.idx, 0) + 1
                    if retries[row.idx] <= max_retries:
                        queue.append(row.idx)
                        on_event(RenderEvent("status", "render", done, total, row.idx, message=f"frame {row.idx}: {exc}; retrying"))
                        continue
                    job.ledger.mark_failed(row.idx, str(exc))
                    summary.failed[row.idx] = str(exc)
                    on_event(RenderEvent("failed", "render", done, total, row.idx, message=str(exc)))
                    continue
                _mark(job, row, rendered, backend)
                done += 1
                counts["done"] = done
                summary.rendered += 1
                rate.tick()
                fps = rate.fps()
                eta = (total - done) / fps if fps else None
                on_event(RenderEvent("frame", "render", done, total, row.idx, fps, eta, image_path=str(job.out_path(row.idx))))
    except (KeyboardInterrupt, Cancelled):
        cancel.cancel()
        backend.interrupt()
        _drain(inflight, job, backend)
        raise Cancelled("Render cancelled; the job is saved and `vidstyle resume` continues it.") from None
    except BaseException:
        backend.interrupt()
        _drain(inflight, job, backend)
        raise
    finally:
        pool.shutdown(wait=True, cancel_futures=True)
    summary.seconds = time.monotonic() - started
    return summary


def _drain(inflight: Dict[Future, FrameRow], job: Job, backend: Backend) -> None:
    """Keep frames that finished while we were stopping; never lose finished work."""
    for future, row in list(inflight.items()):
        if future.cancel():
            continue
        try:
            rendered = future.result(timeout=60)
        except BaseException:
            continue
        _mark(job, row, rendered, backend)


def parse_frame_list(text: str, frame_count: int) -> List[int]:
    """'10-20,45' -> [10..20, 45]; ranges are inclusive, as users write them."""
    frames: Set[int] = set()
    for part in filter(None, (p.strip() for p in text.split(","))):
        try:
            if "-" in part:
                first, last = (int(x) for x in part.split("-", 1))
                frames.update(range(first, last + 1))
            else:
                frames.add(int(part))
        except ValueError:
            raise SpecError(f"Cannot read frame list '{text}'; write it like 10-20,45.") from None
    if not frames:
        raise SpecError("No frames given; write them like 10-20,45.")
    outside = sorted(f for f in frames if f < 0 or f >= frame_count)
    if outside:
        raise SpecError(f"Frame {outside[0]} is outside this job (frames 0-{frame_count - 1}).")
    return sorted(frames)


def schedule_redo(job: Job, frames: List[int], overrides: Dict[str, Any]) -> None:
    """Mark frames for another attempt; the current output is kept under history/."""
    for key in overrides:
        if key.startswith(REDO_FORBIDDEN_PREFIXES):
            raise SpecError(f"'{key}' applies to the whole job and cannot change in a redo; start a new job instead.")
    job.spec.with_overrides(overrides)  # validate before touching anything
    for idx in frames:
        row = job.ledger.frame(idx)
        kept_as = None
        if row.status == "done" and job.out_path(idx).exists():
            history = job.history_path(idx, row.attempt)
            history.parent.mkdir(exist_ok=True)
            if not history.exists():
                shutil.copy2(job.out_path(idx), history)
            kept_as = str(history.relative_to(job.root))
        job.ledger.start_redo(idx, overrides, kept_as)


def run_job(
    job: Job,
    backend: Optional[Backend] = None,
    on_event: EventCallback = _noop,
    cancel: Optional[CancelToken] = None,
    finish: bool = True,
) -> RenderSummary:
    """The whole job: prepare (once), preflight, render what is pending, then outputs."""
    from .outputs import write_outputs

    cancel = cancel or CancelToken()

    def prep_progress(count: int, total: Optional[int]) -> None:
        on_event(RenderEvent("stage", "prepare", count, total or 0, message="decoding frames and canny maps"))

    if not job.prepared:
        on_event(RenderEvent("stage", "prepare", message="decoding frames and canny maps"))
        prepare(job, on_progress=prep_progress, should_stop=lambda: cancel.cancelled)
        if cancel.cancelled:
            raise Cancelled("Cancelled while preparing frames; `vidstyle resume` continues the job.")
    own_backend = backend is None
    if backend is None:
        backend = create_backend(job.spec, on_status=lambda msg: on_event(RenderEvent("status", "render", message=msg)))
    try:
        on_event(RenderEvent("stage", "preflight", message=f"checking the {backend.name} backend"))
        backend.preflight()
        summary = render_pending(job, backend, on_event, cancel)
    finally:
        if own_backend:
            backend.close()
    if summary.failed:
        first = min(summary.failed)
        raise JobStateError(
            f"{len(summary.failed)} frame(s) failed (first: frame {first}: {summary.failed[first]}); "
            f"fix the cause and run `vidstyle resume {job.root}` to render them."
        )
    if finish:
        on_event(RenderEvent("stage", "finish", message="encoding result.mp4, compare.mp4 and the report"))
        write_outputs(job, on_event)
    on_event(RenderEvent("done", "finish", job.ledger.frame_count(), job.ledger.frame_count(), message=str(job.result_path)))
    return summary
