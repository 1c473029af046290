"""Scale-out backend: the diffusers backend in N Ray actors, across GPUs and machines.

Each actor (`RayWorker`) builds one `DiffusersBackend` from the job's spec and keeps its
pipeline loaded; the render loop calls `img2img` from `concurrency` = N threads and each call
goes to the next idle actor, so frames go to actors as they free up. The driver (this
process) alone writes frame PNGs and the ledger: an actor only turns a request into pixels.

Faults are Ray's business, not a loop of ours: actors are created with `max_restarts` and
`max_task_retries`, so when an actor's process or node dies Ray starts it again (on any node
that fits) and re-runs the frame it had; the driver still receives one result per frame and
records it once. Only an actor Ray gave up on is dropped; its frame goes to another actor,
and when none is left the job stops with one sentence and stays resumable.

A flow chain (frames that must render in order, each from the previous output) takes one
actor for its whole length through `lease()`.

Pixels equal the single-process diffusers backend's: the request (seed included) is built by
the driver from the spec, and each actor runs the same code with one torch thread.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
from collections import deque
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, replace
from typing import Any

from ..errors import BackendError, Cancelled, PreflightError, VidstyleError
from ..spec import JobSpec
from .base import Img2ImgRequest, Img2ImgResult, StatusCallback

try:  # an optional extra: vidstyle[ray]
    import ray
    from ray.exceptions import ActorDiedError, RayActorError, RayTaskError, TaskCancelledError
except ImportError as _exc:  # pragma: no cover - depends on the environment
    ray = None  # type: ignore[assignment]
    _IMPORT_ERROR: ImportError | None = _exc
else:
    _IMPORT_ERROR = None

log = logging.getLogger("vidstyle.ray")

# Times Ray starts a lost worker again (each restart loads its models anew) before giving up on it.
MAX_RESTARTS = 4
# -1: a frame whose worker died is re-run by Ray on the restarted worker as long as restarts remain.
MAX_TASK_RETRIES = -1
STATUS_INTERVAL = 10.0  # seconds between per-worker progress lines
CONNECT_TIMEOUT = 5.0  # seconds to reach a cluster's address before saying it does not answer
CONTROL_GROUP = "control"  # actor methods that must answer while a frame renders (interrupt, where)


class WorkersLostError(VidstyleError):
    """Every Ray worker is gone; the job keeps what it rendered and resumes later."""

    exit_code = 5


def _require_ray() -> None:
    if _IMPORT_ERROR is not None:
        raise PreflightError(
            "The ray backend needs Ray; install it with: pip install 'vidstyle[ray]' "
            "(the same Ray, Python and vidstyle versions on every node)."
        )


# ----- the actor ----------------------------------------------------------------------------


class RayWorker:
    """Runs in a Ray actor process: one DiffusersBackend, loaded once, rendering one frame at a time."""

    def __init__(self, spec_data: dict[str, Any], torch_threads: int = 1) -> None:
        import torch

        from ..spec import build_spec
        from .diffusers import DiffusersBackend

        # Pixels must not depend on how many threads split a convolution; one per actor also
        # keeps N actors on N cores from contending.
        torch.set_num_threads(torch_threads)
        self._backend = DiffusersBackend(build_spec(spec_data))

    def where(self) -> dict[str, Any]:
        from .. import __version__

        context = ray.get_runtime_context()
        return {
            "pid": os.getpid(),
            "host": socket.gethostname(),
            "node_id": context.get_node_id(),
            "ip": ray.util.get_node_ip_address(),
            "vidstyle": __version__,
        }

    def preflight(self) -> None:
        self._backend.preflight()

    def render(self, request: Img2ImgRequest) -> tuple[Img2ImgResult, int, float]:
        """The frame, this process's pid (a new pid means Ray restarted this worker) and its render seconds."""
        started = time.perf_counter()
        result = self._backend.img2img(request)
        return result, os.getpid(), time.perf_counter() - started

    def interrupt(self) -> None:
        self._backend.interrupt()


# ----- the driver side ------------------------------------------------------------------------


@dataclass
class WorkerProgress:
    """One worker as the CLI, the tab and the API status show it."""

    worker: str
    node: str
    pid: int
    frames: int
    fps: float | None
    state: str  # "idle" | "rendering" | "lost"


@dataclass
class _Handle:
    index: int
    actor: Any
    node: str = "?"
    pid: int = 0
    frames: int = 0
    first_started: float | None = None
    last_done: float | None = None
    busy: bool = False
    lost: bool = False

    @property
    def label(self) -> str:
        return f"worker {self.index} on {self.node}"

    def fps(self) -> float | None:
        if not self.frames or self.first_started is None or self.last_done is None:
            return None
        span = self.last_done - self.first_started
        return self.frames / span if span > 0 else None


class RayBackend:
    """The Backend protocol over Ray actors that each run the diffusers backend."""

    name = "ray"

    def __init__(self, spec: JobSpec, on_status: StatusCallback | None = None) -> None:
        self.spec = spec
        self._on_status = on_status
        # The render loop reads this after preflight, once the cluster says how many workers fit.
        self.concurrency = spec.backend.ray_workers or 1
        self._cond = threading.Condition()
        self._workers: list[_Handle] = []
        self._idle: deque[_Handle] = deque()
        self._inflight: dict[Any, _Handle] = {}
        self._interrupted = threading.Event()
        self._started_ray = False
        self._last_status = 0.0
        # Seconds of each start-up step of the last preflight (connect, workers up, models loaded).
        self.startup_seconds: dict[str, float] = {}

    # ----- protocol -------------------------------------------------------------------

    def preflight(self) -> None:
        """Connect, start the workers, and run the diffusers preflight on every one of them."""
        _require_ray()
        if self._idle:
            return
        started = time.perf_counter()
        self._connect()
        self.startup_seconds = {"connect": time.perf_counter() - started}
        workers, gpus = self._plan_workers()
        self._status(f"Starting {workers} Ray worker(s) with {gpus:g} GPU each")
        # Ray's stubs omit concurrency_groups from remote()'s overloads; actors accept it.
        actor_class = ray.remote(concurrency_groups={CONTROL_GROUP: 2})(RayWorker).options(  # type: ignore[call-overload]
            num_cpus=1,
            num_gpus=gpus,
            max_restarts=MAX_RESTARTS,
            max_task_retries=MAX_TASK_RETRIES,
            scheduling_strategy="SPREAD",
        )
        handles = [_Handle(i, actor_class.remote(self.spec.dict(), 1)) for i in range(workers)]
        self._workers = handles  # close() kills them even if a check below fails
        for handle, where in zip(handles, self._get_each(handles, "where"), strict=False):
            handle.node, handle.pid = _node_label(where), where["pid"]
        self.startup_seconds["workers_started"] = time.perf_counter() - started
        self._get_each(handles, "preflight")
        self.startup_seconds["models_loaded"] = time.perf_counter() - started
        with self._cond:
            self._idle.extend(handles)
        self.concurrency = workers
        self._status("Ray workers ready: " + ", ".join(h.label for h in handles))

    def img2img(self, request: Img2ImgRequest) -> Img2ImgResult:
        """Render on the next idle worker (a chain of one frame)."""
        with self.lease() as worker:
            return worker.img2img(request)

    @contextmanager
    def lease(self) -> Iterator[WorkerLease]:
        """One worker for a chain of frames that must render in order on the same actor."""
        lease = WorkerLease(self, self._take())
        try:
            yield lease
        finally:
            self._give_back(lease.handle)

    def interrupt(self) -> None:
        """Cancel queued frames and stop running ones at their next step, on every worker."""
        self._interrupted.set()
        with self._cond:
            inflight = list(self._inflight.items())
            self._cond.notify_all()
        for ref, handle in inflight:
            ray.cancel(ref)
            handle.actor.interrupt.options(concurrency_group=CONTROL_GROUP).remote()

    def close(self) -> None:
        """Stop the workers; their progress figures stay readable."""
        with self._cond:
            workers, self._idle = [h for h in self._workers if h.actor is not None], deque()
        if ray is None:
            return
        for handle in workers:
            ray.kill(handle.actor, no_restart=True)
            handle.actor = None
        if self._started_ray and ray.is_initialized():
            ray.shutdown()
            self._started_ray = False

    @property
    def worker_progress(self) -> list[WorkerProgress]:
        """Frames, frames/s and node of each worker (optional attribute; the status lines carry it too)."""
        with self._cond:
            return [
                WorkerProgress(
                    f"worker {h.index}",
                    h.node,
                    h.pid,
                    h.frames,
                    h.fps(),
                    "lost" if h.lost else "rendering" if h.busy else "idle",
                )
                for h in self._workers
            ]

    # ----- connecting and planning ----------------------------------------------------

    def _connect(self) -> None:
        if ray.is_initialized():  # a process already connected (a notebook, the tests) keeps its cluster
            return
        address = _cluster_address(self.spec.backend.ray_address)
        if address is not None:
            _check_reachable(address)
        else:
            self._status("No Ray cluster found; starting a local one on this machine for this job")
        try:
            ray.init(
                address=address or "local",
                include_dashboard=False,
                log_to_driver=False,
                logging_level=logging.WARNING,
                configure_logging=False,
            )
        except (ConnectionError, RuntimeError, ValueError) as exc:
            raise PreflightError(
                f"Cannot connect to the Ray cluster at {address or 'this machine'} ({exc}); check it with `ray status`."
            ) from None
        self._started_ray = True

    def _plan_workers(self) -> tuple[int, float]:
        options = self.spec.backend
        resources = ray.cluster_resources()
        cpus, cluster_gpus = int(resources.get("CPU", 0)), float(resources.get("GPU", 0))
        gpus = options.ray_gpus_per_worker
        if gpus is None:
            gpus = 1.0 if cluster_gpus else 0.0
        workers = options.ray_workers or (int(cluster_gpus // gpus) if gpus else cpus)
        if workers < 1 or workers > cpus or workers * gpus > cluster_gpus:
            raise PreflightError(
                f"The Ray cluster has {cpus} CPU(s) and {cluster_gpus:g} GPU(s): {max(workers, 1)} worker(s) with "
                f"{gpus:g} GPU and 1 CPU each do not fit; lower --ray-workers or --ray-gpus-per-worker, or add nodes."
            )
        return workers, gpus

    def _get_each(self, handles: list[_Handle], method: str) -> list[Any]:
        """Call `method` on every worker; the first failure names its worker and node."""
        refs = [getattr(h.actor, method).remote() for h in handles]
        results = []
        for handle, ref in zip(handles, refs, strict=False):
            try:
                results.append(ray.get(ref))
            except RayTaskError as exc:
                cause = exc.cause
                if isinstance(cause, VidstyleError):
                    raise type(cause)(f"On Ray {handle.label}: {cause.message}") from None
                raise PreflightError(
                    f"On Ray {handle.label}: {_first_line(cause)}; check that node's install."
                ) from None
            except RayActorError as exc:
                raise PreflightError(
                    f"Ray {handle.label} could not start ({_first_line(exc)}); check that vidstyle "
                    "and its diffusers extra are installed on that node."
                ) from None
        return results

    # ----- dispatch ---------------------------------------------------------------------

    def _take(self) -> _Handle:
        with self._cond:
            while True:
                if self._interrupted.is_set():
                    raise Cancelled("Rendering was cancelled; resume the job to continue from the last finished frame.")
                if not any(not h.lost for h in self._workers):
                    raise WorkersLostError(
                        "All Ray workers were lost; the finished frames are kept: bring the cluster back "
                        "(`ray status`) and run `vidstyle resume` on the job folder."
                    )
                if self._idle:
                    handle = self._idle.popleft()
                    handle.busy = True
                    return handle
                self._cond.wait()

    def _give_back(self, handle: _Handle) -> None:
        with self._cond:
            handle.busy = False
            if not handle.lost and handle in self._workers:
                self._idle.append(handle)
            self._cond.notify_all()

    def _call(self, handle: _Handle, request: Img2ImgRequest) -> Img2ImgResult:
        started = time.monotonic()
        ref = handle.actor.render.remote(request)
        with self._cond:
            self._inflight[ref] = handle
            handle.first_started = handle.first_started or started
        try:
            answer: tuple[Img2ImgResult, int, float] = ray.get(ref)  # RayWorker.render's return value
            result, pid, render_seconds = answer
        except TaskCancelledError:
            raise Cancelled(
                "Rendering was cancelled; resume the job to continue from the last finished frame."
            ) from None
        except ActorDiedError:
            raise  # Ray gave up on this worker: the caller hands the frame to another
        except RayActorError as exc:  # unreachable for now (e.g. its node is restarting): the render loop retries
            raise BackendError(
                f"Frame {request.frame_index}: Ray {handle.label} did not answer ({_first_line(exc)})."
            ) from None
        except RayTaskError as exc:
            cause = exc.cause
            if isinstance(cause, (BackendError, Cancelled)):
                raise cause from None
            if isinstance(cause, VidstyleError):  # e.g. a model that vanished from the node: not worth a retry
                raise type(cause)(f"On Ray {handle.label}: {cause.message}") from None
            raise BackendError(
                f"Frame {request.frame_index} failed on Ray {handle.label} ({_first_line(cause)})."
            ) from None
        finally:
            with self._cond:
                self._inflight.pop(ref, None)
        self._record(handle, pid, request.frame_index)
        # What Ray adds to a frame (transfer, scheduling) is the call's time beyond this.
        result.info.update(ray_worker=handle.index, ray_node=handle.node, ray_render_ms=round(render_seconds * 1000, 1))
        return result

    def _record(self, handle: _Handle, pid: int, frame_index: int) -> None:
        restarted = handle.pid and pid != handle.pid
        if restarted:  # Ray may have placed it on another node when its own went away
            lost_on = handle.label
            try:
                handle.node = _node_label(ray.get(handle.actor.where.options(concurrency_group=CONTROL_GROUP).remote()))
            except RayActorError:  # gone again: the next frame on it says so
                pass
            self._status(
                f"Ray restarted {lost_on} after its process ended, now {handle.label}; "
                f"frame {frame_index} was rendered there again"
            )
        with self._cond:
            handle.frames += 1
            handle.last_done = time.monotonic()
            handle.pid = pid
        now = time.monotonic()
        if now - self._last_status >= STATUS_INTERVAL:
            self._last_status = now
            self._status("Ray workers: " + "; ".join(_describe(p) for p in self.worker_progress))

    def _lose(self, handle: _Handle, frame_index: int, exc: BaseException) -> None:
        with self._cond:
            handle.lost, handle.busy = True, False
            if handle in self._idle:
                self._idle.remove(handle)
            self._cond.notify_all()
        self._status(f"Ray gave up on {handle.label} ({_first_line(exc)}); frame {frame_index} goes to another worker")

    def _status(self, message: str) -> None:
        log.info(message)
        if self._on_status is not None:
            self._on_status(message)


class WorkerLease:
    """Frames rendered through a lease run one after another on the same actor (flow chains)."""

    def __init__(self, backend: RayBackend, handle: _Handle) -> None:
        self._backend = backend
        self.handle = handle

    def img2img(self, request: Img2ImgRequest) -> Img2ImgResult:
        """Render on this lease's worker; if Ray gave up on it, the lease moves to the next idle one."""
        # The pixels travel once, decoded; the PNG copies are for HTTP backends.
        request = replace(request, init_png=None, control_png=None, source_png=None)
        while True:
            try:
                return self._backend._call(self.handle, request)
            except ActorDiedError as exc:
                self._backend._lose(self.handle, request.frame_index, exc)
                self.handle = self._backend._take()  # raises WorkersLostError when none is left


def _node_label(where: dict[str, Any]) -> str:
    return f"{where['host']} ({where['ip']}, node {where['node_id'][:8]})"


def _describe(progress: WorkerProgress) -> str:
    rate = f"{progress.fps:.2f} frames/s" if progress.fps else "no frame yet"
    return f"{progress.worker} on {progress.node}: {progress.frames} frames, {rate}" + (
        " (lost)" if progress.state == "lost" else ""
    )


def _cluster_address(setting: str) -> str | None:
    """The address to connect to, or None when 'auto' finds no cluster (a local one is started)."""
    if setting != "auto":
        return setting
    if os.environ.get("RAY_ADDRESS"):
        return os.environ["RAY_ADDRESS"]
    try:  # where `ray start --head` on this machine recorded its address
        from ray._private.utils import read_ray_address
    except ImportError:  # pragma: no cover - a Ray that moved it: only explicit addresses then
        return None
    return read_ray_address() or None


def _check_reachable(address: str) -> None:
    """Fail in seconds, not Ray's minutes of retries, when nothing listens at the address."""
    host_port = address.split("://", 1)[-1].rsplit("/", 1)[0]
    host, _, port = host_port.rpartition(":")
    try:
        with socket.create_connection((host.strip("[]") or "127.0.0.1", int(port)), timeout=CONNECT_TIMEOUT):
            return
    except (OSError, ValueError):
        raise PreflightError(
            f"No Ray cluster answers at {address}; start one with `ray start --head` (or fix --ray), "
            "and check it with `ray status`."
        ) from None


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0][:300] if text else type(exc).__name__
