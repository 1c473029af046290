"""/vidstyle/v1: the job API, as a FastAPI router (mounted in the WebUI) or a standalone app.

Bodies are read from the request stream (with a size cap) and validated with our pydantic-v1
models (from vidstyle.compat) instead of FastAPI body parameters, so the same code runs on
FastAPI 0.94 + pydantic 1.10 (the WebUI) and on current FastAPI + pydantic 2. Every error is
a JSON `{"detail": "one sentence"}`: 400 unreadable request, 401 auth, 403 refused by the
server's policy (or a path outside the allowed folders, or no X-Vidstyle-Request header),
404 unknown job or file, 409 wrong job state, 413 too large, 415 wrong content type,
422 invalid settings, 429 queue full.

Every request is untrusted (see vidstyle.policy, which the operator sets):
* source videos named by path must resolve (symlinks and `..` followed) inside one of
  `allowed_roots`; anything else is uploaded through /jobs/upload;
* JSON routes take only `application/json` bodies and uploads only multipart/form-data, and a
  request that changes state (POST, DELETE) carries the header `X-Vidstyle-Request`, even with
  auth (a browser attaches cached basic-auth credentials to a cross-site form) — a web page on
  another site cannot send it without a CORS preflight we never grant (cross-site request
  forgery); the standalone app also checks the Host header
  (DNS rebinding);
* presets are taken by exact name from the list GET /presets publishes.
"""

from __future__ import annotations

import functools
import json
import logging
import shutil
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path
from typing import Any, cast

from fastapi import APIRouter, FastAPI, HTTPException, Request
from fastapi.responses import FileResponse, JSONResponse
from fastapi.security import HTTPBasic
from starlette.concurrency import run_in_threadpool
from starlette.middleware.trustedhost import TrustedHostMiddleware

from .auth import credentials_match
from .compat import BaseModel, Extra, Field, ValidationError
from .errors import JobStateError, SpecError, UserInputError, VidstyleError
from .manager import RESULT_FILES, JobManager, QueueFullError, UnknownJobError, is_result_file
from .overrides import describe_validation_error
from .policy import PolicyError, ServerPolicy
from .spec import DEFAULT_PRESET, JobSpec, build_spec, list_presets, load_spec

log = logging.getLogger(__name__)
PREFIX = "/vidstyle/v1"
# A header no cross-site HTML form can send and no script on another site may send without a
# CORS preflight (which this server never answers): proof that our own client made the request.
REQUEST_HEADER = "X-Vidstyle-Request"
LOOPBACK_HOSTS = ("127.0.0.1", "localhost", "::1")
STATE_CHANGING = ("POST", "PUT", "PATCH", "DELETE")
# Pages and images shown inline: the report holds user text (escaped) and no script; the policy
# makes sure none could run even so, and that the page loads nothing from elsewhere.
INLINE_HEADERS = {
    "Content-Security-Policy": "default-src 'none'; img-src 'self' data:; style-src 'unsafe-inline'; "
    "frame-ancestors 'self'; form-action 'none'; base-uri 'none'",
    "X-Content-Type-Options": "nosniff",
}


class HttpError(Exception):
    def __init__(self, status: int, detail: str, headers: dict[str, str] | None = None) -> None:
        super().__init__(detail)
        self.status = status
        self.detail = detail
        self.headers = headers


# -- request bodies ------------------------------------------------------------------------
class _Body(BaseModel):
    class Config:
        extra = Extra.forbid


class SubmitBody(_Body):
    spec: dict[str, Any] = Field(..., description="A JobSpec (nested, like a preset TOML); source.path is required.")
    name: str | None = Field(default=None, description="Job folder name (default: video name + time).")
    preset: str | None = Field(
        default=None,
        description="Preset the spec is laid over (default: the server's default preset, anime-canny-sd15 "
        "unless the WebUI's settings name another).",
    )


class RedoBody(_Body):
    frames: str = Field(..., min_length=1, max_length=2000, description="Frames like 10-20,45 (inclusive).")
    overrides: dict[str, Any] = Field(
        default_factory=dict, description="Dotted JobSpec keys to change for these frames."
    )


class PreviewBody(_Body):
    spec: dict[str, Any] = Field(..., description="A JobSpec (nested, like a preset TOML); source.path is required.")
    preset: str | None = Field(default=None, description="Preset the spec is laid over (as for POST /jobs).")
    frames: str = Field(
        default="auto", min_length=1, max_length=200, description="'auto' or frame numbers like 0,120,240."
    )
    count: int = Field(default=4, ge=1, le=12, description="How many frames 'auto' picks.")
    run_frames: int | None = Field(
        default=None,
        ge=0,
        le=9,
        description="Consecutive frames rendered as a coherence chain (default: the job's coherence mode decides).",
    )


# -- helpers -------------------------------------------------------------------------------
def _error(status: int, detail: str, headers: dict[str, str] | None = None) -> JSONResponse:
    return JSONResponse({"detail": detail}, status_code=status, headers=headers)


def _status_for(err: VidstyleError) -> int:
    if isinstance(err, UnknownJobError):
        return 404
    if isinstance(err, PolicyError):
        return 403
    if isinstance(err, QueueFullError):
        return 429
    if isinstance(err, JobStateError):
        return 409
    if isinstance(err, SpecError):
        return 422
    if isinstance(err, UserInputError):
        return 400
    return 500


def _handle(func: Callable[..., Awaitable[Any]]) -> Callable[..., Awaitable[Any]]:
    """Translate our errors into one-sentence JSON responses; never a traceback to the client."""

    @functools.wraps(func)
    async def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return await func(*args, **kwargs)
        except HttpError as err:
            return _error(err.status, err.detail, err.headers)
        except VidstyleError as err:
            return _error(_status_for(err), str(err))
        except Exception:  # a bug: log it here, give the client one sentence
            log.exception("vidstyle API: unexpected error")
            return _error(500, "Internal error in vidstyle; the server log has the details.")

    return wrapper


def _require_media_type(request: Request, wanted: str) -> None:
    """415 unless the body is declared as `wanted`: text/plain, the type a cross-site form or a
    "simple" fetch may send, is never read as JSON."""
    media = request.headers.get("content-type", "").split(";", 1)[0].strip().lower()
    if media != wanted:
        raise HttpError(415, f"Send the body as {wanted} (the Content-Type header says '{media[:60] or 'nothing'}').")


def _too_large(limit: int) -> HttpError:
    return HttpError(413, f"The request body is larger than this server takes ({limit:,} bytes).")


def _declared_length(request: Request, limit: int) -> None:
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > limit:
        raise _too_large(limit)


async def _read_capped(request: Request, limit: int) -> bytes:
    """The body, refused (413) as soon as it passes `limit` bytes: Content-Length may be absent or lie."""
    _declared_length(request, limit)
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise _too_large(limit)
        chunks.append(chunk)
    return b"".join(chunks)


class _BodyTooLarge(Exception):
    pass


def _capped(request: Request, limit: int) -> Request:
    """The same request whose body stops with _BodyTooLarge past `limit` bytes (for form parsing)."""
    _declared_length(request, limit)
    receive = request.receive
    received = 0

    async def counting_receive() -> Any:
        nonlocal received
        message = await receive()
        if message.get("type") == "http.request":
            received += len(message.get("body", b""))
            if received > limit:
                raise _BodyTooLarge()
        return message

    return Request(request.scope, counting_receive)


async def _json(request: Request, limit: int) -> Any:
    _require_media_type(request, "application/json")
    body = await _read_capped(request, limit)
    if not body:
        raise HttpError(400, "The request body is empty; send a JSON object.")
    try:
        return json.loads(body)
    except (ValueError, UnicodeDecodeError) as exc:
        raise HttpError(400, f"The request body is not valid JSON ({exc}).") from None
    except RecursionError:  # nesting deeper than Python's stack, well within the size cap
        raise HttpError(400, "The request body is JSON nested too deeply; send a flat JSON object.") from None


def _parse(model: Any, data: Any, what: str) -> Any:
    if not isinstance(data, dict):
        raise HttpError(400, f"The {what} must be a JSON object.")
    try:
        return model.parse_obj(data)
    except ValidationError as exc:
        raise HttpError(422, describe_validation_error(exc, what)) from None


def _preset(name: Any) -> str | None:
    """A preset named exactly as GET /presets lists it; never a path (no '../', no absolute)."""
    if name is None or name == "":
        return None
    names = list_presets()
    if not isinstance(name, str) or name not in names:
        shown = str(name)[:60]
        raise UserInputError(
            f"Unknown preset '{shown}'; choose one of: {', '.join(names) or '(none)'} "
            f"(GET {PREFIX}/presets lists them)."
        )
    return name


def _spec_from(
    data: dict[str, Any],
    preset: str | None,
    default_backend: str | None = None,
    default_preset: str | None = DEFAULT_PRESET,
) -> JobSpec:
    """The preset (the host's default unless one is named) with the posted spec laid over it,
    validated (422 names the bad key). The default comes from the operator, not the client,
    so it may be a .toml path.

    `default_backend` is the host's backend (webui_local inside the WebUI): it applies unless
    the posted spec names a backend itself, since presets are written for standalone use.
    """
    from .spec import deep_merge

    preset = _preset(preset) or default_preset
    base = load_spec(preset).dict() if preset else {}
    backend = data.get("backend")
    posted_backend: dict[str, Any] = backend if isinstance(backend, dict) else {}
    if default_backend and "kind" not in posted_backend:
        base = deep_merge(base, {"backend": {"kind": default_backend}})
    return build_spec(deep_merge(base, data), what="spec")


def resolve_source(path_text: str, allowed_roots: list[Path]) -> Path:
    """The real path of a source, which must lie inside an allowed folder (403 otherwise)."""
    if not path_text:
        raise HttpError(422, "spec: 'source.path' is required; give a video path or use /jobs/upload.")
    if not allowed_roots:
        raise HttpError(403, "This server accepts no source paths; upload the video to /vidstyle/v1/jobs/upload.")
    roots = [Path(root).resolve() for root in allowed_roots]
    candidate = Path(path_text).expanduser()
    if not candidate.is_absolute():
        candidate = roots[0] / candidate  # relative paths are relative to the first allowed folder
    real = candidate.resolve()  # follows symlinks and '..', so neither can leave the allowed folders
    if not any(real == root or real.is_relative_to(root) for root in roots):
        raise HttpError(
            403,
            f"Source path {path_text} is outside the folders this server may read; "
            "move it into one of them or upload it.",
        )
    return real


Credentials = tuple[str, str] | Sequence[tuple[str, str]]


def _credential_list(auth: Credentials | None) -> list[tuple[str, str]]:
    """One (user, password) pair or several (the WebUI's --api-auth may list more than one)."""
    if auth is None:
        return []
    if len(auth) == 2 and all(isinstance(part, str) for part in auth):
        return [(str(auth[0]), str(auth[1]))]
    pairs = cast(Sequence[tuple[str, str]], auth)  # not the one (user, password) pair above: a list of them
    return [(str(user), str(password)) for user, password in pairs]


def _auth_dependency(auth: Credentials | None) -> Callable[[Request], Awaitable[None]]:
    credentials = _credential_list(auth)
    basic = HTTPBasic(auto_error=False)

    async def check(request: Request) -> None:
        if not credentials:
            return
        try:
            given = await basic(request)
        except HTTPException:  # a malformed Authorization header
            given = None
        user, password = (given.username, given.password) if given is not None else ("", "")
        if not credentials_match(user, password, credentials):
            raise _AuthFailed()

    return check


class _AuthFailed(Exception):
    pass


# -- the router -------------------------------------------------------------------------------
def create_router(
    manager: JobManager,
    allowed_roots: list[Path],
    auth: Credentials | None = None,
    default_backend: str | None = None,
    policy: ServerPolicy | None = None,
    default_preset: Callable[[], str] = lambda: DEFAULT_PRESET,
) -> APIRouter:
    """All /vidstyle/v1 routes over one JobManager; mount with app.include_router(router).

    `default_preset`: the preset a job without one starts from, asked per request (inside the
    WebUI: its "Default preset" setting), so every entry point shares one set of defaults.

    `auth`: None (open), a (user, password) pair, or a list of pairs; HTTP basic auth, 401 otherwise.
    `policy`: what clients may ask for (default: ServerPolicy(), or ServerPolicy.for_webui()
    when the host's backend is webui_local).
    """
    check_auth = _auth_dependency(auth)
    if policy is None:
        policy = ServerPolicy.for_webui() if default_backend == "webui_local" else ServerPolicy()
    router = APIRouter(prefix=PREFIX, tags=["vidstyle"])

    async def guard(request: Request) -> JSONResponse | None:
        try:
            await check_auth(request)
        except _AuthFailed:
            return _error(
                401,
                "Authentication required: send HTTP basic auth with the server's user and password.",
                {"WWW-Authenticate": 'Basic realm="vidstyle"'},
            )
        # Required even with auth: a browser that has cached basic-auth credentials attaches them
        # to a cross-site form post, so auth alone does not prove the request came from our client.
        if request.method in STATE_CHANGING and not request.headers.get(REQUEST_HEADER):
            return _error(
                403,
                f"Send the header '{REQUEST_HEADER}: 1' with requests that change jobs "
                "(web pages on other sites cannot send it).",
            )
        return None

    def route(method: str, path: str) -> Callable[[Callable[..., Awaitable[Any]]], Any]:
        def register(func: Callable[..., Awaitable[Any]]) -> Any:
            handled = _handle(func)

            # Not functools.wraps: FastAPI would read the wrapped signature and pass path params twice.
            async def endpoint(request: Request) -> Any:
                denied = await guard(request)
                if denied is not None:
                    return denied
                return await handled(request, **request.path_params)

            endpoint.__name__ = func.__name__
            endpoint.__doc__ = func.__doc__
            router.add_api_route(path, endpoint, methods=[method], name=f"vidstyle_{func.__name__}")
            return func

        return register

    async def checked_size(spec: JobSpec) -> None:
        frames = await run_in_threadpool(manager.selection_frames, spec)  # probes: never under a lock
        policy.check_job_size(spec, frames)  # with repair on, each frame counts as often as it may render

    @route("POST", "/jobs")
    async def submit_job(request: Request) -> Any:
        body = _parse(SubmitBody, await _json(request, policy.max_body_bytes), "request body")
        spec = policy.check_spec(_spec_from(body.spec, body.preset, default_backend, default_preset()))
        source = resolve_source(spec.source.path, allowed_roots)
        spec = spec.with_overrides({"source.path": str(source)})
        await checked_size(spec)
        job_id = await run_in_threadpool(manager.submit, spec, body.name, policy.max_queued_jobs)
        return JSONResponse(await run_in_threadpool(manager.status, job_id), status_code=201)

    @route("POST", "/jobs/upload")
    async def upload_job(request: Request) -> Any:
        _require_media_type(request, "multipart/form-data")
        capped = _capped(request, policy.max_upload_bytes)  # 413 at once when Content-Length says so
        try:
            form = await capped.form()
        except _BodyTooLarge:
            raise _too_large(policy.max_upload_bytes) from None
        except Exception as exc:  # starlette raises its own parse errors
            raise HttpError(
                400, f"Send multipart/form-data with a 'video' file and a 'spec' JSON field ({exc})."
            ) from None
        try:
            return await submit_upload(form)
        finally:
            await form.close()  # removes the spooled temporary files

    async def submit_upload(form: Any) -> Any:
        video = form.get("video")
        if video is None or not hasattr(video, "read"):
            raise HttpError(400, "The form has no 'video' file; send the video as the 'video' field.")
        spec_text = form.get("spec") or "{}"
        if not isinstance(spec_text, str):
            raise HttpError(400, "The 'spec' field must be JSON text, not a file.")
        try:
            spec_data = json.loads(spec_text)
        except ValueError as exc:
            raise HttpError(400, f"The 'spec' field is not valid JSON ({exc}).") from None
        except RecursionError:  # nesting deeper than Python's stack
            raise HttpError(400, "The 'spec' field is JSON nested too deeply; send a flat JSON object.") from None
        if not isinstance(spec_data, dict):
            raise HttpError(400, "The 'spec' field must be a JSON object.")
        spec_data.setdefault("source", {})
        if not isinstance(spec_data["source"], dict):
            raise HttpError(422, "spec: 'source' must be an object.")
        spec_data["source"]["path"] = "uploaded"  # validated now, replaced by the stored file below
        spec = policy.check_spec(_spec_from(spec_data, form.get("preset") or None, default_backend, default_preset()))
        name = form.get("name") or None
        if name is not None and not isinstance(name, str):
            raise HttpError(400, "The 'name' field must be text.")
        stored = await run_in_threadpool(manager.save_upload, video.file, getattr(video, "filename", "") or "video.mp4")
        try:
            spec = spec.with_overrides({"source.path": str(stored)})
            await checked_size(spec)
            job_id = await run_in_threadpool(manager.submit, spec, name, policy.max_queued_jobs)
        except BaseException:
            shutil.rmtree(stored.parent, ignore_errors=True)  # our own copy of an unusable upload
            raise
        return JSONResponse(await run_in_threadpool(manager.status, job_id), status_code=201)

    @route("GET", "/jobs")
    async def list_jobs(request: Request) -> Any:
        return {"jobs": await run_in_threadpool(manager.list_jobs)}

    @route("GET", "/jobs/{job_id}")
    async def job_status(request: Request, job_id: str) -> Any:
        # Polled many times a second while a job renders: a running job's status comes from memory
        # on the event loop (no thread hop), and a plain dict needs no jsonable_encoder pass.
        status = manager.live_status(job_id)
        if status is None:
            status = await run_in_threadpool(manager.status, job_id)  # reads the job's ledger
        return JSONResponse(status)

    @route("POST", "/jobs/{job_id}/cancel")
    async def cancel_job(request: Request, job_id: str) -> Any:
        return await run_in_threadpool(manager.cancel, job_id)

    @route("POST", "/jobs/{job_id}/resume")
    async def resume_job(request: Request, job_id: str) -> Any:
        return await run_in_threadpool(manager.resume, job_id, policy.max_queued_jobs)

    @route("POST", "/jobs/{job_id}/redo")
    async def redo_job(request: Request, job_id: str) -> Any:
        body = _parse(RedoBody, await _json(request, policy.max_body_bytes), "request body")
        job_spec = await run_in_threadpool(manager.job_spec, job_id)
        overrides = policy.check_redo(job_spec, dict(body.overrides))
        # A redo may re-render every later frame of a chain and runs repair again, so its worst
        # case is the whole job's (which a job made outside this API has never been checked for).
        status = await run_in_threadpool(manager.status, job_id)
        policy.check_job_size(job_spec, int(status.get("frames") or 0))
        return await run_in_threadpool(manager.redo, job_id, body.frames, overrides, policy.max_queued_jobs)

    @route("DELETE", "/jobs/{job_id}")
    async def delete_job(request: Request, job_id: str) -> Any:
        return await run_in_threadpool(manager.delete, job_id)

    @route("GET", "/jobs/{job_id}/files/{name:path}")
    async def job_file(request: Request, job_id: str, name: str) -> Any:
        if not is_result_file(name):
            raise HttpError(404, f"'{name[:60]}' is not a job result; ask for one of: {', '.join(RESULT_FILES)}.")
        path = await run_in_threadpool(manager.file_path, job_id, name)
        if name.endswith((".html", ".png")):  # shown in the browser: the report page and its images
            return FileResponse(str(path), headers=INLINE_HEADERS)
        return FileResponse(str(path), filename=Path(name).name)

    @route("POST", "/preview")
    async def preview(request: Request) -> Any:
        """Render the settings on a few frames into one grid; answers with the grid's and page's URLs."""
        from .epoch_frames import parse_frames
        from .settings_preview import MAX_RUN_FRAMES

        body = _parse(PreviewBody, await _json(request, policy.max_body_bytes), "request body")
        spec = policy.check_spec(_spec_from(body.spec, body.preset, default_backend, default_preset()))
        source = resolve_source(spec.source.path, allowed_roots)
        spec = spec.with_overrides({"source.path": str(source)})
        run = MAX_RUN_FRAMES if body.run_frames is None else body.run_frames
        shown = body.count
        if body.frames.strip().lower() != "auto":  # listed frames, not `count`, decide the grid's size
            clip_frames = await run_in_threadpool(manager.selection_frames, spec)  # probes: off the loop
            shown = len(parse_frames(body.frames, clip_frames))
        policy.check_size(shown + run, spec.size.width, spec.size.height)
        result = await run_in_threadpool(manager.preview, spec, body.frames, body.count, body.run_frames)
        preview_id = result.grid_path.parent.name
        base = f"{PREFIX}/previews/{preview_id}"
        return {
            "id": preview_id,
            "grid": f"{base}/{result.grid_path.name}",
            "page": f"{base}/{result.html_path.name}",
            "frames": result.frames,
            "run_frames": result.run_frames,
            "run_mode": result.run_mode,
            "seed": result.seed,
            "notes": result.notes,
        }

    @route("GET", "/previews/{preview_id}/{name}")
    async def preview_file(request: Request, preview_id: str, name: str) -> Any:
        path = await run_in_threadpool(manager.preview_file, preview_id, name)
        return FileResponse(str(path), headers=INLINE_HEADERS)

    @route("GET", "/presets")
    async def presets(request: Request) -> Any:
        return {"presets": [{"name": name, "spec": load_spec(name).dict()} for name in list_presets()]}

    return router


def create_app(
    manager: JobManager,
    allowed_roots: list[Path],
    auth: Credentials | None = None,
    policy: ServerPolicy | None = None,
    allowed_hosts: Sequence[str] | None = None,
) -> FastAPI:
    """A standalone app serving only the job API (and its OpenAPI page at /docs).

    `allowed_hosts`: Host header values it answers (default: loopback names only), so a web page
    whose domain name is pointed at this machine (DNS rebinding) gets a 400, not the API.
    """
    app = FastAPI(title="vidstyle", description="Video stylization jobs (SD img2img + LoRA + ControlNet canny).")
    app.include_router(create_router(manager, allowed_roots, auth, policy=policy))
    app.add_middleware(TrustedHostMiddleware, allowed_hosts=list(allowed_hosts or LOOPBACK_HOSTS))
    return app
