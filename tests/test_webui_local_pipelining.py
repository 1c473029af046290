"""The in-process backend builds the next frame's inputs while a frame renders (issue 18).

Runs against the WebUI `modules` test doubles (tests/doubles/webui_modules), through the
fixtures of tests/test_webui_glue.py.
"""

from __future__ import annotations

import threading
import time
from typing import Any

import pytest

from vidstyle.errors import Cancelled

try:
    from tests.test_webui_glue import backend_for, doubles, job_spec, request_for, webui  # noqa: F401  (fixtures)
except ImportError:  # pytest run with tests/ (not the repo root) on sys.path
    from test_webui_glue import backend_for, doubles, job_spec, request_for, webui  # type: ignore  # noqa: F401

WAIT = 20.0


def run_in_threads(backend: Any, spec: Any, frames: list[int], outcome: dict[int, Any]) -> list[threading.Thread]:
    def one(frame: int) -> None:
        try:
            outcome[frame] = backend.img2img(request_for(spec, frame=frame))
        except BaseException as exc:  # handed to the test
            outcome[frame] = exc

    threads = []
    tickets = backend._turns._next_ticket
    for started, frame in enumerate(frames, start=tickets + 1):
        threads.append(threading.Thread(target=one, args=(frame,)))
        threads[-1].start()
        # The render loop starts frames in order: the next one only once this one has its place in line.
        deadline = time.monotonic() + WAIT
        while backend._turns._next_ticket < started and threads[-1].is_alive() and time.monotonic() < deadline:
            time.sleep(0.002)
    return threads


def test_next_frame_inputs_are_ready_while_a_frame_renders(webui, monkeypatch: pytest.MonkeyPatch) -> None:
    from modules import processing

    from vidstyle.backends import webui_local

    spec = job_spec()
    backend = backend_for(spec)
    assert backend.concurrency == 2 and backend.renders_at_once == 1
    prepared: list[int] = []
    original = webui_local.build_unit
    monkeypatch.setattr(
        webui_local, "build_unit", lambda *args: (prepared.append(args[3].frame_index), original(*args))[1]
    )
    seen_while_first_renders: list[list[int]] = []

    def on_step(p: Any, step: int) -> None:
        if len(processing._runs) == 1 and step == 1:  # the first frame is sampling
            deadline = time.monotonic() + WAIT
            while 1 not in prepared and time.monotonic() < deadline:
                time.sleep(0.005)
            seen_while_first_renders.append(list(prepared))

    processing._step_hooks.append(on_step)
    outcome: dict[int, Any] = {}
    for thread in run_in_threads(backend, spec, [0, 1], outcome):
        thread.join(WAIT)
    assert seen_while_first_renders == [[0, 1]]  # frame 1's unit was built during frame 0's sampling
    assert len(processing._runs) == 2
    assert [type(outcome[f]).__name__ for f in (0, 1)] == ["Img2ImgResult"] * 2


def test_cancel_leaves_the_waiting_frame_unrendered(webui) -> None:
    from modules import processing

    spec = job_spec()
    backend = backend_for(spec)
    started = threading.Event()
    release = threading.Event()

    def on_step(p: Any, step: int) -> None:
        if step == 1 and len(processing._runs) == 1:
            started.set()
            release.wait(WAIT)

    processing._step_hooks.append(on_step)
    outcome: dict[int, Any] = {}
    threads = run_in_threads(backend, spec, [0, 1], outcome)
    assert started.wait(WAIT)
    backend.interrupt()
    release.set()
    for thread in threads:
        thread.join(WAIT)
    assert isinstance(outcome[0], Cancelled) and isinstance(outcome[1], Cancelled)
    assert len(processing._runs) == 1  # the frame waiting for the queue lock never sampled


def test_the_webui_interrupt_button_also_stops_the_frame_waiting_behind(webui) -> None:
    from modules import processing, shared

    spec = job_spec()
    backend = backend_for(spec)
    queued = threading.Event()

    def on_step(p: Any, step: int) -> None:
        if step == 1 and len(processing._runs) == 1:
            queued.wait(WAIT)  # frame 1 is ready and waits for the queue lock
            time.sleep(0.05)
            shared.state.interrupt()  # the user presses Interrupt in the WebUI

    processing._step_hooks.append(on_step)
    outcome: dict[int, Any] = {}
    first = run_in_threads(backend, spec, [0], outcome)[0]
    deadline = time.monotonic() + WAIT
    while not processing._runs and time.monotonic() < deadline:
        time.sleep(0.005)
    second = run_in_threads(backend, spec, [1], outcome)[0]
    queued.set()
    first.join(WAIT)
    second.join(WAIT)
    assert isinstance(outcome[0], Cancelled) and "Interrupt button" in str(outcome[0])
    assert isinstance(outcome[1], Cancelled)
    assert len(processing._runs) == 1  # frame 1 never started sampling
