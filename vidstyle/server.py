"""/vidstyle/v1: the job API, as a FastAPI router (mounted in the WebUI) or a standalone app.

Bodies are read with `await request.json()` and validated with our pydantic-v1 models (from
vidstyle.compat) instead of FastAPI body parameters, so the same code runs on FastAPI 0.94 +
pydantic 1.10 (the WebUI) and on current FastAPI + pydantic 2. Every error is a JSON
`{"detail": "one sentence"}`: 400 unreadable request, 401 auth, 403 a path outside the
allowed folders, 404 unknown job or file, 409 wrong job state, 422 invalid settings.

Source videos named by path must resolve (symlinks and `..` followed) inside one of
`allowed_roots`; anything else is uploaded through /jobs/upload.
"""

from __future__ import annotations

import base64
import binascii
import functools
import json
import logging
import secrets
from pathlib import Path
from typing import Any, Awaitable, Callable, Dict, List, Optional, Sequence, Tuple, Union

from fastapi import APIRouter, FastAPI, Request
from fastapi.responses import FileResponse, JSONResponse
from starlette.concurrency import run_in_threadpool

from .compat import BaseModel, Extra, Field, ValidationError, describe_validation_error
from .errors import JobStateError, SpecError, UserInputError, VidstyleError
from .manager import RESULT_FILES, JobManager, UnknownJobError
from .spec import JobSpec, build_spec, list_presets, load_spec

log = logging.getLogger(__name__)
PREFIX = "/vidstyle/v1"


class HttpError(Exception):
    def __init__(self, status: int, detail: str, headers: Optional[Dict[str, str]] = None) -> None:
        super().__init__(detail)
        self.status = status
        self.detail = detail
        self.headers = headers


# -- request bodies ------------------------------------------------------------------------
class _Body(BaseModel):
    class Config:
        extra = Extra.forbid


class SubmitBody(_Body):
    spec: Dict[str, Any] = Field(..., description="A JobSpec (nested, like a preset TOML); source.path is required.")
    name: Optional[str] = Field(None, description="Job folder name (default: video name + time).")
    preset: Optional[str] = Field(None, description="Preset the spec is laid over (default: none).")


class RedoBody(_Body):
    frames: str = Field(..., min_length=1, description="Frames like 10-20,45 (inclusive).")
    overrides: Dict[str, Any] = Field(default_factory=dict, description="Dotted JobSpec keys to change for these frames.")


# -- helpers -------------------------------------------------------------------------------
def _error(status: int, detail: str, headers: Optional[Dict[str, str]] = None) -> JSONResponse:
    return JSONResponse({"detail": detail}, status_code=status, headers=headers)


def _status_for(err: VidstyleError) -> int:
    if isinstance(err, UnknownJobError):
        return 404
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


async def _json(request: Request) -> Any:
    body = await request.body()
    if not body:
        raise HttpError(400, "The request body is empty; send a JSON object.")
    try:
        return json.loads(body)
    except (ValueError, UnicodeDecodeError) as exc:
        raise HttpError(400, f"The request body is not valid JSON ({exc}).") from None


def _parse(model: Any, data: Any, what: str) -> Any:
    if not isinstance(data, dict):
        raise HttpError(400, f"The {what} must be a JSON object.")
    try:
        return model.parse_obj(data)
    except ValidationError as exc:
        raise HttpError(422, describe_validation_error(exc, what)) from None


def _spec_from(data: Dict[str, Any], preset: Optional[str], default_backend: Optional[str] = None) -> JobSpec:
    """Preset (optional) with the posted spec laid over it, validated (422 names the bad key).

    `default_backend` is the host's backend (webui_local inside the WebUI): it applies unless
    the posted spec names a backend itself, since presets are written for standalone use.
    """
    from .spec import deep_merge

    base = load_spec(preset).dict() if preset else {}
    posted_backend = data.get("backend") if isinstance(data.get("backend"), dict) else {}
    if default_backend and "kind" not in posted_backend:
        base = deep_merge(base, {"backend": {"kind": default_backend}})
    return build_spec(deep_merge(base, data), what="spec")


def resolve_source(path_text: str, allowed_roots: List[Path]) -> Path:
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
        raise HttpError(403, f"Source path {path_text} is outside the folders this server may read; "
                             "move it into one of them or upload it.")
    return real


Credentials = Union[Tuple[str, str], Sequence[Tuple[str, str]]]


def _credential_list(auth: Optional[Credentials]) -> List[Tuple[str, str]]:
    """One (user, password) pair or several (the WebUI's --api-auth may list more than one)."""
    if auth is None:
        return []
    if len(auth) == 2 and all(isinstance(part, str) for part in auth):
        return [(str(auth[0]), str(auth[1]))]
    return [(str(user), str(password)) for user, password in auth]  # type: ignore[misc]


def _auth_dependency(auth: Optional[Credentials]) -> Callable[[Request], None]:
    credentials = _credential_list(auth)

    def check(request: Request) -> None:
        if not credentials:
            return
        header = request.headers.get("authorization", "")
        scheme, _, encoded = header.partition(" ")
        user = password = ""
        if scheme.lower() == "basic" and encoded:
            try:
                user, _, password = base64.b64decode(encoded.strip()).decode("utf-8").partition(":")
            except (binascii.Error, UnicodeDecodeError):
                user = password = ""
        matched = False
        for known_user, known_password in credentials:  # compare every pair: no early exit to time
            ok_user = secrets.compare_digest(user.encode(), known_user.encode())
            ok_pass = secrets.compare_digest(password.encode(), known_password.encode())
            matched = matched or (ok_user and ok_pass)
        if not matched:
            raise _AuthFailed()

    return check


class _AuthFailed(Exception):
    pass


def parse_auth(text: Optional[str]) -> Optional[Tuple[str, str]]:
    """'user:pass' -> (user, pass); None stays None."""
    if text is None:
        return None
    user, sep, password = text.partition(":")
    if not sep or not user:
        raise UserInputError("--auth must look like user:password.")
    return user, password


# -- the router -------------------------------------------------------------------------------
def create_router(
    manager: JobManager, allowed_roots: List[Path], auth: Optional[Credentials] = None, default_backend: Optional[str] = None
) -> APIRouter:
    """All /vidstyle/v1 routes over one JobManager; mount with app.include_router(router).

    `auth`: None (open), a (user, password) pair, or a list of pairs; HTTP basic auth, 401 otherwise.
    """
    check_auth = _auth_dependency(auth)
    router = APIRouter(prefix=PREFIX, tags=["vidstyle"])

    async def guard(request: Request) -> Optional[JSONResponse]:
        try:
            check_auth(request)
        except _AuthFailed:
            return _error(401, "Authentication required: send HTTP basic auth with the server's user and password.",
                          {"WWW-Authenticate": 'Basic realm="vidstyle"'})
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

    @route("POST", "/jobs")
    async def submit_job(request: Request) -> Any:
        body = _parse(SubmitBody, await _json(request), "request body")
        spec = _spec_from(body.spec, body.preset, default_backend)
        source = resolve_source(spec.source.path, allowed_roots)
        spec = spec.with_overrides({"source.path": str(source)})
        job_id = await run_in_threadpool(manager.submit, spec, body.name)
        return JSONResponse(await run_in_threadpool(manager.status, job_id), status_code=201)

    @route("POST", "/jobs/upload")
    async def upload_job(request: Request) -> Any:
        try:
            form = await request.form()
        except Exception as exc:  # starlette raises its own parse errors (and AssertionError without multipart)
            raise HttpError(400, f"Send multipart/form-data with a 'video' file and a 'spec' JSON field ({exc}).") from None
        video = form.get("video")
        if video is None or not hasattr(video, "read"):
            raise HttpError(400, "The form has no 'video' file; send the video as the 'video' field.")
        try:
            spec_data = json.loads(form.get("spec") or "{}")
        except ValueError as exc:
            raise HttpError(400, f"The 'spec' field is not valid JSON ({exc}).") from None
        if not isinstance(spec_data, dict):
            raise HttpError(400, "The 'spec' field must be a JSON object.")
        spec_data.setdefault("source", {})
        if not isinstance(spec_data["source"], dict):
            raise HttpError(422, "spec: 'source' must be an object.")
        spec_data["source"]["path"] = "uploaded"  # validated now, replaced by the stored file below
        spec = _spec_from(spec_data, form.get("preset") or None, default_backend)
        stored = await run_in_threadpool(manager.save_upload, video.file, getattr(video, "filename", "") or "video.mp4")
        try:
            job_id = await run_in_threadpool(manager.submit, spec.with_overrides({"source.path": str(stored)}),
                                             form.get("name") or None)
        except VidstyleError:
            stored.unlink(missing_ok=True)  # our own copy of an unusable upload
            raise
        return JSONResponse(await run_in_threadpool(manager.status, job_id), status_code=201)

    @route("GET", "/jobs")
    async def list_jobs(request: Request) -> Any:
        return {"jobs": await run_in_threadpool(manager.list_jobs)}

    @route("GET", "/jobs/{job_id}")
    async def job_status(request: Request, job_id: str) -> Any:
        return await run_in_threadpool(manager.status, job_id)

    @route("POST", "/jobs/{job_id}/cancel")
    async def cancel_job(request: Request, job_id: str) -> Any:
        return await run_in_threadpool(manager.cancel, job_id)

    @route("POST", "/jobs/{job_id}/resume")
    async def resume_job(request: Request, job_id: str) -> Any:
        return await run_in_threadpool(manager.resume, job_id)

    @route("POST", "/jobs/{job_id}/redo")
    async def redo_job(request: Request, job_id: str) -> Any:
        body = _parse(RedoBody, await _json(request), "request body")
        return await run_in_threadpool(manager.redo, job_id, body.frames, body.overrides)

    @route("GET", "/jobs/{job_id}/files/{name:path}")
    async def job_file(request: Request, job_id: str, name: str) -> Any:
        if name not in RESULT_FILES:
            raise HttpError(404, f"'{name}' is not a job result; ask for one of: {', '.join(RESULT_FILES)}.")
        path = await run_in_threadpool(manager.file_path, job_id, name)
        return FileResponse(str(path), filename=Path(name).name)

    @route("GET", "/presets")
    async def presets(request: Request) -> Any:
        return {"presets": [{"name": name, "spec": load_spec(name).dict()} for name in list_presets()]}

    return router


def create_app(manager: JobManager, allowed_roots: List[Path], auth: Optional[Credentials] = None) -> FastAPI:
    """A standalone app serving only the job API (and its OpenAPI page at /docs)."""
    app = FastAPI(title="vidstyle", description="Video stylization jobs (SD img2img + LoRA + ControlNet canny).")
    app.include_router(create_router(manager, allowed_roots, auth))
    return app
