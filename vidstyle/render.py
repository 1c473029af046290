"""The frame loop: prepare, preflight, render pending frames, finish.

It knows nothing about HTTP, the WebUI or diffusers: it builds an Img2ImgRequest per
frame, calls the backend from `backend.concurrency` worker threads, and records results
from the main thread only. Long work reports through one callback of RenderEvents
(k-diffusion style), never prints.
"""

from __future__ import annotations

import dataclasses
import heapq
import shutil
import threading
import time
from collections.abc import Callable
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from PIL import Image

from . import atomic, coherence
from .backends import create_backend
from .backends.base import (
    Backend,
    Img2ImgRequest,
    WorkerProgressSource,
    renders_at_once,
    set_frame_progress,
)
from .background_prepare import BackgroundPrepare, prepares_while_rendering
from .errors import BackendError, Cancelled, JobStateError, SpecError
from .events import EventCallback, ProgressEvent, ignore_event, status_reporter
from .flow_prefetch import SourceFlows
from .frame_feed import FrameFeed, RecentOutputs
from .imageio import decode_png, read_png, write_png
from .infotext import build_parameters
from .job import Job, check_new_job, create_job, prepare
from .ledger import FrameRow
from .ordered_turns import OrderedTurns
from .spec import JobSpec, frame_seed

if TYPE_CHECKING:
    from .scores import Measurements

# The render loop's events are the project's one progress event; the old name stays for callers.
RenderEvent = ProgressEvent


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
    failed: dict[int, str] = field(default_factory=dict)
    seconds: float = 0.0


def worker_progress(backend: Backend) -> list[dict[str, Any]] | None:
    """The backend's optional `worker_progress` (WorkerProgressSource) as plain dicts, else None."""
    workers = backend.worker_progress if isinstance(backend, WorkerProgressSource) else None
    if workers is None:
        return None
    return [
        dataclasses.asdict(item) if dataclasses.is_dataclass(item) and not isinstance(item, type) else dict(item)
        for item in workers
    ]


# Below this fraction the WebUI has not finished a sampling step of the frame: its progress
# reads 1 % (a floor) while it loads models and encodes the init image, so its eta_relative is
# elapsed x 99 and climbs with every poll.
TRUSTED_FRACTION = 0.05
CANCELLED_MESSAGE = "Render cancelled; the job is saved and `vidstyle resume` continues it."


def _attach_frame_progress(backend: Backend, on_event: EventCallback, counts: dict[str, int], rate: _Rate) -> None:
    """Let a one-at-a-time backend that reports progress inside a frame refine the ETA.

    For long frames (a WebUI at high resolution) the frame rate alone moves in jumps; the
    WebUI's /sdapi/v1/progress fraction fills the gaps. Its eta_relative assumes the frame
    advances evenly from the moment the WebUI took it, which is far off early in a frame, so
    it is used only while no frame of ours has been timed yet, and not before sampling runs.
    """
    # A WebUI backend has the next frame queued behind the rendering one: it renders one at a time.
    if renders_at_once(backend) != 1:
        return

    def on_progress(fraction: float, frame_eta: float | None) -> None:
        per_frame = rate.seconds_per_frame()
        if per_frame is not None:
            left_in_frame: float | None = per_frame * (1.0 - fraction)
        elif frame_eta is not None and fraction >= TRUSTED_FRACTION:
            left_in_frame = frame_eta
            per_frame = frame_eta / max(1e-3, 1.0 - fraction)
        else:
            left_in_frame = None  # unknown: the bar still moves with the fraction
        remaining = max(0, counts["total"] - counts["done"] - 1)
        eta = None if left_in_frame is None or per_frame is None else left_in_frame + remaining * per_frame
        on_event(
            RenderEvent(
                "progress",
                "render",
                counts["done"],
                counts["total"],
                fps=rate.fps(),
                eta_seconds=eta,
                frame_fraction=fraction,
            )
        )

    set_frame_progress(backend, on_progress)


class _Rate:
    """Frames/s over a sliding window, for the ETA, and the backend's time per frame."""

    def __init__(self, window: int = 20) -> None:
        self.times: list[float] = []
        self.window = window
        self._lock = threading.Lock()
        self._render_seconds: list[float] = []

    def tick(self) -> None:
        self.times.append(time.monotonic())
        self.times = self.times[-self.window :]

    def fps(self) -> float | None:
        times = self.times
        if len(times) < 2:
            return None
        span = times[-1] - times[0]
        return (len(times) - 1) / span if span > 0 else None

    def add_render(self, seconds: float) -> None:
        """From worker threads: how long one backend call took."""
        with self._lock:
            self._render_seconds = (self._render_seconds + [seconds])[-self.window :]

    def seconds_per_frame(self) -> float | None:
        """Measured time per frame: from the frame rate, or after the first frame from its backend call."""
        fps = self.fps()
        if fps:
            return 1.0 / fps
        with self._lock:
            measured = list(self._render_seconds)
        return sum(measured) / len(measured) if measured else None


# Redo may change how a frame is sampled, not what was prepared for the whole job: these are
# the only fields (a trailing '.' takes a whole section) whose value may differ between a
# redo's spec and the job's. Anything not listed, including fields added later, stays fixed.
REDO_FIELDS = (
    "prompt",
    "negative_prompt",
    "model.",
    "controlnet.enabled",
    "controlnet.model",
    "controlnet.weight",
    "controlnet.guidance_start",
    "controlnet.guidance_end",
    "controlnet.control_mode",
    "controlnet.preprocessor",
    "controlnet.pixel_perfect",
    "sampling.",
)


def redo_may_change(dotted: str) -> bool:
    return any(dotted == name or (name.endswith(".") and dotted.startswith(name)) for name in REDO_FIELDS)


def flat_fields(data: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """{'size': {'width': 512}} -> {'size.width': 512}; lists are one value."""
    flat: dict[str, Any] = {}
    for key, value in data.items():
        if isinstance(value, dict):
            flat.update(flat_fields(value, f"{prefix}{key}."))
        else:
            flat[f"{prefix}{key}"] = value
    return flat


def check_redo_overrides(spec: JobSpec, overrides: dict[str, Any]) -> JobSpec:
    """The spec a redo renders with, after comparing it with the job's field by field.

    Comparing values, not the keys given, catches a whole-section override such as
    {"size": {...}} and settings that an override resets to their defaults.
    """
    merged = spec.with_overrides(overrides)  # validates: a bad key or value is a SpecError
    before, after = flat_fields(spec.dict()), flat_fields(merged.dict())
    for key in sorted(before.keys() | after.keys()):
        if before.get(key) != after.get(key) and not redo_may_change(key):
            raise SpecError(f"'{key}' applies to the whole job and cannot change in a redo; start a new job instead.")
    if merged.sampling.seed < 0:
        raise SpecError(
            "A redo needs a seed: give sampling.seed a value (0 or more) or leave it out to keep the job's."
        )
    return merged


# A redo that names the seed renders with exactly that seed (no per-attempt shift).
SEED_KEY = "sampling.seed"


def frame_spec(job: Job, overrides: dict[str, Any], cache: dict[str, JobSpec]) -> JobSpec:
    key = repr(sorted(overrides.items()))
    if key not in cache:
        cache[key] = job.spec.with_overrides(overrides) if overrides else job.spec
    return cache[key]


def build_request(
    job: Job, row: FrameRow, spec: JobSpec, guided: coherence.FrameInputs | None = None
) -> Img2ImgRequest:
    """The request for one frame; `guided`: a flow/keyframe init (the source frame travels beside it)."""
    init_png = job.src_path(row.idx).read_bytes()
    control_png = job.control_path(row.idx).read_bytes()
    # OpenCV decodes these without the GIL, several times faster than Pillow (the same pixels).
    control_image = Image.fromarray(decode_png(control_png))
    if guided is not None:
        source = guided.source if guided.source is not None else decode_png(init_png)
        return replace(
            _request(row, spec, Image.fromarray(guided.init), control_image, None, control_png),
            denoise=guided.denoise,
            source_image=Image.fromarray(source),
            source_png=init_png,
        )
    return _request(row, spec, Image.fromarray(decode_png(init_png)), control_image, init_png, control_png)


def _request(
    row: FrameRow,
    spec: JobSpec,
    init_image: Image.Image,
    control_image: Image.Image,
    init_png: bytes | None,
    control_png: bytes,
) -> Img2ImgRequest:
    seed = frame_seed(spec, row.idx, row.attempt, seed_given=SEED_KEY in row.overrides)
    return Img2ImgRequest.for_spec(
        spec, row.idx, init_image, control_image, seed, init_png=init_png, control_png=control_png
    )


@dataclass
class _Rendered:
    seed: int
    render_ms: float
    info: dict[str, Any]


def _render_one(
    job: Job,
    row: FrameRow,
    spec: JobSpec,
    backend: Backend,
    slots: OrderedTurns,
    ticket: int,
    rate: _Rate,
    step: coherence.FrameStep | None,
    force_render: bool,
    flows: SourceFlows | None,
    outputs: RecentOutputs,
) -> _Rendered:
    """Worker thread: read inputs, call the backend, write the output PNG.

    File I/O happens here so it overlaps with other frames; only the ledger update (which
    makes the frame count as done) happens on the main thread, after the file is in place.
    A flow or in-between frame reads the outputs it depends on from their PNGs, or from the
    memory copy of exactly that file (`outputs`), so a resumed chain starts from the pixels an
    unbroken run had.
    """
    step = step or coherence.FrameStep(row.idx, "alone")
    read_src = lambda idx: read_png(job.src_path(idx))  # noqa: E731
    read_out = lambda idx: outputs.read(job.out_path(idx))  # noqa: E731
    guided = None
    if step.how in ("flow", "between"):
        started = time.perf_counter()
        guided = coherence.frame_inputs(step, spec, read_src, read_out, force_render, flows)
        if guided.finished is not None:  # a keyframe fill: no backend call, so no slot either
            slots.withdraw(ticket)
            seed = frame_seed(spec, row.idx, row.attempt, seed_given=SEED_KEY in row.overrides)
            write_png(
                job.out_path(row.idx),
                guided.finished,
                text={"parameters": f"filled from keyframes {step.before} and {step.after} by optical flow"},
            )
            outputs.remember(job.out_path(row.idx), guided.finished)
            return _Rendered(seed=seed, render_ms=(time.perf_counter() - started) * 1000.0, info=guided.info)
    request = build_request(job, row, spec) if guided is None else build_request(job, row, spec, guided)
    with slots.turn(ticket):  # in queue order, never more calls in flight than the backend allows
        started = time.perf_counter()
        result = backend.img2img(request)
        render_ms = (time.perf_counter() - started) * 1000.0
        rate.add_render(render_ms / 1000.0)  # before the next frame starts: its progress uses this
    # Hand the GIL to the thread waiting for the slot before converting the result: the conversion
    # allocates a new multi-MB buffer while holding the GIL, and first-touch page faults can make
    # that take tens of ms, all of which the next frame's thread (and the backend) would wait out.
    time.sleep(0)
    image = result.image.convert("RGB")
    if image.size != (spec.size.width, spec.size.height):
        image = image.resize((spec.size.width, spec.size.height), Image.Resampling.LANCZOS)
    pixels = coherence.match_output(np.asarray(image), step, spec, read_out)
    parameters = result.info.get("parameters") or build_parameters(spec, request.seed, row.idx)
    write_png(job.out_path(row.idx), pixels, text={"parameters": str(parameters)})
    outputs.remember(job.out_path(row.idx), pixels)
    info = {k: v for k, v in result.info.items() if k != "parameters"}
    if guided is not None:
        info.update(guided.info)
    elif spec.coherence.mode != "independent" or step.colour_ref is not None:
        info.update({"made_by": "img2img", "coherence": step.how})
    return _Rendered(seed=request.seed, render_ms=render_ms, info=info)


def _mark(job: Job, row: FrameRow, rendered: _Rendered, backend: Backend) -> None:
    job.ledger.mark_done(row.idx, rendered.seed, backend.name, rendered.render_ms, rendered.info)


class _PrepareGate:
    """Which frames a BackgroundPrepare's rows let into the render queue: those still to render."""

    def __init__(self, job: Job, feed: BackgroundPrepare, todo: list[int]) -> None:
        self._feed = feed
        self._todo = set(todo)
        self._known = job.ledger.frame_count()  # prepare inserts rows 0, 1, 2, ... in order

    @property
    def exhausted(self) -> bool:
        return self._feed.exhausted

    def admit(self, timeout: float) -> list[int]:
        rows = self._feed.take(timeout)
        return [idx for idx, _, _ in rows if idx in self._todo or idx >= self._known]

    def total(self) -> int:
        """The job's frame count: the selection's estimate until the last frame is prepared."""
        if self._feed.exhausted:
            return self._feed.count
        return max(self._feed.count, self._known, self._feed.estimated_frames or 0)


def render_pending(
    job: Job,
    backend: Backend,
    on_event: EventCallback = ignore_event,
    cancel: CancelToken | None = None,
    max_retries: int = 2,
    on_done: Callable[[int], None] | None = None,
    prepare_feed: BackgroundPrepare | None = None,
) -> RenderSummary:
    """Render every frame not yet done; returns what was rendered and what failed.

    `on_done(idx)` hears of each frame once its output and ledger row are in place (the
    threads that score and encode behind the render loop follow it). With `prepare_feed`
    frames enter as they are prepared (the job's plan must not need later frames).

    A frame is queued once the frames it depends on (its coherence plan's chain predecessor,
    keyframes, colour reference) are done; independent frames and separate chains (scenes)
    run side by side across the backend's slots, lowest frame index first.
    """
    cancel = cancel or CancelToken()
    todo = job.ledger.todo()
    gate = _PrepareGate(job, prepare_feed, todo) if prepare_feed is not None else None
    if gate is not None:
        todo = []  # each enters once its files are written again (a redo after dropped intermediates)
    total = gate.total() if gate else job.ledger.frame_count()
    done = job.ledger.counts()["done"]
    summary = RenderSummary()
    rate = _Rate()
    specs: dict[str, JobSpec] = {}
    retries: dict[int, int] = {}
    plan = coherence.job_plan(job) if todo else None
    for note in plan.notes if plan else []:
        on_event(RenderEvent("status", "render", done, total, message=note))
    followers_of = job.ledger.get_meta(coherence.FOLLOWERS_META, {}) or {}
    waiting: dict[int, set[int]] = {}
    dependents: dict[int, list[int]] = {}
    queue: list[int] = []  # a heap of frames whose dependencies are done
    pending = set(todo)
    for idx in todo:
        deps = {d for d in plan.steps[idx].deps if d in pending} if plan else set()
        waiting[idx] = deps
        for dep in deps:
            dependents.setdefault(dep, []).append(idx)
        if not deps:
            queue.append(idx)
    heapq.heapify(queue)
    inflight: dict[Future[_Rendered], FrameRow] = {}
    started = time.monotonic()
    workers = max(1, int(getattr(backend, "concurrency", 1)))
    slots = OrderedTurns(workers)
    counts = {"done": done, "total": total}
    _attach_frame_progress(backend, on_event, counts, rate)
    message = "frames render as they are prepared" if gate else f"{len(todo)} frames to render"
    on_event(RenderEvent("stage", "render", done=done, total=total, message=message))
    # One thread more than backend slots, so reading and writing PNGs overlaps the backend call.
    pool = ThreadPoolExecutor(max_workers=workers + 1, thread_name_prefix="vidstyle-frame")
    # Source-to-source flow needs no output: estimated ahead, on a thread of its own, while the backend renders.
    flows = (
        SourceFlows(
            [plan.steps[idx] for idx in todo],
            lambda idx: read_png(job.src_path(idx)),
            source_mix=job.spec.coherence.source_mix,
        )
        if plan
        else None
    )
    outputs = RecentOutputs()
    try:
        while queue or inflight or (gate and not gate.exhausted):
            if cancel.cancelled:
                raise Cancelled(CANCELLED_MESSAGE)
            if gate is not None and not gate.exhausted:
                for idx in gate.admit(timeout=0.0 if queue or inflight else 0.25):
                    pending.add(idx)
                    waiting[idx] = set()
                    heapq.heappush(queue, idx)
                total = counts["total"] = gate.total()
            while queue and len(inflight) < workers + 2:
                row = job.ledger.frame(heapq.heappop(queue))
                spec = frame_spec(job, row.overrides, specs)
                step = plan.steps[row.idx] if plan else None
                # A redo of an in-between frame asks for a new sample; one re-run only because its
                # keyframes changed is filled again.
                force = row.attempt > 0 and followers_of.get(str(row.idx)) != row.attempt
                ticket = slots.ticket()
                future = pool.submit(
                    _render_one, job, row, spec, backend, slots, ticket, rate, step, force, flows, outputs
                )

                def release(_done: Future[_Rendered], ticket: int = ticket) -> None:
                    slots.withdraw(ticket)

                future.add_done_callback(release)
                inflight[future] = row
            if not inflight:
                continue
            # While frames are still being prepared, look for new ones often.
            poll = 0.02 if gate and not gate.exhausted else 0.25
            finished, _ = wait(list(inflight), timeout=poll, return_when=FIRST_COMPLETED)
            for future in finished:
                row = inflight.pop(future)
                try:
                    rendered = future.result()
                except Cancelled:
                    raise
                except BackendError as exc:
                    retries[row.idx] = retries.get(row.idx, 0) + 1
                    if retries[row.idx] <= max_retries:
                        heapq.heappush(queue, row.idx)
                        on_event(
                            RenderEvent(
                                "status", "render", done, total, row.idx, message=f"frame {row.idx}: {exc}; retrying"
                            )
                        )
                        continue
                    job.ledger.mark_failed(row.idx, str(exc))
                    summary.failed[row.idx] = str(exc)
                    on_event(RenderEvent("failed", "render", done, total, row.idx, message=str(exc)))
                    blocked = [idx for idx in plan.followers([row.idx]) if idx in pending] if plan else []
                    if blocked:
                        on_event(
                            RenderEvent(
                                "status",
                                "render",
                                done,
                                total,
                                row.idx,
                                message=(
                                    f"frames {describe_frames(blocked)} start from frame {row.idx} and wait for it; "
                                    "`vidstyle resume` renders them once it renders"
                                ),
                            )
                        )
                    continue
                _mark(job, row, rendered, backend)
                if on_done is not None:
                    on_done(row.idx)
                for follower in dependents.pop(row.idx, []):
                    waiting[follower].discard(row.idx)
                    if not waiting[follower]:
                        heapq.heappush(queue, follower)
                done += 1
                counts["done"] = done
                summary.rendered += 1
                rate.tick()
                fps = rate.fps()
                eta = (total - done) / fps if fps else None
                on_event(
                    RenderEvent(
                        "frame",
                        "render",
                        done,
                        total,
                        row.idx,
                        fps,
                        eta,
                        image_path=str(job.out_path(row.idx)),
                        workers=worker_progress(backend),
                    )
                )
        # A cancel can stop the preparing thread after the loop's last look at the token: the
        # loop then ends with frames never prepared, which must not pass for a finished render.
        if gate is not None and cancel.cancelled:
            raise Cancelled(CANCELLED_MESSAGE)
    except (KeyboardInterrupt, Cancelled) as stop:
        # Cancelled without our token set came from the backend itself (the WebUI's own
        # Interrupt or Stop generating button): its message says which button stopped the job.
        by_backend = isinstance(stop, Cancelled) and not cancel.cancelled
        cancel.cancel()
        backend.interrupt()
        _drain(inflight, job, backend)
        raise Cancelled(str(stop) if by_backend else CANCELLED_MESSAGE) from None
    except BaseException:
        backend.interrupt()
        _drain(inflight, job, backend)
        raise
    finally:
        pool.shutdown(wait=True, cancel_futures=True)
        if flows is not None:
            flows.close()
    summary.seconds = time.monotonic() - started
    return summary


def _drain(inflight: dict[Future[_Rendered], FrameRow], job: Job, backend: Backend) -> None:
    """Keep frames that finished while we were stopping; never lose finished work."""
    for future, row in list(inflight.items()):
        if future.cancel():
            continue
        try:
            rendered = future.result(timeout=60)
        except BaseException:
            continue
        _mark(job, row, rendered, backend)


def parse_frame_list(text: str, frame_count: int) -> list[int]:
    """'10-20,45' -> [10..20, 45]; ranges are inclusive, as users write them.

    Every range is checked against the job's frames before any is expanded, so the work and
    memory a list costs stay bounded by the job's length, whatever numbers it names.
    """
    shown = text if len(text) <= 80 else text[:77] + "..."
    ranges: list[tuple[int, int]] = []
    for part in filter(None, (p.strip() for p in text.split(","))):
        try:
            start, _, end = part.partition("-")
            ranges.append((int(start), int(end) if end else int(start)))
        except ValueError:
            raise SpecError(f"Cannot read frame list '{shown}'; write it like 10-20,45.") from None
    if not ranges:
        raise SpecError("No frames given; write them like 10-20,45.")
    for first, last in ranges:
        if last < first:
            raise SpecError(f"Frame range {first}-{last} runs backwards; write the first frame first.")
        for frame in (first, last):
            if frame < 0 or frame >= frame_count:
                raise SpecError(f"Frame {frame} is outside this job (frames 0-{frame_count - 1}).")
    frames: set[int] = set()
    for first, last in ranges:
        frames.update(range(first, last + 1))
    return sorted(frames)


def _keep_current(job: Job, row: FrameRow) -> str | None:
    """Copy a done frame's output into history/ before it is rendered again; its path for the ledger."""
    if row.status != "done" or not job.out_path(row.idx).exists():
        return None
    history = job.history_path(row.idx, row.attempt)
    history.parent.mkdir(exist_ok=True)
    if not history.exists():  # atomic: a half-copied file here would be taken as kept on the next redo
        with atomic.atomic_path(history) as tmp:
            shutil.copy2(job.out_path(row.idx), tmp)
    return str(history.relative_to(job.root))


def chain_followers(job: Job, frames: list[int]) -> list[int]:
    """Done frames whose output depends on any of `frames` (later frames of a flow chain, the
    in-between frames of a keyframe, frames colour-matched to it): a redo changes them too."""
    if job.spec.coherence.mode == "independent" and job.spec.coherence.color_match == "off":
        return []
    followers = coherence.job_plan(job).followers(frames)
    return [idx for idx in followers if job.ledger.frame(idx).status == "done"]


def describe_frames(frames: list[int]) -> str:
    """[41, 42, 43, 50] -> '41–43, 50' (how people write frame ranges)."""
    runs: list[list[int]] = []
    for idx in sorted(frames):
        if runs and idx == runs[-1][1] + 1:
            runs[-1][1] = idx
        else:
            runs.append([idx, idx])
    return ", ".join(str(a) if a == b else f"{a}–{b}" for a, b in runs)


def followers_message(job: Job, frames: list[int], followers: list[int], scheduled: bool) -> str:
    """'frames 41–59 follow frame 40 in its flow chain and will be re-rendered' (or the --only warning)."""
    many, several = len(followers) > 1, len(frames) > 1
    subject = f"frame{'s' if many else ''} {describe_frames(followers)}"
    named = f"frame{'s' if several else ''} {describe_frames(frames)}"
    chain = {"flow": "flow chain", "keyframes": "keyframe segment"}.get(job.spec.coherence.mode)
    if chain:
        lead = f"{subject} follow{'' if many else 's'} {named} in {'their' if several else 'its'} {chain}"
    else:  # independent frames colour-matched to a reference
        lead = f"{subject} take{'' if many else 's'} {'their' if many else 'its'} colours from {named}"
    if scheduled:
        return f"{lead} and will be re-rendered"
    again = describe_frames(followers).replace("–", "-").replace(", ", ",")
    return (
        f"warning: {lead} and keep {'their' if many else 'its'} current output (--only); redo later with --frames "
        f"{again}"
    )


def schedule_redo(job: Job, frames: list[int], overrides: dict[str, Any], followers: bool = False) -> list[int]:
    """Mark frames for another attempt; the current output is kept under history/.

    `followers`: also re-render the done frames that depend on these (chain_followers), with
    their own settings; returns them. Their attempts are recorded as followers' so an
    in-between frame among them is filled again rather than sent to img2img.
    """
    check_redo_overrides(job.spec, overrides)  # before touching anything
    after = chain_followers(job, frames) if followers else []
    with job.ledger.transaction():
        for idx in frames:
            job.ledger.start_redo(idx, overrides, _keep_current(job, job.ledger.frame(idx)))
        _schedule_as_followers(job, after)
    return after


def schedule_followers(job: Job, frames: list[int]) -> list[int]:
    """Re-render only the done frames that depend on `frames` (not those), with their own settings:
    what repair needs after it kept a new attempt of a frame inside a chain. Returns them."""
    after = chain_followers(job, frames)
    with job.ledger.transaction():
        _schedule_as_followers(job, after)
    return after


def _schedule_as_followers(job: Job, after: list[int]) -> None:
    marks = dict(job.ledger.get_meta(coherence.FOLLOWERS_META, {}) or {})
    for idx in after:
        row = job.ledger.frame(idx)
        marks[str(idx)] = job.ledger.start_redo(idx, row.overrides, _keep_current(job, row))
    if after:
        job.ledger.set_meta(coherence.FOLLOWERS_META, marks)


def preflight(backend: Backend, on_event: EventCallback = ignore_event) -> None:
    """The backend's check that models, LoRAs and ControlNet exist, announced as a stage."""
    on_event(RenderEvent("stage", "preflight", message=f"checking the {backend.name} backend"))
    backend.preflight()


def start_job(
    spec: JobSpec, root: Path, backend: Backend, on_event: EventCallback = ignore_event, replace_unstarted: bool = False
) -> Job:
    """Check, preflight, then create: the job folder appears only once frame 1 can render.

    Every check that can fail before frame 1 (source readable, selection not empty, output
    folder usable, the backend's preflight) runs before anything is written. Pass the job
    to run_job(..., preflighted=True) with the same backend.
    """
    checked = check_new_job(spec, root, replace_unstarted)
    preflight(backend, on_event)
    return create_job(checked.spec, root, info=checked.info, replace_unstarted=replace_unstarted)


def _score_and_repair(
    job: Job,
    backend: Backend,
    on_event: EventCallback,
    cancel: CancelToken,
    repair: bool,
    frames: list[int] | None,
    measured: Measurements | None = None,
) -> None:
    """Finish stage, before outputs: scores for every frame, then (if asked) repair of the suspects
    or of the hand-picked `frames` (each gets every attempt of the schedule; the best is kept).
    `measured`: what was measured while rendering (only changed frames are measured again)."""
    from .repair import repair_frames, repair_job
    from .scores import score_job

    if frames:
        score_job(job, on_event, measured)
        repair_frames(job, backend, frames, on_event, cancel, stop_when_good=False)
        score_job(job, on_event, measured)
    elif repair:
        repair_job(job, backend, on_event, cancel, measured=measured)
    else:
        score_job(job, on_event, measured)


class _Followers:
    """Scoring and encoding on their own threads, a few frames behind the render loop (frame_feed)."""

    def __init__(self, job: Job, preparing: bool) -> None:
        from .outputs import EncodeFollower
        from .report_html import preload_plotting
        from .scores import ScoreFollower

        known = job.ledger.frame_count()
        # While frames are still being prepared the count comes later (BackgroundPrepare's on_total).
        self.feed = FrameFeed(set(range(known)) - set(job.ledger.todo()), None if preparing else known)
        self.scores = ScoreFollower(job, self.feed)
        try:
            self.encodes = EncodeFollower(job, self.feed)
        except BaseException:  # the score thread is running already: stop it, not leave it waiting
            self.feed.abort()
            self.scores.join()
            raise
        preload_plotting()

    def stop(self) -> None:
        """The run ends without outputs: the threads drop their work (a sealed feed keeps it)."""
        self.encodes.close(publish=False)
        self.encodes.videos()
        self.scores.join()


def run_job(
    job: Job,
    backend: Backend | None = None,
    on_event: EventCallback = ignore_event,
    cancel: CancelToken | None = None,
    finish: bool = True,
    preflighted: bool = False,
    repair: bool | None = None,
    repair_frames: list[int] | None = None,
) -> RenderSummary:
    """The whole job: preflight, prepare (once), render what is pending, score, repair, then outputs.

    Preflight comes first, so a missing model or LoRA is reported before a long video is
    decoded; `preflighted` says the caller already ran it on this backend (start_job).
    `repair`: re-render suspect frames (None: as the job's repair.enabled says); `repair_frames`:
    run the repair schedule on these frames instead (a hand-picked redo, best attempt kept).
    Scores and the two videos are made while frames render (see _Followers); the finish stage
    only measures and encodes again what repair changed.
    """
    from .outputs import write_outputs

    cancel = cancel or CancelToken()
    repairs = bool(repair_frames) or (job.spec.repair.enabled if repair is None else repair)

    own_backend = backend is None
    if backend is None:
        backend = create_backend(
            job.spec,
            on_status=status_reporter(on_event),
            webui_auth=job.webui_auth,
        )
    encoded = None
    followers: _Followers | None = None
    preparing: BackgroundPrepare | None = None
    try:
        if not preflighted:
            preflight(backend, on_event)
        streamed = not job.prepared and prepares_while_rendering(job.spec)
        if not job.prepared and not streamed:
            on_event(RenderEvent("stage", "prepare", message="decoding frames and canny maps"))
            prepare(job, on_event, should_stop=lambda: cancel.cancelled)
            if cancel.cancelled:
                raise Cancelled("Cancelled while preparing frames; `vidstyle resume` continues the job.")
        if streamed:
            on_event(RenderEvent("stage", "prepare", message="decoding frames and canny maps as the first ones render"))
            preparing = BackgroundPrepare(job, should_stop=lambda: cancel.cancelled)
        if finish:
            coherence.scene_cuts(job)  # stored before the encoder threads read the scenes
            followers = _Followers(job, preparing=streamed)
            if preparing is not None:
                preparing.on_total = followers.feed.set_total
        on_done = followers.feed.mark_done if followers else None
        summary = render_pending(job, backend, on_event, cancel, on_done=on_done, prepare_feed=preparing)
        if followers is not None and not summary.failed:
            if not repairs:  # no frame changes any more: the encoders finish while scores are read
                followers.encodes.close(publish=True)
            _score_and_repair(job, backend, on_event, cancel, repairs, repair_frames, followers.scores.join())
            followers.encodes.close(publish=True)
            encoded = followers.encodes.videos()
    finally:
        if preparing is not None:
            preparing.stop()
        if followers is not None:
            followers.stop()
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
        write_outputs(job, on_event, encoded)
    on_event(
        RenderEvent("done", "finish", job.ledger.frame_count(), job.ledger.frame_count(), message=str(job.result_path))
    )
    return summary
