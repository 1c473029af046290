"""Attacks from the WebUI side: answers too large to hold, and images that inflate to huge pixel counts.

A hostile or misdirected server (a URL that points at something else) must not make Vidstyle
hold gigabytes: answers are read up to webui_http.MAX_ANSWER_BYTES, and a returned image's
header is checked against the frame's size before any pixel is decoded. The hostile server
is `HostileWebUIDouble`: the WebUI double of tests/doubles with chosen routes answered badly.
"""

from __future__ import annotations

import asyncio
import base64
import gzip
import io
import json
import struct
import time
import zlib
from collections.abc import Awaitable, Callable, Iterator
from typing import Any

import numpy as np
import pytest
from PIL import Image

from vidstyle.backends import webui_http
from vidstyle.backends.base import Img2ImgRequest
from vidstyle.backends.webui_api import MAX_PIXELS_FACTOR, WebUIApiBackend
from vidstyle.backends.webui_http import BAD_RESPONSE, MAX_ANSWER_BYTES, WebUIClient, WebUIHTTPError
from vidstyle.errors import BackendError, PreflightError
from vidstyle.spec import JobSpec, frame_seed

try:
    from tests.doubles.webui_double import DoubleServer, make_webui_double
    from tests.webui_http_fixtures import FAST, serve_doubles
except ImportError:  # pytest run with tests/ (not the repo root) on sys.path
    from doubles.webui_double import DoubleServer, make_webui_double
    from webui_http_fixtures import FAST, serve_doubles

SIZE = 64
AUTH = "alice:s3cret-pass"
SMALL_CAP = 1024 * 1024  # tests lower the cap so an oversized answer takes megabytes, not gigabytes
Send = Callable[[dict[str, Any]], Awaitable[None]]
Receive = Callable[[], Awaitable[dict[str, Any]]]
Handler = Callable[[Receive, Send], Awaitable[None]]


# -- the hostile server ---------------------------------------------------------------------------
class HostileWebUIDouble:
    """ASGI app: the WebUI double, except that the routes in `hostile` answer with their handler."""

    def __init__(self, hostile: dict[str, Handler], **double_options: Any) -> None:
        self.double = make_webui_double(**double_options)
        self.hostile = hostile
        self.state = self.double.state

    async def __call__(self, scope: dict[str, Any], receive: Receive, send: Send) -> None:
        handler = self.hostile.get(scope.get("path", "")) if scope["type"] == "http" else None
        if handler is None:
            await self.double(scope, receive, send)
            return
        while True:  # read the request body first, as a real server would
            message = await receive()
            if message["type"] != "http.request" or not message.get("more_body"):
                break
        await handler(receive, send)


def endless_json(limit: int = 16 * SMALL_CAP) -> Handler:
    """A 200 answer with no Content-Length that goes on and on (up to `limit` bytes)."""

    async def handler(receive: Receive, send: Send) -> None:
        await send({"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"application/json")]})
        await send({"type": "http.response.body", "body": b'{"images": ["', "more_body": True})
        chunk = b"A" * 65536
        for _ in range(limit // len(chunk)):
            await send({"type": "http.response.body", "body": chunk, "more_body": True})
        await send({"type": "http.response.body", "body": b'"]}', "more_body": False})

    return handler


def declared_huge(status: int = 200) -> Handler:
    """Declares a 4 GiB body, sends 64 KiB of it and stalls until the client hangs up."""

    async def handler(receive: Receive, send: Send) -> None:
        headers = [(b"content-type", b"application/json"), (b"content-length", str(4 << 30).encode())]
        await send({"type": "http.response.start", "status": status, "headers": headers})
        await send({"type": "http.response.body", "body": b" " * 65536, "more_body": True})
        try:
            await asyncio.wait_for(receive(), timeout=10)  # http.disconnect once the client gives up
        except asyncio.TimeoutError:
            pass

    return handler


def gzip_bomb() -> Handler:
    """A small gzip body that inflates to 8x the (lowered) cap."""
    body = gzip.compress(b'{"x": "' + b"A" * (8 * SMALL_CAP) + b'"}')

    async def handler(receive: Receive, send: Send) -> None:
        headers = [
            (b"content-type", b"application/json"),
            (b"content-encoding", b"gzip"),
            (b"content-length", str(len(body)).encode()),
        ]
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        await send({"type": "http.response.body", "body": body, "more_body": False})

    return handler


def broken_gzip() -> Handler:
    """Says gzip, sends something else."""

    async def handler(receive: Receive, send: Send) -> None:
        headers = [(b"content-type", b"application/json"), (b"content-encoding", b"gzip")]
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        await send({"type": "http.response.body", "body": b"not gzip at all" * 100, "more_body": False})

    return handler


def img2img_answer(image_png: bytes) -> Handler:
    """An img2img answer shaped like the WebUI's, holding the given PNG."""
    body = json.dumps({"images": [base64.b64encode(image_png).decode()], "parameters": {}, "info": "{}"}).encode()

    async def handler(receive: Receive, send: Send) -> None:
        headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        await send({"type": "http.response.body", "body": body, "more_body": False})

    return handler


def png_header_only(width: int, height: int) -> bytes:
    """A PNG that declares width x height RGB pixels but carries only a few rows: a decompression bomb's header."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    rows = zlib.compress(b"\x00" * (1 + 3 * min(width, 4096)) * 4, 9)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", rows) + chunk(b"IEND", b"")


def png_bytes(width: int, height: int) -> bytes:
    out = io.BytesIO()
    Image.new("RGB", (width, height), (10, 200, 30)).save(out, "PNG")
    return out.getvalue()


# -- fixtures and helpers -------------------------------------------------------------------------
@pytest.fixture
def hostile_servers() -> Iterator[Callable[..., DoubleServer]]:
    """Start HostileWebUIDouble(hostile, **options) servers; all are stopped at the end."""
    yield from serve_doubles(HostileWebUIDouble)


@pytest.fixture
def small_cap(monkeypatch: pytest.MonkeyPatch) -> int:
    monkeypatch.setattr(webui_http, "MAX_ANSWER_BYTES", SMALL_CAP)
    return SMALL_CAP


@pytest.fixture
def decoded(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """Byte counts of the images OpenCV was asked to decode (a spy; they still decode, bombs excepted)."""
    seen: list[int] = []
    real_imdecode = webui_http.cv2.imdecode

    def imdecode_spy(buffer: Any, flags: int) -> Any:
        seen.append(len(buffer))
        if len(buffer) < 4096 and bytes(buffer[:8]) == b"\x89PNG\r\n\x1a\n" and _declared_pixels(buffer) > 1 << 24:
            return None  # a bomb: say "cannot decode" instead of allocating gigabytes in the test
        return real_imdecode(buffer, flags)

    monkeypatch.setattr(webui_http.cv2, "imdecode", imdecode_spy)
    return seen


def _declared_pixels(buffer: Any) -> int:
    width, height = struct.unpack(">II", bytes(buffer[16:24]))
    return int(width) * int(height)


def make_spec(url: str) -> JobSpec:
    return JobSpec.parse_obj(
        {
            "size": {"width": SIZE, "height": SIZE},
            "prompt": "1girl",
            "model": {"checkpoint": "v1-5-pruned-emaonly"},
            "controlnet": {"enabled": False},
            "sampling": {"seed": 1234, "steps": 2},
            "backend": {"kind": "webui_api", "webui_urls": [url], "timeout": 10.0},
        }
    )


def make_request(spec: JobSpec) -> Img2ImgRequest:
    # No control image: the spec turns ControlNet off.
    init = Image.new("RGB", (SIZE, SIZE), (90, 90, 90))
    return Img2ImgRequest.for_spec(spec, 0, init, None, frame_seed(spec, 0, 0))  # type: ignore[arg-type]


def refused_render(server: DoubleServer, error: type[Exception]) -> str:
    """Render one frame from `server`; the message of the `error` that must stop it."""
    spec = make_spec(server.url)
    with pytest.raises(error) as caught:
        backend = WebUIApiBackend(spec, policy=FAST, auth=AUTH)
        try:
            backend.img2img(make_request(spec))
        finally:
            backend.close()
    return str(caught.value)


def refused_get(server: DoubleServer, path: str, auth: str | None = None, timeout: float = 10) -> WebUIHTTPError:
    """GET `path` from `server` with a fresh client; the WebUIHTTPError it raised."""
    client = WebUIClient(server.url, auth, request_timeout=timeout)
    try:
        with pytest.raises(WebUIHTTPError) as caught:
            client.get_json(path)
    finally:
        client.close()
    return caught.value


def assert_no_leak(message: str) -> None:
    assert "s3cret" not in message and "alice" not in message
    assert "AAAA" not in message  # nothing of what the server sent


# -- answer size ----------------------------------------------------------------------------------
def test_an_endless_answer_is_dropped_at_the_cap(hostile_servers: Any, small_cap: int) -> None:
    server = hostile_servers({"/sdapi/v1/sd-models": endless_json()})
    error = refused_get(server, "/sdapi/v1/sd-models", AUTH)
    assert error.kind == BAD_RESPONSE
    assert error.message == "the answer to GET /sdapi/v1/sd-models was larger than 1 MiB"
    assert_no_leak(str(error))


def test_a_declared_huge_answer_is_refused_before_reading(hostile_servers: Any) -> None:
    # Default cap: the 4 GiB Content-Length is refused at once instead of waiting for the body.
    server = hostile_servers({"/sdapi/v1/samplers": declared_huge()})
    started = time.monotonic()
    error = refused_get(server, "/sdapi/v1/samplers", timeout=3)
    assert error.kind == BAD_RESPONSE, error.message
    assert "larger than 256 MiB" in error.message
    assert time.monotonic() - started < 2.5  # not the 3 s read timeout


def test_an_error_answer_is_capped_too(hostile_servers: Any) -> None:
    server = hostile_servers({"/sdapi/v1/samplers": declared_huge(status=500)})
    error = refused_get(server, "/sdapi/v1/samplers", timeout=3)
    assert error.kind == BAD_RESPONSE and "larger than" in error.message


def test_the_cap_counts_decompressed_bytes(hostile_servers: Any, small_cap: int) -> None:
    server = hostile_servers({"/sdapi/v1/sd-models": gzip_bomb()})
    assert "larger than 1 MiB" in refused_get(server, "/sdapi/v1/sd-models").message


def test_a_body_that_is_not_what_its_encoding_says_is_a_bad_response(hostile_servers: Any) -> None:
    server = hostile_servers({"/sdapi/v1/sd-models": broken_gzip()})
    error = refused_get(server, "/sdapi/v1/sd-models")
    assert error.kind == BAD_RESPONSE
    assert error.message == "the answer to GET /sdapi/v1/sd-models could not be decompressed"


def test_preflight_names_the_server_and_the_cap(hostile_servers: Any, small_cap: int) -> None:
    server = hostile_servers({"/sdapi/v1/sd-models": endless_json()}, auth=AUTH)
    message = refused_render(server, PreflightError)
    assert server.url in message and "larger than 1 MiB" in message
    assert_no_leak(message)


def test_an_oversized_img2img_answer_fails_the_frame(hostile_servers: Any, small_cap: int) -> None:
    server = hostile_servers({"/sdapi/v1/img2img": endless_json()}, auth=AUTH)
    message = refused_render(server, BackendError)
    assert server.url in message and "the answer to POST /sdapi/v1/img2img was larger than 1 MiB" in message
    assert_no_leak(message)


def test_the_cap_leaves_room_for_a_real_2048_answer() -> None:
    noise = np.random.default_rng(0).integers(0, 256, (2048, 2048, 3), dtype=np.uint8)
    image = webui_http.encode_png_base64(Image.fromarray(noise, "RGB"))
    answer = json.dumps({"images": [image, image], "parameters": {}, "info": json.dumps({"infotexts": ["x" * 5000]})})
    assert len(answer) * 5 < MAX_ANSWER_BYTES  # two full-size noise images (image + detected map), 5x over
    decoded = webui_http.decode_image_base64(image, max_pixels=MAX_PIXELS_FACTOR * 2048 * 2048)
    assert decoded.size == (2048, 2048)


# -- decompression bombs --------------------------------------------------------------------------
def test_a_bomb_image_is_refused_before_decoding(hostile_servers: Any, decoded: list[int]) -> None:
    bomb = png_header_only(30000, 30000)  # 900 Mpx: under OpenCV's own 1 Gpx limit, ~2.7 GB decoded
    server = hostile_servers({"/sdapi/v1/img2img": img2img_answer(bomb)}, auth=AUTH)
    message = refused_render(server, BackendError)
    assert len(bomb) not in decoded  # the double's own decodes of our init image are other sizes
    assert message == (
        f"The WebUI at {server.url} returned an image for a 64x64 frame, far more pixels than asked for, "
        "so it was not decoded; check that the URL is a Stable Diffusion WebUI."
    )
    assert_no_leak(message)


def test_an_image_far_larger_than_the_frame_is_refused_at_once(hostile_servers: Any, decoded: list[int]) -> None:
    big = png_bytes(200, 200)  # 40000 px > 4 x 64 x 64
    server = hostile_servers({"/sdapi/v1/img2img": img2img_answer(big)})
    message = refused_render(server, BackendError)
    assert len(big) not in decoded
    assert message.startswith(f"The WebUI at {server.url} returned a 200x200 image for a 64x64 frame, far")


def test_decode_checks_the_header_against_max_pixels(decoded: list[int]) -> None:
    data = base64.b64encode(png_bytes(100, 100)).decode()
    with pytest.raises(webui_http.ImageTooLarge) as caught:
        webui_http.decode_image_base64(data, max_pixels=9999)
    assert caught.value.size == (100, 100) and caught.value.kind == BAD_RESPONSE
    assert decoded == []
    assert webui_http.decode_image_base64(data, max_pixels=10000).size == (100, 100)
