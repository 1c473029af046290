"""The HTTP edge of the WebUI backend: one httpx client per server, images as base64 PNG.

httpx exceptions and HTTP error answers are translated here, once, into `WebUIHTTPError`
with a `kind` the backend routes on (server down vs. request rejected); the backend and
preflight turn those into the one-sentence errors of `vidstyle.errors`. Works with httpx
0.24 (the WebUI's pin) through 0.28: only long-stable API is used.
"""

from __future__ import annotations

import base64
import binascii
import io
import json
from typing import Any, Dict, Optional, Tuple

import cv2
import httpx
import numpy as np
from PIL import Image

# Kinds of failure, from the backend's point of view.
UNREACHABLE = "unreachable"  # connection refused / reset / DNS: the server is not there (now)
TIMEOUT = "timeout"  # no answer in time
UNAUTHORIZED = "unauthorized"  # 401: --api-auth credentials missing or wrong
NOT_FOUND = "not_found"  # 404 on a route: API not enabled, extension missing, or an old WebUI
REJECTED = "rejected"  # other 4xx: the server refused this request (422 = a field it does not accept)
SERVER_ERROR = "server_error"  # 5xx: the server failed while working on it
BAD_RESPONSE = "bad_response"  # 2xx that is not what the WebUI sends (not JSON, no image)

SERVER_DOWN_KINDS = (UNREACHABLE, TIMEOUT)

# PNG settings for frames we send; the row filter option exists from OpenCV 4.11 on.
_PNG_PARAMS = [cv2.IMWRITE_PNG_COMPRESSION, 1, cv2.IMWRITE_PNG_STRATEGY, cv2.IMWRITE_PNG_STRATEGY_RLE]
if hasattr(cv2, "IMWRITE_PNG_FILTER"):
    _PNG_PARAMS += [cv2.IMWRITE_PNG_FILTER, cv2.IMWRITE_PNG_FILTER_SUB]


class WebUIHTTPError(Exception):
    """One failed call to a WebUI; `str()` is a sentence fragment naming what went wrong."""

    def __init__(self, kind: str, message: str, status: Optional[int] = None, detail: Any = None) -> None:
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


def parse_auth(auth: Optional[str]) -> Optional[Tuple[str, str]]:
    """`user:pass` -> (user, pass); the password may itself contain ':'."""
    if not auth:
        return None
    user, _, password = auth.partition(":")
    return user, password


class WebUIClient:
    """JSON calls to one WebUI server; thread-safe (httpx.Client pools connections)."""

    def __init__(
        self,
        url: str,
        auth: Optional[str],
        request_timeout: float,
        connect_timeout: float = 10.0,
        max_connections: int = 4,
    ) -> None:
        self.url = normalize_url(url)
        self.request_timeout = request_timeout
        self.connect_timeout = min(connect_timeout, request_timeout)
        self._client = httpx.Client(
            base_url=self.url,
            auth=parse_auth(auth),
            timeout=httpx.Timeout(request_timeout, connect=self.connect_timeout),
            limits=httpx.Limits(max_connections=max_connections, max_keepalive_connections=max_connections),
        )

    def get_json(self, path: str, timeout: Optional[float] = None, params: Optional[Dict[str, Any]] = None) -> Any:
        return self._call("GET", path, timeout=timeout, params=params)

    def post_json(self, path: str, body: Any, timeout: Optional[float] = None) -> Any:
        # Serialize once ourselves: frames are large and httpx would re-encode per attempt.
        content = json.dumps(body, separators=(",", ":")).encode("utf-8")
        return self._call("POST", path, timeout=timeout, content=content)

    def close(self) -> None:
        self._client.close()

    def _call(
        self,
        method: str,
        path: str,
        timeout: Optional[float],
        params: Optional[Dict[str, Any]] = None,
        content: Optional[bytes] = None,
    ) -> Any:
        seconds = self.request_timeout if timeout is None else timeout
        headers = {"Content-Type": "application/json"} if content is not None else None
        try:
            response = self._client.request(
                method,
                path,
                params=params,
                content=content,
                headers=headers,
                timeout=httpx.Timeout(seconds, connect=min(self.connect_timeout, seconds)),
            )
        except httpx.TimeoutException:
            raise WebUIHTTPError(TIMEOUT, f"no answer to {method} {path} within {seconds:g} s") from None
        except (httpx.TransportError, httpx.InvalidURL, httpx.UnsupportedProtocol) as exc:
            raise WebUIHTTPError(UNREACHABLE, _transport_reason(exc)) from None
        return _json_or_raise(response, method, path)


def _transport_reason(exc: Exception) -> str:
    if isinstance(exc, httpx.ConnectError):
        return "connection refused or host not found"
    if isinstance(exc, (httpx.RemoteProtocolError, httpx.ReadError, httpx.WriteError)):
        return "the connection broke off mid-request"
    text = str(exc).strip()
    return text or type(exc).__name__


def _json_or_raise(response: httpx.Response, method: str, path: str) -> Any:
    status = response.status_code
    if status >= 400:
        detail = _error_detail(response)
        raise WebUIHTTPError(
            _kind_for_status(status), describe_http_error(method, path, status, detail), status, detail
        )
    try:
        return response.json()
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


def _error_detail(response: httpx.Response) -> Any:
    try:
        return response.json()
    except (ValueError, UnicodeDecodeError):
        return response.text[:300]


def describe_http_error(method: str, path: str, status: int, detail: Any) -> str:
    """One fragment from the shapes the WebUI answers errors with.

    FastAPI validation errors: {"detail": [{"loc": [...], "msg": ...}]}; HTTPException:
    {"detail": "..."}; the WebUI's API middleware: {"error", "detail", "body", "errors"}.
    """
    if status == 422:
        field, message = rejected_field(detail)
        if field:
            return f"the server rejected field '{field}' of {method} {path} ({message})"
    text = _detail_text(detail)
    return f"{method} {path} answered HTTP {status}" + (f": {text}" if text else "")


def rejected_field(detail: Any) -> Tuple[Optional[str], str]:
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


def decode_image_base64(data: str) -> Image.Image:
    """Base64 image (optionally a data: URL, as some WebUI builds send) -> loaded RGB image.

    OpenCV decodes PNG about twice as fast as Pillow; Pillow is the fallback for anything
    OpenCV cannot read (palette or 16-bit oddities some builds send).
    """
    if data.startswith("data:image/"):
        data = data.split(",", 1)[1]
    try:
        raw = binascii.a2b_base64(data)
    except (binascii.Error, ValueError) as exc:
        raise WebUIHTTPError(BAD_RESPONSE, f"the returned image could not be decoded ({exc})") from None
    bgr = cv2.imdecode(np.frombuffer(raw, np.uint8), cv2.IMREAD_COLOR) if raw else None
    if bgr is not None:
        return Image.fromarray(cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB), "RGB")
    try:
        image = Image.open(io.BytesIO(raw))
        image.load()
        return image if image.mode == "RGB" else image.convert("RGB")
    except (OSError, ValueError, Image.DecompressionBombError) as exc:
        raise WebUIHTTPError(BAD_RESPONSE, f"the returned image could not be decoded ({exc})") from None
