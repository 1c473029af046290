"""Render frames on one or many running WebUIs over HTTP (/sdapi/v1/img2img + a ControlNet unit).

The render loop calls `img2img` from `concurrency` threads at once (the sum of
requests_per_server over the servers). Each call takes a free slot on a healthy server,
fastest first, and returns only once some server rendered that frame:

* a failing or timing-out server is retried after a backoff; after
  `failures_before_set_aside` failures in a row it is set aside and the frame goes to
  another server, while a background probe re-checks it (the whole preflight, since it
  may have come back with other models) and brings it back;
* with every server set aside, calls wait (and say so through `on_status`) until one
  returns, unless `interrupt()` is called;
* `interrupt()` posts /sdapi/v1/interrupt to every busy server and makes every waiting or
  in-flight call raise `Cancelled`; a (partial) image that arrives afterwards is dropped.

With a single server, /sdapi/v1/progress is polled while a frame renders and passed to
`on_progress(fraction, eta_seconds)`, so a progress bar can move within a long frame.
"""

from __future__ import annotations

import base64
import json
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, Callable, Dict, List, Optional, Tuple

from PIL import Image

from ..errors import BackendError, Cancelled, PreflightError, SpecError
from ..spec import ControlNetSpec, JobSpec, LoraRef
from .base import Img2ImgRequest, Img2ImgResult, StatusCallback
from .webui_http import (
    BAD_RESPONSE,
    NOT_FOUND,
    REJECTED,
    SERVER_DOWN_KINDS,
    SERVER_ERROR,
    WebUIClient,
    WebUIHTTPError,
    decode_image_base64,
    encode_png_base64,
    normalize_url,
)
from .webui_preflight import ServerCatalog, ServerPlan, Wanted, fetch_catalog, plan_for

ProgressCallback = Callable[[float, float], None]

ALL_DOWN_MESSAGE = "all WebUI servers are unreachable; waiting for one to come back ..."
# Preprocessor resolution sent with every unit (the WebUI's own default for canny).
PROCESSOR_RES = 512


@dataclass
class RetryPolicy:
    """Timing of retries, set-asides and probes (tests shrink these)."""

    failures_before_set_aside: int = 3
    backoff_seconds: float = 0.5  # doubled per failure in a row
    backoff_max_seconds: float = 8.0
    probe_seconds: float = 5.0  # first re-check of a set-aside server; doubled each time it is set aside again
    probe_max_seconds: float = 60.0
    # Server-side errors (HTTP 5xx, unusable answers) one frame may meet before it fails;
    # None: twice the number of servers, plus one.
    server_errors_per_frame: Optional[int] = None
    check_timeout: float = 15.0  # each GET of preflight and probes
    interrupt_timeout: float = 5.0
    progress_seconds: float = 0.5  # /sdapi/v1/progress polling (single server only)
    poll_seconds: float = 0.05  # how often a waiting call looks for interrupt()


class _Server:
    """One WebUI and what we know of its health; mutated only under the backend's lock."""

    def __init__(self, index: int, client: WebUIClient, slots: int) -> None:
        self.index = index
        self.client = client
        self.url = client.url
        self.slots = slots
        self.in_flight = 0
        self.failures_in_row = 0
        self.retry_at = 0.0
        self.aside = False
        self.times_set_aside = 0
        self.probe_at = 0.0
        self.seconds_per_frame: Optional[float] = None  # moving average of successful frames
        self.frames_done = 0
        self.last_problem = ""
        self.catalog: Optional[ServerCatalog] = None
        self.plans: Dict[Wanted, ServerPlan] = {}


class _Call:
    """One blocking HTTP call run on a daemon thread, so the caller can stop waiting for it."""

    def __init__(self, function: Callable[[], Any]) -> None:
        self.done = threading.Event()
        self.value: Any = None
        self.error: Optional[BaseException] = None
        thread = threading.Thread(target=self._run, args=(function,), daemon=True, name="vidstyle-webui-call")
        thread.start()

    def _run(self, function: Callable[[], Any]) -> None:
        try:
            self.value = function()
        except BaseException as exc:  # handed to the waiting caller
            self.error = exc
        finally:
            self.done.set()


def wanted_from_spec(spec: JobSpec) -> Wanted:
    return _wanted(
        spec.model.checkpoint, spec.model.loras, spec.sampling.sampler, spec.sampling.scheduler, spec.controlnet
    )


def wanted_from_request(request: Img2ImgRequest) -> Wanted:
    return _wanted(request.checkpoint, request.loras, request.sampler, request.scheduler, request.controlnet)


def _wanted(checkpoint: str, loras: List[LoraRef], sampler: str, scheduler: str, cn: ControlNetSpec) -> Wanted:
    controlnet = (cn.model, cn.preprocessor, cn.low_threshold, cn.high_threshold) if cn.enabled else None
    return Wanted(checkpoint, tuple((lora.name, float(lora.weight)) for lora in loras), sampler, scheduler, controlnet)


def build_payload(
    plan: ServerPlan, request: Img2ImgRequest, init_b64: str, control_b64: Optional[str]
) -> Dict[str, Any]:
    """The /sdapi/v1/img2img body: only fields every supported WebUI (1.6+, Forge) accepts."""
    tags = [f"<lora:{name}:{weight:g}>" for name, weight in plan.lora_tags]
    prompt = " ".join(part for part in [request.prompt, *tags] if part)
    payload: Dict[str, Any] = {
        "init_images": [init_b64],
        "denoising_strength": float(request.denoise),
        "prompt": prompt,
        "negative_prompt": request.negative_prompt,
        "seed": int(request.seed),
        "steps": int(request.steps),
        "cfg_scale": float(request.cfg_scale),
        "sampler_name": plan.sampler_name,
        "width": int(request.width),
        "height": int(request.height),
        "resize_mode": 0,
        "batch_size": 1,
        "n_iter": 1,
        "send_images": True,
        "save_images": False,
        # The WebUI silently ignores an override it cannot resolve; preflight checked the title.
        "override_settings": {"sd_model_checkpoint": plan.checkpoint_title},
        "override_settings_restore_afterwards": True,
    }
    if plan.scheduler is not None:
        payload["scheduler"] = plan.scheduler
    if request.controlnet.enabled and control_b64 is not None:
        payload["alwayson_scripts"] = {"controlnet": {"args": [controlnet_unit(plan, request.controlnet, control_b64)]}}
    return payload


def controlnet_unit(plan: ServerPlan, cn: ControlNetSpec, image: Any) -> Dict[str, Any]:
    """One unit with the fields both sd-webui-controlnet's ControlNetUnit and Forge's accept.

    With preprocessor 'ours' the image is our canny map (request.control_image), sent through
    the identity preprocessor; with 'server' it is the source frame (the init image), which
    the server's canny module turns into edges with our thresholds. `image` is base64 for
    the HTTP API, an RGB array in-process (webui_local builds its unit from these fields too).
    """
    unit: Dict[str, Any] = {
        "enabled": True,
        "module": plan.controlnet_module,
        "model": plan.controlnet_model,
        "weight": float(cn.weight),
        "image": image,
        "resize_mode": "Just Resize",
        "processor_res": PROCESSOR_RES,
        "guidance_start": float(cn.guidance_start),
        "guidance_end": float(cn.guidance_end),
        "pixel_perfect": bool(cn.pixel_perfect),
        "control_mode": cn.control_mode,
        # Otherwise the detected map comes back as a second image we would download and drop.
        "save_detected_map": False,
    }
    if cn.preprocessor == "server":
        unit["threshold_a"] = float(cn.low_threshold)
        unit["threshold_b"] = float(cn.high_threshold)
    return unit


def result_from_response(response: Any, url: str, request: Img2ImgRequest) -> Img2ImgResult:
    """images[0] -> RGB image; info JSON -> dict (+ backend, server, and the infotext as 'parameters')."""
    images = response.get("images") if isinstance(response, dict) else None
    if not images:
        raise WebUIHTTPError(BAD_RESPONSE, "the answer holds no image")
    image = decode_image_base64(images[0])
    if image.size != (request.width, request.height):
        raise WebUIHTTPError(
            BAD_RESPONSE,
            f"it returned a {image.width}x{image.height} image for a {request.width}x{request.height} frame",
        )
    info = _parse_info(response.get("info"))
    infotexts = info.get("infotexts")
    if isinstance(infotexts, list) and infotexts and isinstance(infotexts[0], str):
        info["parameters"] = infotexts[0]
    info["backend"] = "webui_api"
    info["server"] = url
    return Img2ImgResult(image=image, info=info)


def _parse_info(raw: Any) -> Dict[str, Any]:
    if isinstance(raw, dict):
        return dict(raw)
    try:
        parsed = json.loads(raw) if isinstance(raw, str) else None
    except ValueError:
        parsed = None
    return parsed if isinstance(parsed, dict) else {"raw_info": raw}


def _png_base64(png: Optional[bytes], image: Image.Image) -> str:
    """Reuse the engine's PNG file bytes when it has them; encode only when it does not."""
    return base64.b64encode(png).decode("ascii") if png else encode_png_base64(image)


def _server_urls(spec: JobSpec) -> List[str]:
    urls = [normalize_url(url) for url in spec.backend.webui_urls if url.strip()]
    if not urls:
        raise SpecError("The webui_api backend needs at least one WebUI URL (e.g. http://127.0.0.1:7860).")
    for url in urls:
        if not url.startswith(("http://", "https://")):
            raise SpecError(f"WebUI URL {url} must start with http:// or https://.")
    duplicates = sorted({url for url in urls if urls.count(url) > 1})
    if duplicates:
        raise SpecError(f"WebUI URL {duplicates[0]} is listed twice; raise requests_per_server instead.")
    return urls


class WebUIApiBackend:
    """Backend protocol over the WebUI HTTP API, spreading frames over one or many servers."""

    name = "webui_api"

    def __init__(
        self,
        spec: JobSpec,
        on_status: Optional[StatusCallback] = None,
        on_progress: Optional[ProgressCallback] = None,
        policy: Optional[RetryPolicy] = None,
    ) -> None:
        self.spec = spec
        self.on_status = on_status
        self.on_progress = on_progress
        self.policy = policy or RetryPolicy()
        settings = spec.backend
        slots = settings.requests_per_server
        # +2 connections: progress polls and interrupts must not queue behind renders.
        self._servers = [
            _Server(i, WebUIClient(url, settings.webui_auth, settings.timeout, max_connections=slots + 2), slots)
            for i, url in enumerate(_server_urls(spec))
        ]
        self.concurrency = slots * len(self._servers)
        self._auth_given = settings.webui_auth is not None
        self._wanted = wanted_from_spec(spec)
        # Reentrant: interrupt() may run in a signal handler on a thread that holds the lock.
        self._cond = threading.Condition(threading.RLock())
        self._preflight_lock = threading.Lock()
        self._progress_token = threading.Lock()
        self._ready = False
        self._cancelled = threading.Event()
        self._closed = False
        self._outage_announced = False
        self._prober: Optional[threading.Thread] = None

    # -- protocol ---------------------------------------------------------------------

    @property
    def urls(self) -> List[str]:
        return [server.url for server in self._servers]

    def preflight(self) -> None:
        """Check every server; raise one PreflightError listing every problem found."""
        with self._preflight_lock:
            self._preflight_locked()

    def img2img(self, request: Img2ImgRequest) -> Img2ImgResult:
        if not self._ready:
            with self._preflight_lock:
                if not self._ready:  # another thread may have finished it meanwhile
                    self._preflight_locked()
        init_b64 = _png_base64(request.init_png, request.init_image)
        control_b64 = self._control_image(request, init_b64)
        wanted = wanted_from_request(request)
        limit = self.policy.server_errors_per_frame or 2 * len(self._servers) + 1
        server_errors = 0
        while True:
            server = self._acquire()
            started = time.monotonic()
            try:
                payload = build_payload(self._plan(server, wanted), request, init_b64, control_b64)
                result = self._render(server, payload, request)
            except WebUIHTTPError as err:
                if not self._handle_failure(server, err, request):
                    continue
                server_errors += 1
                if server_errors >= limit:
                    raise BackendError(
                        f"Frame {request.frame_index} failed {server_errors} times on the WebUI, last at {server.url} "
                        f"({err.message}); see the WebUI console for the cause."
                    ) from None
                continue
            except BaseException:
                self._release(server)
                raise
            self._release(server, elapsed=time.monotonic() - started)
            return result

    @staticmethod
    def _control_image(request: Img2ImgRequest, init_b64: str) -> Optional[str]:
        """The unit's image: our canny map, or for the server's canny the source frame (the init image)."""
        if not request.controlnet.enabled:
            return None
        if request.controlnet.preprocessor == "server":
            return init_b64
        return _png_base64(request.control_png, request.control_image)

    def interrupt(self) -> None:
        """Cancel: stop the servers' current frames and make every call raise Cancelled."""
        self._cancelled.set()
        with self._cond:
            busy = [server for server in self._servers if server.in_flight > 0]
            self._cond.notify_all()
        if not busy:
            return
        timeout = self.policy.interrupt_timeout
        with ThreadPoolExecutor(max_workers=len(busy)) as pool:
            for server in busy:
                pool.submit(self._post_interrupt, server, timeout)

    def close(self) -> None:
        with self._cond:
            self._closed = True
            self._cond.notify_all()
        for server in self._servers:
            server.client.close()

    def server_states(self) -> List[Dict[str, Any]]:
        """Per-server health and speed, for status displays and reports."""
        with self._cond:
            return [
                {
                    "url": s.url,
                    "state": "set aside" if s.aside else "ok",
                    "in_flight": s.in_flight,
                    "frames_done": s.frames_done,
                    "seconds_per_frame": s.seconds_per_frame,
                    "last_problem": s.last_problem,
                }
                for s in self._servers
            ]

    # -- preflight and probes -------------------------------------------------------------

    def _preflight_locked(self) -> None:
        results = self._check_all()
        problems = [problem for _, _, found in results for problem in found]
        if problems:
            error = PreflightError("\n".join(problems))
            error.problems = problems  # type: ignore[attr-defined]  # one sentence each, for UIs
            raise error
        with self._cond:
            for server, (catalog, plan, _) in zip(self._servers, results):
                self._mark_healthy(server, catalog, plan)
            self._outage_announced = False
            self._ready = True
            self._cond.notify_all()

    def _check_all(self) -> List[Tuple[Optional[ServerCatalog], Optional[ServerPlan], List[str]]]:
        with ThreadPoolExecutor(max_workers=len(self._servers)) as pool:
            return list(pool.map(self._check, self._servers))

    def _check(self, server: _Server) -> Tuple[Optional[ServerCatalog], Optional[ServerPlan], List[str]]:
        timeout = min(self.policy.check_timeout, self.spec.backend.timeout)
        catalog, problems = fetch_catalog(server.client, self._wanted, timeout, self._auth_given)
        if catalog is None or problems:
            return None, None, problems
        plan, problems = plan_for(catalog, self._wanted)
        return catalog, plan, problems

    def _mark_healthy(self, server: _Server, catalog: Optional[ServerCatalog], plan: Optional[ServerPlan]) -> None:
        server.catalog = catalog
        server.plans = {self._wanted: plan} if plan is not None else {}
        server.aside = False
        server.failures_in_row = 0
        server.retry_at = 0.0
        server.last_problem = ""

    def _plan(self, server: _Server, wanted: Wanted) -> ServerPlan:
        with self._cond:
            plan = server.plans.get(wanted)
            catalog = server.catalog
        if plan is not None:
            return plan
        if catalog is None:  # pragma: no cover - a healthy server always has its catalog
            raise WebUIHTTPError(SERVER_ERROR, "its model lists are unknown")
        plan, problems = plan_for(catalog, wanted)
        if plan is None:
            raise BackendError(problems[0] if problems else f"The WebUI at {server.url} cannot render this frame.")
        with self._cond:
            server.plans[wanted] = plan
        return plan

    def _start_prober(self) -> None:
        """Called under the lock when a server is set aside."""
        if self._prober is None:
            self._prober = threading.Thread(target=self._probe_loop, daemon=True, name="vidstyle-webui-probe")
            self._prober.start()

    def _probe_loop(self) -> None:
        while True:
            with self._cond:
                due = self._wait_for_due_probes()
                if due is None:
                    self._prober = None  # under the lock, so a new set-aside starts a new prober
                    return
            for server in due:
                self._probe(server)

    def _wait_for_due_probes(self) -> Optional[List[_Server]]:
        while not self._closed:
            aside = [s for s in self._servers if s.aside]
            if not aside:
                return None
            now = time.monotonic()
            due = [s for s in aside if s.probe_at <= now]
            if due:
                return due
            self._cond.wait(timeout=min(s.probe_at for s in aside) - now)
        return None

    def _probe(self, server: _Server) -> None:
        catalog, plan, problems = self._check(server)
        messages: List[str] = []
        with self._cond:
            if self._closed or not server.aside:
                return
            if plan is not None:
                self._mark_healthy(server, catalog, plan)
                self._outage_announced = False
                messages.append(f"WebUI server {server.url} is back; sending it frames again.")
                self._cond.notify_all()
            else:
                server.probe_at = time.monotonic() + self._probe_delay(server)
                problem = problems[0] if problems else "it failed its checks"
                if problem != server.last_problem:
                    server.last_problem = problem
                    messages.append(problem)
        self._emit(messages)

    def _probe_delay(self, server: _Server) -> float:
        delay = self.policy.probe_seconds * 2 ** max(server.times_set_aside - 1, 0)
        return min(delay, self.policy.probe_max_seconds)

    # -- routing ----------------------------------------------------------------------------

    def _acquire(self) -> _Server:
        """Take a slot on the fastest free healthy server; wait while none is free."""
        while True:
            messages: List[str] = []
            with self._cond:
                if self._cancelled.is_set():
                    raise Cancelled("Rendering was cancelled; resume the job to continue where it stopped.")
                if self._closed:
                    raise BackendError("The WebUI backend was closed; start the job again to continue.")
                server = self._pick()
                if server is not None:
                    server.in_flight += 1
                    return server
                if all(s.aside for s in self._servers) and not self._outage_announced:
                    self._outage_announced = True
                    messages.append(ALL_DOWN_MESSAGE)
                else:
                    self._cond.wait(timeout=self._next_wakeup())
            self._emit(messages)

    def _pick(self) -> Optional[_Server]:
        now = time.monotonic()
        free = [s for s in self._servers if not s.aside and s.in_flight < s.slots and s.retry_at <= now]
        if not free:
            return None
        # Unknown speed counts as fastest, so every server gets measured.
        return min(free, key=lambda s: (s.seconds_per_frame or 0.0, s.in_flight, s.index))

    def _next_wakeup(self) -> float:
        now = time.monotonic()
        backoffs = [s.retry_at - now for s in self._servers if not s.aside and s.retry_at > now]
        return max(0.01, min(backoffs + [0.5]))

    def _release(self, server: _Server, elapsed: Optional[float] = None) -> None:
        with self._cond:
            server.in_flight -= 1
            if elapsed is not None:
                server.failures_in_row = 0
                server.times_set_aside = 0
                server.frames_done += 1
                previous = server.seconds_per_frame
                server.seconds_per_frame = elapsed if previous is None else 0.7 * previous + 0.3 * elapsed
            self._cond.notify_all()

    def _handle_failure(self, server: _Server, err: WebUIHTTPError, request: Img2ImgRequest) -> bool:
        """Release the slot after a failed attempt; True when it counts against the frame.

        Raises BackendError when the server refused the request itself (retrying cannot help).
        """
        if err.kind == REJECTED or (err.kind == NOT_FOUND and not _route_missing(err)):
            self._release(server)
            raise BackendError(
                f"The WebUI at {server.url} refused frame {request.frame_index}: {err.message}; "
                "check that the WebUI and its ControlNet extension are up to date."
            ) from None
        # Down, unusable (401 / routes gone after a restart) or failing: retry elsewhere.
        set_aside_now = err.kind not in SERVER_DOWN_KINDS + (SERVER_ERROR, BAD_RESPONSE)
        messages: List[str] = []
        with self._cond:
            server.in_flight -= 1
            server.failures_in_row += 1
            server.last_problem = err.message
            if set_aside_now or server.failures_in_row >= self.policy.failures_before_set_aside:
                if not server.aside:
                    server.aside = True
                    server.times_set_aside += 1
                    server.probe_at = time.monotonic() + self._probe_delay(server)
                    self._start_prober()
                    others = any(not s.aside for s in self._servers)
                    messages.append(
                        f"WebUI server {server.url} set aside after {server.failures_in_row} failure(s) ({err.message}); "
                        + ("the other servers go on and it " if others else "it ")
                        + "is re-checked now and then."
                    )
            else:
                delay = self.policy.backoff_seconds * 2 ** (server.failures_in_row - 1)
                server.retry_at = time.monotonic() + min(delay, self.policy.backoff_max_seconds)
            self._cond.notify_all()
        self._emit(messages)
        return err.kind in (SERVER_ERROR, BAD_RESPONSE)

    # -- one request ------------------------------------------------------------------------

    def _render(self, server: _Server, payload: Dict[str, Any], request: Img2ImgRequest) -> Img2ImgResult:
        call = _Call(lambda: server.client.post_json("/sdapi/v1/img2img", payload))
        polls_progress = (
            len(self._servers) == 1 and self.on_progress is not None and self._progress_token.acquire(False)
        )
        try:
            next_poll = time.monotonic() + self.policy.progress_seconds
            while not call.done.wait(self.policy.poll_seconds):
                if self._cancelled.is_set():
                    break
                if polls_progress and time.monotonic() >= next_poll:
                    self._report_progress(server)
                    next_poll = time.monotonic() + self.policy.progress_seconds
        finally:
            if polls_progress:
                self._progress_token.release()
        if self._cancelled.is_set():  # an interrupted frame comes back half-done: never keep it
            raise Cancelled("Rendering was cancelled; resume the job to continue where it stopped.")
        if call.error is not None:
            raise call.error
        return result_from_response(call.value, server.url, request)

    def _report_progress(self, server: _Server) -> None:
        try:
            state = server.client.get_json(
                "/sdapi/v1/progress", timeout=self.policy.check_timeout, params={"skip_current_image": "true"}
            )
        except WebUIHTTPError:
            return  # progress is a nicety; the frame's own call reports real failures
        callback = self.on_progress
        if callback is not None and isinstance(state, dict):
            fraction = float(state.get("progress") or 0.0)
            eta = float(state.get("eta_relative") or 0.0)
            callback(min(max(fraction, 0.0), 1.0), max(eta, 0.0))

    def _post_interrupt(self, server: _Server, timeout: float) -> None:
        try:
            server.client.post_json("/sdapi/v1/interrupt", {}, timeout=timeout)
        except WebUIHTTPError:
            pass  # a server that cannot be reached is not rendering our frame either

    def _emit(self, messages: List[str]) -> None:
        if self.on_status is not None:
            for message in messages:
                self.on_status(message)


def _route_missing(err: WebUIHTTPError) -> bool:
    """FastAPI's own 404 ({"detail": "Not Found"}) means the route is gone, not that the request was wrong."""
    return isinstance(err.detail, dict) and err.detail.get("detail") == "Not Found"
