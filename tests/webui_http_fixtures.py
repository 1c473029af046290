"""Fixtures shared by the HTTP backend tests: WebUI doubles on loopback ports and backends with short timings.

Registered in tests/conftest.py as `webui_servers` and `http_backends` (named apart from
tests/test_webui_glue.py's own `webui` fixture). A test module may set `WEBUI_MODELS` to the
checkpoint list its doubles offer unless a test passes `models=` itself. A module serving
another double (an ASGI app) builds its own fixture on `serve_doubles`.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pytest

from vidstyle.backends.webui_api import RetryPolicy, WebUIApiBackend
from vidstyle.spec import JobSpec

try:
    from tests.doubles.webui_double import DoubleServer, make_webui_double
except ImportError:  # pytest run with tests/ (not the repo root) on sys.path
    from doubles.webui_double import DoubleServer, make_webui_double

# Short timings so retries, set-asides, probes and cancels happen within a fraction of a second.
FAST = RetryPolicy(
    failures_before_set_aside=2,
    backoff_seconds=0.02,
    backoff_max_seconds=0.1,
    probe_seconds=0.05,
    probe_max_seconds=0.2,
    check_timeout=5.0,
    interrupt_timeout=5.0,
    progress_seconds=0.02,
    poll_seconds=0.01,
    cancel_poll_seconds=0.02,
)


def serve_doubles(make_app: Callable[..., Any]) -> Iterator[Callable[..., DoubleServer]]:
    """A fixture's body: yields `start(*args, **options)`, which serves `make_app(*args, **options)`
    on a free loopback port; every server started is stopped when the fixture ends."""
    servers: list[DoubleServer] = []

    def start(*args: Any, **options: Any) -> DoubleServer:
        server = DoubleServer(make_app(*args, **options)).start()
        servers.append(server)
        return server

    yield start
    for server in servers:
        server.stop()


@pytest.fixture
def webui_servers(request: pytest.FixtureRequest) -> Iterator[Callable[..., DoubleServer]]:
    """Start WebUI doubles on free loopback ports; all are stopped at the end."""
    models = getattr(request.module, "WEBUI_MODELS", None)

    def make_double(**options: Any) -> Any:
        if models is not None:
            options.setdefault("models", models)
        return make_webui_double(**options)

    yield from serve_doubles(make_double)


@pytest.fixture
def http_backends() -> Iterator[Callable[..., WebUIApiBackend]]:
    """Make WebUIApiBackend instances (FAST policy unless given); all are closed at the end."""
    made: list[WebUIApiBackend] = []

    def make(spec: JobSpec, **options: Any) -> WebUIApiBackend:
        options.setdefault("policy", FAST)
        backend = WebUIApiBackend(spec, **options)
        made.append(backend)
        return backend

    yield make
    for backend in made:
        backend.close()
