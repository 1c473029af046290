"""The HTTP edge of the WebUI backend: one httpx client per server, images as base64 PNG.

httpx exceptions and HTTP error answers are translated here, once, into `WebUIHTTPError`
with a `kind` the backend routes on (server down vs. request rejected); the backend and
preflight turn those into the one-sentence errors of `vidstyle.errors`. Works with httpx
0.24 (the WebUI's pin) through 0.28: only long-stable API is used, save one guarded hook
into httpcore for the total request deadline (`_install_deadline_backend`).
"""

from __future__ import annotations

import base64
import binascii
import io
import json
import logging
import os
import re
import time
from collections.abc import Callable
from contextvars import ContextVar
from typing import Any

import cv2
import httpcore
import httpx
import numpy as np
from PIL import Image

from ..auth import parse_auth

# Kinds of failure, from the backend's point of view.
UNREACHABLE = "unreachable"  # connection refused / reset / DNS: the server is not there (now)
TIMEOUT = "timeout"  # no answer in time
UNAUTHORIZED = "unauthorized"  # 401: --api-auth credentials missing or wrong
NOT_FOUND = "not_found"  # 404 on a route: API not enabled, extension missing, or an old WebUI
REJECTED = "rejected"  # other 4xx: the server refused this request (422 = a field it does not accept)
SERVER_ERROR = "server_error"  # 5xx: the server failed while working on it
BAD_RESPONSE = "bad_response"  # 2xx that is not what the WebUI sends (not JSON, no image)

SERVER_DOWN_KINDS = (UNREACHABLE, TIMEOUT)

MIB = 1024 * 1024
# Most bytes one answer may have (after content decoding); past it the answer is dropped
# unread. The largest real answer is an img2img one: a 2048x2048 PNG of noise is ~12.6 MB,
# ~17 MB as base64, plus infotext and ControlNet's detected maps; 256 MiB leaves >10x room
# while a hostile or misdirected server can no longer make us hold gigabytes.
MAX_ANSWER_BYTES = 256 * MIB
# httpx's timeouts are per read, so a server that drips a byte every few seconds could hold a
# request for hours. Each request must instead be over (sent, answered, read) within its
# timeout plus this grace: 10 % of it, at least 1 s, leaving room to read a large answer that
# began just inside the timeout.
DEADLINE_GRACE_FRACTION = 0.1
DEADLINE_GRACE_MIN = 1.0
_FIELD_NAME = re.compile(r"^[A-Za-z0-9_]{1,40}(\.[A-Za-z0-9_]{1,40}){0,7}$")
log = logging.getLogger(__name__)

# PNG settings for frames we send; the row filter option exists from OpenCV 4.11 on.
_PNG_PARAMS = [cv2.IMWRITE_PNG_COMPRESSION, 1, cv2.IMWRITE_PNG_STRATEGY, cv2.IMWRITE_PNG_STRATEGY_RLE]
if hasattr(cv2, "IMWRITE_PNG_FILTER"):
    _PNG_PARAMS += [cv2.IMWRITE_PNG_FILTER, cv2.IMWRITE_PNG_FILTER_SUB]


class WebUIHTTPError(Exception):
    """One failed call to a WebUI; `str()` is a sentence fragment naming what went wrong."""

    def __init__(self, kind: str, message: str, status: int | None = None, detail: Any = None) -> None:
        super().__init__(message)
        self.kind = kind
        self.message = message
        self.status = status
        self.detail = detail


def normalize_url(url: str) -> str:
    """`host:7860` or `http://host:7860/` -> `http://host:7860` (the form used in messages)."""
    url = url.strip().rstrip("/")
    if "://" not in url:
        url = "http://" + url
    return url


AUTH_ENV = "VIDSTYLE_WEBUI_AUTH"


def resolve_auth(given: str | None) -> str | None:
    """The WebUI user:password: the one given (--webui-auth, the server's policy, an old job's
    job.toml), else the VIDSTYLE_WEBUI_AUTH environment variable. Never part of a JobSpec."""
    if given:
        return given
    return os.environ.get(AUTH_ENV) or None


class WebUIClient:
    """JSON calls to one WebUI server; thread-safe (httpx.Client pools connections)."""

    def __init__(
        self,
        url: str,
        auth: str | None,
        request_timeout: float,
        connect_timeout: float = 10.0,
        max_connections: int = 4,
        max_answer_bytes: int | None = None,
    ) -> None:
        self.url = normalize_url(url)
        # Read at construction (not import) so tests can lower the module's cap.
        self.max_answer_bytes = MAX_ANSWER_BYTES if max_answer_bytes is None else max_answer_bytes
        self.request_timeout = request_timeout
        self.connect_timeout = min(connect_timeout, request_timeout)
        self._client = httpx.Client(
            base_url=self.url,
            auth=parse_auth(auth),
            timeout=httpx.Timeout(request_timeout, connect=self.connect_timeout),
            limits=httpx.Limits(max_connections=max_connections, max_keepalive_connections=max_connections),
        )
        _install_deadline_backend(self._client)

    def get_json(self, path: str, timeout: float | None = None, params: dict[str, Any] | None = None) -> Any:
        return self._call("GET", path, timeout=timeout, params=params)

    def post_json(self, path: str, body: Any, timeout: float | None = None) -> Any:
        # Serialize once ourselves: frames are large and httpx would re-encode per attempt.
        content = json.dumps(body, separators=(",", ":")).encode("utf-8")
        return self._call("POST", path, timeout=timeout, content=content)

    def post_body(
        self, path: str, content: bytes, timeout: float | None = None, on_sent: Callable[[], None] | None = None
    ) -> Any:
        """POST an already serialized JSON body; `on_sent()` runs once its last byte is written.

        The WebUI queues a request only once it has the whole body, so `on_sent` is the
        earliest moment a second request to the same server may start without overtaking it.
        """
        return self._call("POST", path, timeout=timeout, content=content, on_sent=on_sent)

    def close(self) -> None:
        self._client.close()

    def _call(
        self,
        method: str,
        path: str,
        timeout: float | None,
        params: dict[str, Any] | None = None,
        content: bytes | None = None,
        on_sent: Callable[[], None] | None = None,
    ) -> Any:
        seconds = self.request_timeout if timeout is None else timeout
        headers = {"Content-Type": "application/json"} if content is not None else None
        # httpcore's trace hook (httpcore 0.15+): events "<protocol>.send_request_body.complete" etc.
        extensions = {"trace": _body_sent_tracer(on_sent)} if on_sent is not None else None
        deadline = _Deadline(seconds)
        token = _current_deadline.set(deadline)
        try:
            # Streamed so an answer past max_answer_bytes is dropped before it is all in memory.
            with self._client.stream(
                method,
                path,
                params=params,
                content=content,
                headers=headers,
                timeout=httpx.Timeout(seconds, connect=min(self.connect_timeout, seconds)),
                extensions=extensions,
            ) as response:
                body = _read_capped(response, self.max_answer_bytes, method, path, deadline)
        except httpx.TimeoutException:
            if deadline.expired():  # a socket wait cut short by the deadline, not a silent server
                raise deadline.error(method, path) from None
            raise WebUIHTTPError(TIMEOUT, f"no answer to {method} {path} within {seconds:g} s") from None
        except (httpx.TransportError, httpx.InvalidURL, httpx.UnsupportedProtocol) as exc:
            raise WebUIHTTPError(UNREACHABLE, _transport_reason(exc)) from None
        except httpx.DecodingError:  # e.g. a body that says gzip and is not
            raise WebUIHTTPError(BAD_RESPONSE, f"the answer to {method} {path} could not be decompressed") from None
        finally:
            _current_deadline.reset(token)
        return _json_or_raise(response.status_code, body, method, path)


def deadline_grace(seconds: float) -> float:
    """Seconds past a request's timeout before its total deadline abandons it."""
    return max(DEADLINE_GRACE_MIN, seconds * DEADLINE_GRACE_FRACTION)


class _Deadline:
    """One request's total time: its timeout plus `deadline_grace`. The clock starts at its first
    network operation, so waiting for a free pooled connection (httpx's pool timeout) does not count."""

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds
        self.budget = seconds + deadline_grace(seconds)
        self.ends: float | None = None

    def start(self) -> None:
        self.remaining()

    def remaining(self) -> float:
        if self.ends is None:
            self.ends = time.monotonic() + self.budget
        return self.ends - time.monotonic()

    def expired(self) -> bool:
        return self.ends is not None and time.monotonic() >= self.ends

    def error(self, method: str, path: str) -> WebUIHTTPError:
        return WebUIHTTPError(TIMEOUT, f"no complete answer to {method} {path} within {self.seconds:g} s")


# The deadline of the request this thread is making: sync httpx does all of a request's
# I/O on the calling thread, and a ContextVar keeps concurrent requests apart.
_current_deadline: ContextVar[_Deadline | None] = ContextVar("webui_http_deadline", default=None)


def _clamp(timeout: float | None, error: type[Exception]) -> float | None:
    """`timeout` shortened to what is left of the current request's deadline (`error` once none is)."""
    deadline = _current_deadline.get()
    if deadline is None:
        return timeout
    left = deadline.remaining()
    if left <= 0:  # a zero socket timeout would mean non-blocking, not "time is up"
        raise error("the request's total deadline has passed")
    return left if timeout is None else min(timeout, left)


class _DeadlineStream(httpcore.NetworkStream):
    """A connection whose every socket wait ends by the current request's deadline.

    Covers what a per-read timeout cannot: headers or a body dripped a byte at a time, and
    a request body the server reads a byte at a time.
    """

    _WRITE_PIECE = 64 * 1024  # deadline checked between pieces of a large request body

    def __init__(self, stream: httpcore.NetworkStream) -> None:
        self._stream = stream

    def read(self, max_bytes: int, timeout: float | None = None) -> bytes:
        return self._stream.read(max_bytes, _clamp(timeout, httpcore.ReadTimeout))

    def write(self, buffer: bytes, timeout: float | None = None) -> None:
        view = memoryview(buffer)
        for start in range(0, len(view), self._WRITE_PIECE):
            piece = bytes(view[start : start + self._WRITE_PIECE])
            self._stream.write(piece, _clamp(timeout, httpcore.WriteTimeout))

    def close(self) -> None:
        self._stream.close()

    def start_tls(self, *args: Any, **kwargs: Any) -> httpcore.NetworkStream:
        if "timeout" in kwargs:  # the TLS handshake counts too
            kwargs["timeout"] = _clamp(kwargs["timeout"], httpcore.ConnectTimeout)
        return _DeadlineStream(self._stream.start_tls(*args, **kwargs))

    def get_extra_info(self, info: str) -> Any:
        return self._stream.get_extra_info(info)


class _DeadlineBackend(httpcore.NetworkBackend):
    """httpcore's network backend with connections wrapped in `_DeadlineStream`."""

    def __init__(self, backend: httpcore.NetworkBackend) -> None:
        self._backend = backend

    def connect_tcp(self, *args: Any, **kwargs: Any) -> httpcore.NetworkStream:
        if "timeout" in kwargs:
            kwargs["timeout"] = _clamp(kwargs["timeout"], httpcore.ConnectTimeout)
        return _DeadlineStream(self._backend.connect_tcp(*args, **kwargs))

    def connect_unix_socket(self, *args: Any, **kwargs: Any) -> httpcore.NetworkStream:
        if "timeout" in kwargs:
            kwargs["timeout"] = _clamp(kwargs["timeout"], httpcore.ConnectTimeout)
        return _DeadlineStream(self._backend.connect_unix_socket(*args, **kwargs))

    def sleep(self, seconds: float) -> None:
        self._backend.sleep(seconds)


def _install_deadline_backend(client: httpx.Client) -> None:
    """Route the client's connections (direct and through proxies) through `_DeadlineBackend`.

    httpx has no public hook for this; every httpcore from 0.16 (httpx 0.24) to 1.x keeps its
    pool's backend in `_network_backend`. Should that change, the body's deadline still holds
    (checked per chunk in `_read_capped`) and only dripped headers are left to per-read timeouts.
    """
    transports = [client._transport, *client._mounts.values()]
    for transport in transports:
        pool = getattr(transport, "_pool", None)
        backend = getattr(pool, "_network_backend", None)
        if pool is not None and isinstance(backend, httpcore.NetworkBackend):  # a fresh client's own pools
            pool._network_backend = _DeadlineBackend(backend)
        elif transport is not None:
            log.debug("no total request deadline on dripped headers: unknown httpx transport %r", transport)


def _body_sent_tracer(on_sent: Callable[[], None]) -> Callable[[str, dict[str, Any]], None]:
    def trace(event: str, info: dict[str, Any]) -> None:
        if event.endswith("send_request_body.complete"):
            on_sent()

    return trace


def json_with_blobs(body: Any, blobs: dict[str, bytes]) -> bytes:
    """JSON of `body` in which every string equal to a key of `blobs` becomes that blob's text.

    For base64 images: base64 needs no JSON escaping, so splicing the bytes in costs a copy
    where json.dumps would scan every character (about half the time for two 1024x1024 frames).
    Keys should be strings no prompt contains (see `blob_placeholder`).
    """
    text = json.dumps(body, separators=(",", ":")).encode("utf-8")
    for key, blob in blobs.items():
        text = text.replace(json.dumps(key).encode("utf-8"), b'"' + blob + b'"')
    return text


_PLACEHOLDER_TOKEN = os.urandom(8).hex()


def blob_placeholder(name: str) -> str:
    """A string that stands for a blob in `json_with_blobs`, unguessable by prompt authors."""
    return f"\x00{name}:{_PLACEHOLDER_TOKEN}\x00"


def _transport_reason(exc: Exception) -> str:
    if isinstance(exc, httpx.ConnectError):
        return "connection refused or host not found"
    if isinstance(exc, (httpx.RemoteProtocolError, httpx.ReadError, httpx.WriteError)):
        return "the connection broke off mid-request"
    text = str(exc).strip()
    return text or type(exc).__name__


def _read_capped(response: httpx.Response, cap: int, method: str, path: str, deadline: _Deadline) -> bytes:
    """The answer's (decoded) bytes; BAD_RESPONSE as soon as it declares or sends more than `cap`.

    Each chunk is checked as it arrives, so at most `cap` plus one decoded chunk is held;
    and against the request's deadline, so a body dripped out slowly is dropped when time is up.
    """
    deadline.start()
    declared = response.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > cap:
        raise _too_large(method, path, cap, response.status_code)
    chunks: list[bytes] = []
    total = 0
    for chunk in response.iter_bytes():
        total += len(chunk)
        if total > cap:
            raise _too_large(method, path, cap, response.status_code)
        if deadline.expired():  # the response is closed as the error leaves `client.stream`
            raise deadline.error(method, path)
        chunks.append(chunk)
    return b"".join(chunks)


def _too_large(method: str, path: str, cap: int, status: int) -> WebUIHTTPError:
    size = f"{cap // MIB} MiB" if cap >= MIB else f"{cap} bytes"
    return WebUIHTTPError(BAD_RESPONSE, f"the answer to {method} {path} was larger than {size}", status)


def _json_or_raise(status: int, body: bytes, method: str, path: str) -> Any:
    if status >= 400:
        detail = _error_detail(body)
        raise WebUIHTTPError(
            _kind_for_status(status), describe_http_error(method, path, status, detail), status, detail
        )
    try:
        return json.loads(body)
    except (ValueError, UnicodeDecodeError):
        raise WebUIHTTPError(BAD_RESPONSE, f"{method} {path} did not return JSON", status) from None


def _kind_for_status(status: int) -> str:
    if status == 401:
        return UNAUTHORIZED
    if status == 404:
        return NOT_FOUND
    if status >= 500:
        return SERVER_ERROR
    return REJECTED


def _error_detail(body: bytes) -> Any:
    try:
        return json.loads(body)
    except (ValueError, UnicodeDecodeError):
        return body[:300].decode("utf-8", "replace")


def describe_http_error(method: str, path: str, status: int, detail: Any) -> str:
    """One fragment of ours for a WebUI's error answer; its body goes to the log, not the message.

    Messages reach job statuses, which API clients read, so what a server answered is
    never passed on; only a rejected field's name, when it is a plain dotted name.
    Shapes: FastAPI validation errors {"detail": [{"loc": [...], "msg": ...}]}; HTTPException
    {"detail": "..."}; the WebUI's API middleware {"error", "detail", "body", "errors"}.
    """
    text = _detail_text(detail)
    if text:
        log.warning("WebUI answered HTTP %s to %s %s: %s", status, method, path, text)
    if status == 422:
        field, _ = rejected_field(detail)
        if field and _FIELD_NAME.match(field):
            return f"the server rejected field '{field}' of {method} {path}"
    return f"{method} {path} answered HTTP {status}"


def rejected_field(detail: Any) -> tuple[str | None, str]:
    """(dotted field, message) of the first validation error in a 422 answer, if any."""
    items = detail.get("detail") if isinstance(detail, dict) else None
    if isinstance(items, list) and items and isinstance(items[0], dict):
        first = items[0]
        loc = [str(part) for part in first.get("loc", []) if part not in ("body", "__root__")]
        return (".".join(loc) or None), str(first.get("msg", "invalid value"))
    return None, _detail_text(detail)


def _detail_text(detail: Any) -> str:
    if isinstance(detail, dict):
        parts = [str(detail.get(key)) for key in ("error", "detail", "errors") if detail.get(key)]
        text = ": ".join(parts)
    else:
        text = str(detail or "")
    text = " ".join(text.split())
    return text if len(text) <= 300 else text[:297] + "..."


def encode_png_base64(image: Image.Image) -> str:
    """RGB image -> base64 PNG text, the form init_images and a unit's image take.

    OpenCV with one fixed row filter and zlib's run-length strategy: about 3x faster than
    Pillow's adaptive filters + deflate for a 512x512 frame, and smaller than Pillow's
    compress_level=1 (see benchmarks/bench_http_overhead.py).
    """
    rgb = np.asarray(image if image.mode == "RGB" else image.convert("RGB"))
    ok, data = cv2.imencode(".png", cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR), _PNG_PARAMS)
    if not ok:  # pragma: no cover - OpenCV only fails on empty or unsupported arrays
        raise ValueError(f"OpenCV could not encode a {image.width}x{image.height} image as PNG")
    return base64.b64encode(data.tobytes()).decode("ascii")


class ImageTooLarge(WebUIHTTPError):
    """A returned image whose header declares more pixels than the caller allows; it was not decoded."""

    def __init__(self, size: tuple[int, int] | None, max_pixels: int) -> None:
        shown = f"a {size[0]}x{size[1]} image" if size else "an image"
        super().__init__(BAD_RESPONSE, f"it returned {shown} of more than {max_pixels:,} pixels")
        self.size = size  # None: too large even for Pillow to tell


def decode_image_base64(data: str, max_pixels: int | None = None) -> Image.Image:
    """Base64 image (optionally a data: URL, as some WebUI builds send) -> loaded RGB image.

    OpenCV decodes PNG about twice as fast as Pillow; Pillow is the fallback for anything
    OpenCV cannot read (palette or 16-bit oddities some builds send). With `max_pixels`, the
    size in the image's header is checked first (ImageTooLarge), so a few kilobytes that
    inflate to gigabytes of pixels (a decompression bomb) are never decoded.
    """
    if data.startswith("data:image/"):
        data = data.split(",", 1)[1]
    try:
        raw = binascii.a2b_base64(data)
    except (binascii.Error, ValueError) as exc:
        raise WebUIHTTPError(BAD_RESPONSE, f"the returned image could not be decoded ({exc})") from None
    if max_pixels is not None:
        _check_pixels(raw, max_pixels)
    bgr = cv2.imdecode(np.frombuffer(raw, np.uint8), cv2.IMREAD_COLOR) if raw else None
    if bgr is not None:
        return Image.fromarray(cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB), "RGB")
    try:
        image = Image.open(io.BytesIO(raw))
        image.load()  # type: ignore[no-untyped-call]  # Pillow's ImageFile.load is not annotated
        return image if image.mode == "RGB" else image.convert("RGB")
    except (OSError, ValueError, Image.DecompressionBombError) as exc:
        raise WebUIHTTPError(BAD_RESPONSE, f"the returned image could not be decoded ({exc})") from None


def _check_pixels(raw: bytes, max_pixels: int) -> None:
    """ImageTooLarge when the header of `raw` declares more than `max_pixels` (nothing is decoded)."""
    try:
        with Image.open(io.BytesIO(raw)) as header:  # reads the header only
            width, height = header.size
    except Image.DecompressionBombError:  # Pillow's own limit (~179 Mpx), far past any caller's
        raise ImageTooLarge(None, max_pixels) from None
    except (OSError, ValueError) as exc:  # an image whose size cannot be told is not decoded either
        raise WebUIHTTPError(BAD_RESPONSE, f"the returned image could not be decoded ({exc})") from None
    if width * height > max_pixels:
        raise ImageTooLarge((width, height), max_pixels)
