"""Render frames on one or many running WebUIs over HTTP (/sdapi/v1/img2img + a ControlNet unit).

The render loop calls `img2img` from `concurrency` threads at once (requests_per_server + 1
per server: the extra call waits with its body ready). Each call takes a free slot on a
healthy server, the one that would finish it first, and returns only once some server
rendered that frame. A WebUI renders one request at a time behind its queue lock (first come, first served), so
with 2 slots per server (the default) one frame renders while the next already waits there
and its GPU never waits for our round trip. Calls take slots in the order they came, and a
request leaves only once the body of the one before it on that server is written, so the
server renders frames in order. Images are base64-encoded before a slot is taken (reusing
the job's PNG bytes) and the answer is decoded after the slot is given back. Further:

* a request queued behind others of ours may take `timeout` per request ahead of it too;
* a failing or timing-out server is retried after a backoff; after
  `failures_before_set_aside` failures in a row it is set aside and the frame goes to
  another server, while a background probe re-checks it (the whole preflight, since it
  may have come back with other models) and brings it back;
* with every server set aside, calls wait (and say so through `on_status`) until one
  returns, unless `interrupt()` is called;
* `interrupt()` makes every waiting or in-flight call raise `Cancelled` (a partial image
  that arrives afterwards is dropped) and stops our requests at every server holding one.
  /sdapi/v1/interrupt stops whatever job the WebUI runs, perhaps another user's, and a
  queued request starts next with the interrupt cleared (state.begin()). So each request
  carries its own `force_task_id`, and a server is interrupted only while /internal/progress
  says one of OUR tasks is the active one (and /sdapi/v1/progress shows an API img2img
  running): our queued requests are stopped as each becomes active, another client's job
  is left alone. A WebUI without /internal/progress (--nowebui) or one that ignores
  force_task_id cannot tell jobs apart: there every job that runs uninterrupted is
  interrupted, as the status says once. When interrupt() returns, nothing of ours renders
  or waits at any server.

With a single server, /sdapi/v1/progress is polled while a frame renders and passed to
`on_progress(fraction, eta_seconds)`, so a progress bar can move within a long frame.
"""

from __future__ import annotations

import base64
import json
import secrets
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

from PIL import Image

from ..errors import BackendError, Cancelled, PreflightError, SpecError
from ..ordered_turns import OrderedTurns
from ..spec import JobSpec
from .base import FrameProgressCallback, Img2ImgRequest, Img2ImgResult, StatusCallback
from .webui_fields import controlnet_unit, img2img_fields, wanted_from_request, wanted_from_spec
from .webui_http import (
    BAD_RESPONSE,
    NOT_FOUND,
    REJECTED,
    SERVER_DOWN_KINDS,
    SERVER_ERROR,
    ImageTooLarge,
    WebUIClient,
    WebUIHTTPError,
    blob_placeholder,
    decode_image_base64,
    encode_png_base64,
    json_with_blobs,
    normalize_url,
    resolve_auth,
)
from .webui_preflight import ServerCatalog, ServerPlan, Wanted, fetch_catalog, plan_for

ALL_DOWN_MESSAGE = "all WebUI servers are unreachable; waiting for one to come back ..."
# shared.state.job of an /sdapi/v1/img2img job (api.py img2imgapi, A1111 and Forge); a job
# started in the browser runs under its own "task(...)" id instead.
API_IMG2IMG_JOB = "scripts_img2img"


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
    server_errors_per_frame: int | None = None
    check_timeout: float = 15.0  # each GET of preflight and probes
    interrupt_timeout: float = 5.0
    progress_seconds: float = 0.5  # /sdapi/v1/progress polling (single server only)
    poll_seconds: float = 0.05  # how often a waiting call looks for interrupt()
    # After interrupt(): how often /sdapi/v1/progress is read to catch a queued request of ours
    # starting (the WebUI's interrupt only stops the running job), and the longest wait for
    # every request of ours to come back before interrupt() returns anyway.
    cancel_poll_seconds: float = 0.05
    cancel_wait_seconds: float = 30.0


class _Server:
    """One WebUI and what we know of its health; mutated only under the backend's lock."""

    def __init__(self, index: int, client: WebUIClient, slots: int, lock: threading.Condition) -> None:
        self.index = index
        self.client = client
        self.url = client.url
        self.slots = slots
        self.in_flight = 0  # slots taken by calls
        # img2img requests posted and not answered yet, counted by the HTTP threads: after a
        # cancel the calls have gone, but their requests may still wait in the server's queue.
        self.outstanding = 0
        self.tasks: set[str] = set()  # the force_task_id of each outstanding request
        # Whether cancel can tell our tasks from others' here (/internal/progress reports the
        # force_task_id we send): None until known, False for a WebUI started with --nowebui
        # or one that ignores force_task_id. Learned again when the server comes back.
        self.tells_tasks: bool | None = None
        self.fallback_said = False
        # Requests leave in the order their calls took slots: each waits until the body of
        # the one before is written, so the server's first-come-first-served queue keeps frame order.
        # On the backend's lock, so interrupt() and close() wake a waiting request at once.
        self.sends = OrderedTurns(condition=lock)
        self.last_done_at = 0.0
        self.failures_in_row = 0
        self.retry_at = 0.0
        self.aside = False
        self.times_set_aside = 0
        self.probe_at = 0.0
        # Moving average of the server's time per frame: from the later of sending and its
        # previous answer, so time a request waited in the server's queue does not count.
        self.seconds_per_frame: float | None = None
        self.frames_done = 0
        self.last_problem = ""
        self.catalog: ServerCatalog | None = None
        self.plans: dict[Wanted, ServerPlan] = {}


class _Call:
    """One blocking HTTP call run on a daemon thread, so the caller can stop waiting for it."""

    def __init__(self, function: Callable[[], Any], on_finish: Callable[[], None] | None = None) -> None:
        self.done = threading.Event()
        self.value: Any = None
        self.error: BaseException | None = None
        self._on_finish = on_finish
        thread = threading.Thread(target=self._run, args=(function,), daemon=True, name="vidstyle-webui-call")
        thread.start()

    def _run(self, function: Callable[[], Any]) -> None:
        try:
            self.value = function()
        except BaseException as exc:  # handed to the waiting caller
            self.error = exc
        finally:
            if self._on_finish is not None:
                self._on_finish()
            self.done.set()


def build_payload(
    plan: ServerPlan,
    request: Img2ImgRequest,
    init_b64: str,
    control_b64: str | None,
    task_id: str | None = None,
) -> dict[str, Any]:
    """The /sdapi/v1/img2img body: only fields every supported WebUI (1.6+, Forge) accepts.

    `force_task_id` names the WebUI's task for /internal/progress (A1111 1.10, Forge main; 1.6
    drops the unknown field, which the answer's `parameters` then show).
    """
    payload: dict[str, Any] = {
        "init_images": [init_b64],
        **img2img_fields(plan, request),
        "send_images": True,
        "save_images": False,
    }
    if task_id is not None:
        payload["force_task_id"] = task_id
    if request.controlnet.enabled and control_b64 is not None:
        payload["alwayson_scripts"] = {"controlnet": {"args": [controlnet_unit(plan, request.controlnet, control_b64)]}}
    return payload


# A returned image with more pixels than this many times the frame's is refused before decoding
# (a decompression bomb); a merely different size is still decoded and then refused as usual.
MAX_PIXELS_FACTOR = 4


def result_from_response(response: Any, url: str, request: Img2ImgRequest) -> Img2ImgResult:
    """images[0] -> RGB image; info JSON -> dict (+ backend, server, and the infotext as 'parameters')."""
    images = response.get("images") if isinstance(response, dict) else None
    if not isinstance(images, list) or not images or not isinstance(images[0], str):
        raise WebUIHTTPError(BAD_RESPONSE, "the answer holds no image")
    try:
        image = decode_image_base64(images[0], max_pixels=MAX_PIXELS_FACTOR * request.width * request.height)
    except ImageTooLarge as err:  # never retried: a server that sends this once may send it again
        shown = f"a {err.size[0]}x{err.size[1]} image" if err.size else "an image"
        raise BackendError(
            f"The WebUI at {url} returned {shown} for a {request.width}x{request.height} frame, far more pixels "
            f"than asked for, so it was not decoded; check that the URL is a Stable Diffusion WebUI."
        ) from None
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


def _parse_info(raw: Any) -> dict[str, Any]:
    if isinstance(raw, dict):
        return dict(raw)
    try:
        parsed = json.loads(raw) if isinstance(raw, str) else None
    except ValueError:
        parsed = None
    return parsed if isinstance(parsed, dict) else {"raw_info": raw}


def _png_base64(png: bytes | None, image: Image.Image) -> bytes:
    """Reuse the engine's PNG file bytes when it has them; encode only when it does not."""
    return base64.b64encode(png) if png else encode_png_base64(image).encode("ascii")


_INIT = blob_placeholder("init")
_CONTROL = blob_placeholder("control")


def _server_urls(spec: JobSpec) -> list[str]:
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
        on_status: StatusCallback | None = None,
        on_progress: FrameProgressCallback | None = None,
        policy: RetryPolicy | None = None,
        auth: str | None = None,
    ) -> None:
        self.spec = spec
        self.on_status = on_status
        self.on_progress = on_progress
        self.policy = policy or RetryPolicy()
        settings = spec.backend
        auth = resolve_auth(auth)
        slots = settings.requests_per_server
        # Reentrant: interrupt() may run in a signal handler on a thread that holds the lock.
        self._cond = threading.Condition(threading.RLock())
        # +2 connections: progress polls and interrupts must not queue behind renders.
        self._servers = [
            _Server(i, WebUIClient(url, auth, settings.timeout, max_connections=slots + 2), slots, self._cond)
            for i, url in enumerate(_server_urls(spec))
        ]
        # One call more per server than it has slots: that call has its images encoded and
        # waits for a slot, so a request leaves the moment an answer comes in, while the
        # answered call decodes its image on its own thread.
        self.concurrency = (slots + 1) * len(self._servers)
        # Frames rendering at one moment (a WebUI renders one at a time; the rest of
        # `concurrency` wait in its queue): with 1, /sdapi/v1/progress describes our frame.
        self.renders_at_once = len(self._servers)
        self._auth_given = auth is not None
        self._wanted = wanted_from_spec(spec)
        self._preflight_lock = threading.Lock()
        self._progress_token = threading.Lock()
        self._call_tickets = 0
        self._waiting: set[int] = set()  # tickets of calls waiting for a slot
        self._ready = False
        self._cancelled = threading.Event()
        self._closed = False
        self._outage_announced = False
        self._prober: threading.Thread | None = None
        # Our task ids are vidstyle-<run>-<frame>-<try>-<random>: readable in the WebUI's
        # queue, never equal to another client's or another run's.
        self._run_token = secrets.token_hex(4)

    # -- protocol ---------------------------------------------------------------------

    @property
    def urls(self) -> list[str]:
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
        # Images are encoded before a slot is taken and the answer is decoded after it is given
        # back: from one answer to the next request on a server, only a small JSON is built.
        blobs = self._image_blobs(request)
        wanted = wanted_from_request(request)
        limit = self.policy.server_errors_per_frame or 2 * len(self._servers) + 1
        server_errors = 0
        with self._cond:
            ticket = self._call_tickets  # calls get slots in the order they came in; a retry keeps its place
            self._call_tickets += 1
        tries = 0
        while True:
            server, send_ticket, position = self._acquire(ticket)
            task_id = f"vidstyle-{self._run_token}-{request.frame_index}-{tries}-{secrets.token_hex(4)}"
            tries += 1
            try:
                payload = build_payload(self._plan(server, wanted), request, _INIT, _CONTROL, task_id)
                body = json_with_blobs(payload, blobs)
                response, seconds = self._render(server, body, send_ticket, position, task_id)
            except WebUIHTTPError as err:
                if self._handle_failure(server, err, request):
                    server_errors += 1
                    self._check_error_limit(request, server, err, server_errors, limit)
                continue
            except BaseException:
                self._release(server)
                raise
            finally:
                server.sends.withdraw(send_ticket)  # a request that never left lets the next one go
            self._release(server, elapsed=seconds)
            self._learn_task_support(server, response)
            try:
                return result_from_response(response, server.url, request)
            except WebUIHTTPError as err:
                self._handle_failure(server, err, request, holds_slot=False)
                server_errors += 1
                self._check_error_limit(request, server, err, server_errors, limit)

    @staticmethod
    def _image_blobs(request: Img2ImgRequest) -> dict[str, bytes]:
        """Base64 of the init image and the unit's image: our canny map, or for the server's canny the source frame."""
        init = _png_base64(request.init_png, request.init_image)
        blobs = {_INIT: init}
        if request.controlnet.enabled:
            if request.controlnet.preprocessor == "ours":
                blobs[_CONTROL] = _png_base64(request.control_png, request.control_image)
            elif request.source_image is None:  # the init is the source frame: send its bytes once more
                blobs[_CONTROL] = init
            else:  # flow/keyframes: the init is a blend of outputs; the server's canny must see the source
                blobs[_CONTROL] = _png_base64(request.source_png, request.source_image)
        return blobs

    @staticmethod
    def _check_error_limit(
        request: Img2ImgRequest, server: _Server, err: WebUIHTTPError, server_errors: int, limit: int
    ) -> None:
        if server_errors >= limit:
            raise BackendError(
                f"Frame {request.frame_index} failed {server_errors} times on the WebUI, last at {server.url} "
                f"({err.message}); see the WebUI console for the cause."
            ) from None

    def interrupt(self) -> None:
        """Cancel: make every call raise Cancelled and leave no request of ours rendering.

        The WebUI's /sdapi/v1/interrupt stops whatever job it runs, and a request queued
        behind it starts next with the interrupt cleared. So each server holding requests of
        ours is watched until all of them have come back (each stops within a sampling step of
        becoming active) or `cancel_wait_seconds` pass, and is interrupted only while one of
        our tasks is its active one; where it cannot tell tasks apart, whenever a job runs
        uninterrupted.
        """
        self._cancelled.set()
        with self._cond:
            busy = [server for server in self._servers if server.outstanding > 0]
            self._cond.notify_all()
        if not busy:
            return
        deadline = time.monotonic() + self.policy.cancel_wait_seconds
        with ThreadPoolExecutor(max_workers=len(busy)) as pool:
            list(pool.map(lambda server: self._stop_server(server, deadline), busy))

    def _stop_server(self, server: _Server, deadline: float) -> None:
        timeout = self.policy.interrupt_timeout
        stopped: set[str] = set()  # our tasks interrupted while active (that lasts until the task ends)
        while True:
            with self._cond:
                if server.outstanding == 0 or self._closed:
                    return
                tasks = server.tasks - stopped
            if server.tells_tasks is not False:
                self._interrupt_ours(server, tasks, stopped, timeout)
            if server.tells_tasks is False:  # known before, or learned just now
                self._say_fallback(server)
                if self._runs_uninterrupted(server, timeout):
                    self._post_interrupt(server, timeout)
            with self._cond:
                if server.outstanding == 0 or self._closed:
                    return
                left = deadline - time.monotonic()
                if left <= 0:
                    count = server.outstanding
                    break
                self._cond.wait(timeout=min(self.policy.cancel_poll_seconds, left))
        self._emit(
            [
                f"WebUI server {server.url} still holds {count} request(s) of this job after the cancel; it may render "
                "them."
            ]
        )

    def _interrupt_ours(self, server: _Server, tasks: set[str], stopped: set[str], timeout: float) -> None:
        """Interrupt the server if one of our `tasks` is its active one; queued ones wait for a later poll."""
        active = next((task for task in sorted(tasks) if self._task_status(server, task, timeout) == "active"), None)
        if active is None:
            return
        # The task active on both sides of this read means the state read is our job's.
        state = self._progress_state(server, timeout)
        if self._task_status(server, active, timeout) != "active":
            return  # it has just ended
        if state is not None and state.get("interrupted"):
            stopped.add(active)  # already interrupted, perhaps by the WebUI's own button
        elif state is None or _runs_api_job(state):
            # Not atomic: should our task end within this round trip, the job after it is hit.
            self._post_interrupt(server, timeout)
            stopped.add(active)
        # Else our task id is stale (a job that failed never finishes its task): nothing of ours runs.

    def _task_status(self, server: _Server, task: str, timeout: float) -> str | None:
        """'active', 'queued', 'completed' or 'unknown' (not there yet) per /internal/progress.

        None when the server cannot say now (down) or at all (then `tells_tasks` turns False).
        """
        body = {"id_task": task, "id_live_preview": -1, "live_preview": False}  # no preview image to encode
        try:
            answer = server.client.post_json("/internal/progress", body, timeout=timeout)
        except WebUIHTTPError as err:
            if err.kind not in SERVER_DOWN_KINDS + (SERVER_ERROR,):
                self._set_tells_tasks(server, False)  # no such route (--nowebui), or not the WebUI's
            return None
        flags = [answer.get(key) if isinstance(answer, dict) else None for key in ("active", "queued", "completed")]
        if not all(isinstance(flag, bool) for flag in flags):
            self._set_tells_tasks(server, False)
            return None
        for name, flag in zip(("active", "queued", "completed"), flags, strict=False):
            if flag:
                self._set_tells_tasks(server, True)
                return name
        return "unknown"

    def _learn_task_support(self, server: _Server, response: Any) -> None:
        """An answer's `parameters` echo the request as the WebUI read it: no force_task_id there, ours was dropped."""
        parameters = response.get("parameters") if isinstance(response, dict) else None
        if isinstance(parameters, dict) and "force_task_id" not in parameters:
            self._set_tells_tasks(server, False)

    def _set_tells_tasks(self, server: _Server, value: bool) -> None:
        with self._cond:
            server.tells_tasks = value

    def _say_fallback(self, server: _Server) -> None:
        with self._cond:
            if server.fallback_said:
                return
            server.fallback_said = True
        self._emit(
            [
                f"WebUI server {server.url} cannot tell this job's requests from other clients' (it offers no "
                "/internal/progress, as with --nowebui, or ignores force_task_id), so the cancel interrupts whatever "
                "it renders until this job's requests are back; another user's job there may be stopped too."
            ]
        )

    def _runs_uninterrupted(self, server: _Server, timeout: float) -> bool:
        """Whether the WebUI runs a job that no interrupt has reached yet (shared.state via /sdapi/v1/progress)."""
        state = self._progress_state(server, timeout)
        return state is not None and bool(state.get("job")) and not state.get("interrupted")

    @staticmethod
    def _progress_state(server: _Server, timeout: float) -> dict[str, Any] | None:
        """shared.state as /sdapi/v1/progress shows it (job, job_count, interrupted, ...); None if unreadable."""
        try:
            answer = server.client.get_json(
                "/sdapi/v1/progress", timeout=timeout, params={"skip_current_image": "true"}
            )
        except WebUIHTTPError:
            return None  # unreachable: its requests fail on their own
        state = answer.get("state") if isinstance(answer, dict) else None
        return state if isinstance(state, dict) else None

    def close(self) -> None:
        with self._cond:
            self._closed = True
            self._cond.notify_all()
        for server in self._servers:
            server.client.close()

    def server_states(self) -> list[dict[str, Any]]:
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
            for server, (catalog, plan, _) in zip(self._servers, results, strict=False):
                self._mark_healthy(server, catalog, plan)
            self._outage_announced = False
            self._ready = True
            self._cond.notify_all()

    def _check_all(self) -> list[tuple[ServerCatalog | None, ServerPlan | None, list[str]]]:
        with ThreadPoolExecutor(max_workers=len(self._servers)) as pool:
            return list(pool.map(self._check, self._servers))

    def _check(self, server: _Server) -> tuple[ServerCatalog | None, ServerPlan | None, list[str]]:
        timeout = min(self.policy.check_timeout, self.spec.backend.timeout)
        catalog, problems = fetch_catalog(server.client, self._wanted, timeout, self._auth_given)
        if catalog is None or problems:
            return None, None, problems
        plan, problems = plan_for(catalog, self._wanted)
        return catalog, plan, problems

    def _mark_healthy(self, server: _Server, catalog: ServerCatalog | None, plan: ServerPlan | None) -> None:
        server.catalog = catalog
        server.tells_tasks = None  # it may have come back as another WebUI, or with other flags
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

    def _wait_for_due_probes(self) -> list[_Server] | None:
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
        messages: list[str] = []
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
        return float(min(delay, self.policy.probe_max_seconds))

    # -- routing ----------------------------------------------------------------------------

    def _acquire(self, ticket: int) -> tuple[_Server, int, int]:
        """Take a slot on the server that would finish the frame first; wait while none is free.

        Waiting calls are served lowest ticket first, so frames leave in the order they came.
        Returns the server, the request's place in that server's send order, and how many
        requests of ours it then holds (this one included).
        """
        with self._cond:
            self._waiting.add(ticket)
        try:
            while True:
                messages: list[str] = []
                with self._cond:
                    if self._cancelled.is_set():
                        raise Cancelled("Rendering was cancelled; resume the job to continue where it stopped.")
                    if self._closed:
                        raise BackendError("The WebUI backend was closed; start the job again to continue.")
                    server = self._pick() if min(self._waiting) == ticket else None
                    if server is not None:
                        server.in_flight += 1
                        return server, server.sends.ticket(), server.in_flight
                    if all(s.aside for s in self._servers) and not self._outage_announced:
                        self._outage_announced = True
                        messages.append(ALL_DOWN_MESSAGE)
                    else:
                        self._cond.wait(timeout=self._next_wakeup())
                self._emit(messages)
        finally:
            with self._cond:
                self._waiting.discard(ticket)
                self._cond.notify_all()

    def _pick(self) -> _Server | None:
        now = time.monotonic()
        free = [s for s in self._servers if not s.aside and s.in_flight < s.slots and s.retry_at <= now]
        if not free:
            return None
        # A request queued behind n others finishes after about (n + 1) frames of that server:
        # an idle server beats a queue on an equally fast one, a queue on a much faster one
        # beats an idle slow one. Unknown speed counts as fastest, so every server gets measured.
        return min(free, key=lambda s: ((s.in_flight + 1) * (s.seconds_per_frame or 0.0), s.in_flight, s.index))

    def _next_wakeup(self) -> float:
        now = time.monotonic()
        backoffs = [s.retry_at - now for s in self._servers if not s.aside and s.retry_at > now]
        return max(0.01, min(backoffs + [0.5]))

    def _release(self, server: _Server, elapsed: float | None = None) -> None:
        with self._cond:
            server.in_flight -= 1
            if elapsed is not None:
                server.failures_in_row = 0
                server.times_set_aside = 0
                server.frames_done += 1
                previous = server.seconds_per_frame
                server.seconds_per_frame = elapsed if previous is None else 0.7 * previous + 0.3 * elapsed
            self._cond.notify_all()

    def _handle_failure(
        self, server: _Server, err: WebUIHTTPError, request: Img2ImgRequest, holds_slot: bool = True
    ) -> bool:
        """Count a failed attempt against the server (releasing the slot if the call still
        holds it); True when it counts against the frame.

        Raises BackendError when the server refused the request itself (retrying cannot help).
        """
        if err.kind == REJECTED or (err.kind == NOT_FOUND and not _route_missing(err)):
            if holds_slot:
                self._release(server)
            raise BackendError(
                f"The WebUI at {server.url} refused frame {request.frame_index}: {err.message}; "
                "check that the WebUI and its ControlNet extension are up to date."
            ) from None
        # Down, unusable (401 / routes gone after a restart) or failing: retry elsewhere.
        set_aside_now = err.kind not in SERVER_DOWN_KINDS + (SERVER_ERROR, BAD_RESPONSE)
        messages: list[str] = []
        with self._cond:
            if holds_slot:
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
                        f"WebUI server {server.url} set aside after {server.failures_in_row} failure(s) "
                        f"({err.message}); "
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

    def _render(self, server: _Server, body: bytes, send_ticket: int, position: int, task_id: str) -> tuple[Any, float]:
        """POST one frame once the request before it on this server has left; (answer JSON, seconds it took the
        server)."""
        # A request queued behind `position - 1` others of ours waits for them first.
        timeout = self.spec.backend.timeout * position
        with self._cond:
            stop = lambda: self._cancelled.is_set() or self._closed  # noqa: E731
            server.sends.wait(send_ticket, stop, poll=self.policy.poll_seconds)
            if self._closed:
                raise BackendError("The WebUI backend was closed; start the job again to continue.")
            # Checked under the lock interrupt() takes its snapshot under: a request either
            # counts as outstanding there or is never sent.
            if self._cancelled.is_set():
                raise Cancelled("Rendering was cancelled; resume the job to continue where it stopped.")
            server.outstanding += 1
            server.tasks.add(task_id)
        posted = time.monotonic()
        call = _Call(
            lambda: server.client.post_body(
                "/sdapi/v1/img2img", body, timeout=timeout, on_sent=lambda: server.sends.withdraw(send_ticket)
            ),
            on_finish=lambda: self._request_done(server, task_id),
        )
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
        with self._cond:
            # The server started on it when it had it and was done with the frame before.
            now = time.monotonic()
            seconds = now - max(posted, server.last_done_at)
            server.last_done_at = now
        return call.value, seconds

    def _request_done(self, server: _Server, task_id: str) -> None:
        with self._cond:
            server.outstanding -= 1
            server.tasks.discard(task_id)
            self._cond.notify_all()

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

    def _emit(self, messages: list[str]) -> None:
        if self.on_status is not None:
            for message in messages:
                self.on_status(message)


def _runs_api_job(state: dict[str, Any]) -> bool:
    """Whether shared.state shows an /sdapi/v1/img2img job running (job_count is 0 between jobs)."""
    if state.get("job_count") == 0:
        return False
    job = state.get("job")
    return job is None or job == API_IMG2IMG_JOB


def _route_missing(err: WebUIHTTPError) -> bool:
    """FastAPI's own 404 ({"detail": "Not Found"}) means the route is gone, not that the request was wrong."""
    return isinstance(err.detail, dict) and err.detail.get("detail") == "Not Found"
