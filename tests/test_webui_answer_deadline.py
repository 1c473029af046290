"""Attacks from the WebUI side: answers that come too slowly ever to trip a per-read timeout.

httpx's timeouts are per read: a server that drips one byte a little faster than the read
timeout keeps a request alive for as long as it likes. Each request must instead finish
within its timeout plus a small grace (webui_http's total deadline), whether the drip is in
the body (`body_drip`, served by the caps tests' `HostileWebUIDouble`) or in the headers
(`SlowSocketWebUIDouble`, a raw socket server, since an ASGI app cannot split its headers).
Every call runs in a thread joined with a guard, so a hang fails the test instead of blocking it.
"""

from __future__ import annotations

import asyncio
import socket
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from vidstyle.backends import webui_http
from vidstyle.backends.webui_http import TIMEOUT, WebUIClient, WebUIHTTPError

try:
    from tests.test_webui_answer_caps import AUTH, HostileWebUIDouble, Receive, Send, assert_no_leak
    from tests.webui_http_fixtures import serve_doubles
except ImportError:  # pytest run with tests/ (not the repo root) on sys.path
    from test_webui_answer_caps import AUTH, HostileWebUIDouble, Receive, Send, assert_no_leak
    from webui_http_fixtures import serve_doubles

REQUEST_TIMEOUT = 1.0  # seconds; the deadline is this plus webui_http's grace
DRIP_SECONDS = 0.25  # between dripped bytes: well under the read timeout, so no single read times out
DRIP_FOR = 20.0  # how long a double drips at most: far past any deadline, so a hang is plain
GUARD = 8.0  # a call still running after this long has hung (the old code's behaviour)


# -- the slow servers -----------------------------------------------------------------------------
def body_drip(status: int = 200, client_left: threading.Event | None = None) -> Any:
    """ASGI handler: headers at once, then the body one byte every DRIP_SECONDS until the client
    leaves (then `client_left` is set)."""

    async def handler(receive: Receive, send: Send) -> None:
        headers = [(b"content-type", b"application/json")]
        await send({"type": "http.response.start", "status": status, "headers": headers})
        await send({"type": "http.response.body", "body": b'{"x": "', "more_body": True})
        stop = time.monotonic() + DRIP_FOR
        while time.monotonic() < stop:
            try:  # the wait doubles as the drip's pace and notices the client hanging up
                message = await asyncio.wait_for(receive(), timeout=DRIP_SECONDS)
                if message["type"] == "http.disconnect":
                    if client_left is not None:
                        client_left.set()
                    return
            except asyncio.TimeoutError:
                pass
            await send({"type": "http.response.body", "body": b"A", "more_body": True})
        await send({"type": "http.response.body", "body": b'"}', "more_body": False})

    return handler


class SlowSocketWebUIDouble:
    """A raw TCP server double: reads each request, then answers with `answer(conn)` in a thread.

    Answers: `drip_headers` (a status line, then header bytes one at a time), `silent` (never
    a byte), or `slow_but_complete` (a whole, valid answer dripped out within the timeout).
    """

    def __init__(self, answer: Callable[[socket.socket, threading.Event], None]) -> None:
        self.answer = answer
        self.stopped = threading.Event()
        self.requests = 0
        self.connections = 0
        self._sock = socket.create_server(("127.0.0.1", 0))
        self._sock.settimeout(0.1)
        self.url = f"http://127.0.0.1:{self._sock.getsockname()[1]}"
        self._threads = [threading.Thread(target=self._accept, daemon=True, name="slow-webui-double")]
        self._threads[0].start()

    def _accept(self) -> None:
        while not self.stopped.is_set():
            try:
                conn, _ = self._sock.accept()
            except OSError:  # the accept timeout (to notice stop()) or the socket closed by it
                continue
            thread = threading.Thread(target=self._serve, args=(conn,), daemon=True)
            self._threads.append(thread)
            thread.start()

    def _serve(self, conn: socket.socket) -> None:
        self.connections += 1
        with conn:
            conn.settimeout(5)
            try:
                while not self.stopped.is_set():  # keep-alive: one answer per request
                    _read_request(conn)
                    self.requests += 1
                    self.answer(conn, self.stopped)
            except OSError:  # the client hung up: what a bounded client does
                pass

    def stop(self) -> None:
        self.stopped.set()
        self._sock.close()
        for thread in self._threads:
            thread.join(timeout=2)


def _read_request(conn: socket.socket) -> None:
    """Read one request's head and its Content-Length body."""
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = conn.recv(65536)
        if not chunk:
            raise ConnectionResetError("client left before its request was whole")
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    length = 0
    for line in head.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            length = int(value)
    while len(body) < length:
        body += conn.recv(65536)


def drip_headers(conn: socket.socket, stopped: threading.Event) -> None:
    conn.sendall(b"HTTP/1.1 200 OK\r\nX-Padding: ")
    stop = time.monotonic() + DRIP_FOR
    while time.monotonic() < stop and not stopped.wait(DRIP_SECONDS):
        conn.sendall(b"A")


def silent(conn: socket.socket, stopped: threading.Event) -> None:
    stopped.wait(DRIP_FOR)


def slow_but_complete(conn: socket.socket, stopped: threading.Event) -> None:
    """A valid answer in six pieces 0.14 s apart, whole after ~0.7 s: within a 1 s timeout."""
    body = b'{"ok": true}'
    pieces = [b"HTTP/1.1 200 OK\r\n", b"Content-Type: application/json\r\n"]
    pieces += [b"Content-Length: %d\r\n\r\n" % len(body), body[:4], body[4:8], body[8:]]
    for piece in pieces:
        time.sleep(0.14)
        conn.sendall(piece)


# -- fixtures and helpers -------------------------------------------------------------------------
@pytest.fixture
def hostile_servers() -> Iterator[Callable[..., Any]]:
    yield from serve_doubles(HostileWebUIDouble)


@pytest.fixture
def slow_servers() -> Iterator[Callable[..., SlowSocketWebUIDouble]]:
    servers: list[SlowSocketWebUIDouble] = []

    def start(answer: Callable[[socket.socket, threading.Event], None]) -> SlowSocketWebUIDouble:
        servers.append(SlowSocketWebUIDouble(answer))
        return servers[-1]

    yield start
    for server in servers:
        server.stop()


def guarded(
    call: Callable[[WebUIClient], Any], url: str, auth: str | None = None, before_close: Callable[[], Any] = list
) -> tuple[Any, float]:
    """(result or exception of `call(client)`, seconds it took); fails the test if it hangs past GUARD.

    `before_close()` runs while the client (and its pool) is still open.
    """
    outcome: list[Any] = []
    client = WebUIClient(url, auth, request_timeout=REQUEST_TIMEOUT)

    def run() -> None:
        try:
            outcome.append(call(client))
        except Exception as exc:  # handed to the test, which asserts on it
            outcome.append(exc)

    started = time.monotonic()
    thread = threading.Thread(target=run, daemon=True, name="deadline-test-call")
    thread.start()
    thread.join(GUARD)
    elapsed = time.monotonic() - started
    if thread.is_alive():
        pytest.fail(f"the request was still running after {GUARD:g} s: no total deadline")
    try:
        before_close()
    finally:
        client.close()
    return outcome[0], elapsed


def assert_timed_out(outcome: Any, elapsed: float, method: str, path: str) -> None:
    assert isinstance(outcome, WebUIHTTPError), outcome
    assert outcome.kind == TIMEOUT
    deadline = REQUEST_TIMEOUT + webui_http.deadline_grace(REQUEST_TIMEOUT)
    assert REQUEST_TIMEOUT <= elapsed < deadline + 4.0  # at the deadline (slack for a busy machine; GUARD is 8 s)
    assert outcome.message in (
        f"no complete answer to {method} {path} within {REQUEST_TIMEOUT:g} s",
        f"no answer to {method} {path} within {REQUEST_TIMEOUT:g} s",
    )
    assert_no_leak(outcome.message)


# -- the attacks ----------------------------------------------------------------------------------
def test_a_dripping_body_is_cut_off_at_the_deadline(hostile_servers: Any) -> None:
    client_left = threading.Event()
    server = hostile_servers({"/sdapi/v1/sd-models": body_drip(client_left=client_left)})
    left_in_time: list[bool] = []
    outcome, elapsed = guarded(
        lambda client: client.get_json("/sdapi/v1/sd-models"),
        server.url,
        AUTH,
        before_close=lambda: left_in_time.append(client_left.wait(2)),  # hung up by itself, not by close()
    )
    assert_timed_out(outcome, elapsed, "GET", "/sdapi/v1/sd-models")
    assert outcome.message.startswith("no complete answer")  # the body had begun
    assert left_in_time == [True], "the connection was kept open after the deadline"


def test_a_dripping_img2img_answer_is_cut_off_at_the_deadline(hostile_servers: Any) -> None:
    server = hostile_servers({"/sdapi/v1/img2img": body_drip()})
    body = {"init_images": ["x" * 100_000], "prompt": "1girl"}
    outcome, elapsed = guarded(lambda client: client.post_json("/sdapi/v1/img2img", body), server.url)
    assert_timed_out(outcome, elapsed, "POST", "/sdapi/v1/img2img")


def test_a_dripping_error_answer_is_cut_off_too(hostile_servers: Any) -> None:
    server = hostile_servers({"/sdapi/v1/samplers": body_drip(status=500)})
    outcome, elapsed = guarded(lambda client: client.get_json("/sdapi/v1/samplers"), server.url)
    assert_timed_out(outcome, elapsed, "GET", "/sdapi/v1/samplers")


def test_the_body_deadline_holds_without_the_socket_wrapper(
    hostile_servers: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Should a future httpx hide its network backend, the per-chunk check in the body read
    # still ends the request: at most one read timeout past the deadline.
    monkeypatch.setattr(webui_http, "_install_deadline_backend", lambda client: None)
    server = hostile_servers({"/sdapi/v1/sd-models": body_drip()})
    outcome, elapsed = guarded(lambda client: client.get_json("/sdapi/v1/sd-models"), server.url)
    assert isinstance(outcome, WebUIHTTPError) and outcome.kind == TIMEOUT, outcome
    assert outcome.message == f"no complete answer to GET /sdapi/v1/sd-models within {REQUEST_TIMEOUT:g} s"
    deadline = REQUEST_TIMEOUT + webui_http.deadline_grace(REQUEST_TIMEOUT)
    assert deadline <= elapsed < deadline + DRIP_SECONDS + 1.0


def test_dripping_headers_are_cut_off_at_the_deadline(slow_servers: Any) -> None:
    server = slow_servers(drip_headers)
    outcome, elapsed = guarded(lambda client: client.get_json("/sdapi/v1/options"), server.url)
    assert_timed_out(outcome, elapsed, "GET", "/sdapi/v1/options")
    assert server.requests == 1


def test_a_server_that_never_answers_times_out_at_the_read_timeout(slow_servers: Any) -> None:
    server = slow_servers(silent)
    outcome, elapsed = guarded(lambda client: client.get_json("/sdapi/v1/options"), server.url)
    assert_timed_out(outcome, elapsed, "GET", "/sdapi/v1/options")
    assert elapsed < REQUEST_TIMEOUT + 1.0


# -- normal answers are untouched -----------------------------------------------------------------
def test_a_slow_answer_that_ends_in_time_is_read(slow_servers: Any) -> None:
    server = slow_servers(slow_but_complete)
    outcome, _ = guarded(lambda client: client.get_json("/sdapi/v1/options"), server.url)
    assert outcome == {"ok": True}


def test_the_deadline_is_per_request_on_a_reused_connection(slow_servers: Any) -> None:
    # Three slow answers in a row on one kept-alive connection take longer than one deadline
    # together; each request gets its own.
    server = slow_servers(slow_but_complete)

    def thrice(client: WebUIClient) -> list[Any]:
        return [client.get_json(path) for path in ("/a", "/b", "/c")]

    outcome, elapsed = guarded(thrice, server.url)
    assert outcome == [{"ok": True}] * 3, outcome
    assert elapsed > REQUEST_TIMEOUT + webui_http.deadline_grace(REQUEST_TIMEOUT)
    assert (server.requests, server.connections) == (3, 1)


def test_the_grace_is_small_next_to_the_timeout() -> None:
    assert 0 < webui_http.deadline_grace(1.0) <= 1.0
    assert webui_http.deadline_grace(600.0) <= 60.0
