"""Requests queued at the WebUI (issue 18): the next frame waits at the server while one renders.

The WebUI API double serializes renders like the WebUI's queue_lock (first come first
served), decodes a request's images only once it holds the lock, and clears an interrupt
when the next job begins, as shared.state.begin() does. These tests check that with a
request queued behind the running one, frames still come out once each and in order, that
a server dying drops both to other servers, and that a cancel leaves nothing rendering.
"""

from __future__ import annotations

import base64
import dataclasses
import io
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
from PIL import Image

from vidstyle.backends.base import Img2ImgRequest, Img2ImgResult
from vidstyle.backends.webui_api import WebUIApiBackend
from vidstyle.errors import Cancelled
from vidstyle.job import create_job
from vidstyle.render import CancelToken, RenderEvent, run_job
from vidstyle.spec import JobSpec, frame_seed, load_spec

try:
    from tests.doubles.webui_double import DoubleServer, encode_png
except ImportError:  # pytest run with tests/ (not the repo root) on sys.path
    from doubles.webui_double import DoubleServer, encode_png

SIZE = 64
WEBUI_MODELS = ("anything-v5.safetensors",)  # what webui_servers doubles offer here
WAIT = 20.0  # upper bound for any wait; tests finish far sooner


def wait_until(condition: Callable[[], bool], what: str) -> None:
    deadline = time.monotonic() + WAIT
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting until {what}")
        time.sleep(0.005)


def job_spec(clip: Path, urls: list[str], **extra: Any) -> JobSpec:
    overrides: dict[str, Any] = {
        "source.path": str(clip),
        "source.end_frame": 8,
        "size.width": SIZE,
        "size.height": SIZE,
        "sampling.seed": 5,
        "sampling.seed_policy": "per_frame",  # so the double's records tell frames apart by seed
        "sampling.steps": 10,
        "backend.kind": "webui_api",
        "backend.webui_urls": urls,
        # Independent frames: a flow chain (the preset's mode) renders one frame at a time.
        "coherence.mode": "independent",
    }
    overrides.update(extra)
    return load_spec("anime-canny-sd15", overrides)


def request_for(spec: JobSpec, index: int) -> Img2ImgRequest:
    shade = (index * 37) % 256
    return Img2ImgRequest.for_spec(
        spec,
        index,
        Image.new("RGB", (SIZE, SIZE), (shade, 255 - shade, (index * 11) % 256)),
        Image.new("RGB", (SIZE, SIZE)),
        frame_seed(spec, index, 0),
    )


def call_in_thread(backend: WebUIApiBackend, request: Img2ImgRequest, outcome: dict[int, Any]) -> threading.Thread:
    def run() -> None:
        try:
            outcome[request.frame_index] = backend.img2img(request)
        except BaseException as exc:  # handed to the test
            outcome[request.frame_index] = exc

    thread = threading.Thread(target=run)
    thread.start()
    return thread


@contextmanager
def watch(condition: Callable[[], bool]) -> Iterator[threading.Event]:
    """An event set if `condition` holds at any moment while the block runs."""
    seen, stop = threading.Event(), threading.Event()

    def poll() -> None:
        while not stop.is_set() and not seen.is_set():
            if condition():
                seen.set()
            time.sleep(0.002)

    thread = threading.Thread(target=poll, daemon=True)
    thread.start()
    try:
        yield seen
    finally:
        stop.set()
        thread.join(WAIT)


def holds_running_and_queued(server: DoubleServer) -> bool:
    """One request renders (it began its job) and one more waits for the queue lock."""
    return server.state.queue_lock.waiting() == 2 and server.state.progress.job != ""


# --- the double queues like the WebUI ---------------------------------------------------


def test_double_renders_one_request_at_a_time_and_a_queued_one_survives_an_interrupt(webui_servers):
    # Long enough that the second request and the interrupt land while the first renders, on a busy machine.
    server = webui_servers(delay=2.0)
    body = {
        "init_images": [encode_png(Image.new("RGB", (SIZE, SIZE), (90, 120, 150)))],
        "width": SIZE,
        "height": SIZE,
        "steps": 8,
        "sampler_name": "Euler a",
    }
    answers: dict[int, Any] = {}

    def post(seed: int) -> None:
        answers[seed] = httpx.post(f"{server.url}/sdapi/v1/img2img", json={**body, "seed": seed}, timeout=WAIT)

    first = threading.Thread(target=post, args=(1,))
    first.start()
    wait_until(lambda: server.state.progress.job != "", "the first request renders")
    second = threading.Thread(target=post, args=(2,))
    second.start()
    wait_until(lambda: server.state.queue_lock.waiting() == 2, "the second request waits in the queue")
    assert server.state.progress.sampling_step < 8  # the first is still rendering: the second really waits
    httpx.post(f"{server.url}/sdapi/v1/interrupt", timeout=WAIT)
    first.join(WAIT)
    second.join(WAIT)
    assert [answers[1].status_code, answers[2].status_code] == [200, 200]
    fractions = dict(server.state.rendered)
    assert fractions[1] < 1.0  # the running job stopped early
    assert fractions[2] == 1.0  # begin() cleared the interrupt: the queued one rendered in full
    assert [seed for seed, _ in server.state.rendered] == [1, 2]


# --- pipelining -----------------------------------------------------------------------------


def test_by_default_the_next_frame_already_waits_at_the_server(demo_clip, webui_servers, http_backends):
    server = webui_servers(delay=1.5)  # frame 1 must reach the server while frame 0 renders
    spec = job_spec(demo_clip, [server.url])
    backend = http_backends(spec)
    # One frame renders, one waits at the server behind it, one waits here with its body ready.
    assert backend.concurrency == 3 and backend.renders_at_once == 1
    outcome: dict[int, Any] = {}
    threads = [call_in_thread(backend, request_for(spec, index), outcome) for index in range(2)]
    wait_until(lambda: holds_running_and_queued(server), "one frame renders and the next waits at the server")
    for thread in threads:
        thread.join(WAIT)
    assert sorted(outcome) == [0, 1] and all(isinstance(r, Img2ImgResult) for r in outcome.values())


def test_frames_render_once_each_and_in_order_with_a_request_queued(tmp_path, demo_clip, webui_servers, http_backends):
    server = webui_servers(delay=0.15)
    spec = job_spec(demo_clip, [server.url], **{"backend.requests_per_server": 2})
    backend = http_backends(spec)
    with create_job(spec, tmp_path / "job") as job, watch(lambda: holds_running_and_queued(server)) as queued_seen:
        run_job(job, backend=backend, finish=False)
        rows = job.ledger.frames()
        assert [row.status for row in rows] == ["done"] * 8
        assert all(len(job.ledger.attempts(row.idx)) == 1 for row in rows)
        finished_at = [
            job.ledger.db.execute("SELECT finished_at FROM frames WHERE idx=?", (i,)).fetchone()[0] for i in range(8)
        ]
        assert finished_at == sorted(finished_at)  # the ledger filled in frame order
        seeds = [row.seed for row in rows]
    assert queued_seen.is_set()
    # The server rendered each frame once, in frame order, each in full.
    assert server.state.rendered == [(seed, 1.0) for seed in seeds]


def test_a_server_dying_with_a_request_queued_hands_both_to_the_other(webui_servers, http_backends):
    dying = webui_servers(delay=0.3)
    steady = webui_servers(delay=0.3)
    spec = job_spec(Path("unused.mp4"), [dying.url, steady.url], **{"backend.requests_per_server": 2})
    backend = http_backends(spec)
    backend.preflight()
    outcome: dict[int, Any] = {}
    frames = 10
    lock = threading.Lock()
    next_frame = [0]

    def worker() -> None:
        # What the render loop does: `concurrency` workers taking frames in order.
        while True:
            with lock:
                index = next_frame[0]
                next_frame[0] += 1
            if index >= frames:
                return
            result = backend.img2img(request_for(spec, index))
            with lock:
                assert index not in outcome, f"frame {index} came back twice"
                outcome[index] = result

    workers = [threading.Thread(target=worker) for _ in range(backend.concurrency)]
    for thread in workers:
        thread.start()
    wait_until(
        lambda: holds_running_and_queued(dying) and dying.state.progress.sampling_step <= 5,
        "the dying server holds a frame early in its render and a queued one",
    )
    lost = [request["seed"] for request in dying.state.img2img_requests[-2:]]
    dying.stop(abort_in_flight=True)
    time.sleep(0.3)
    dying.start()
    for thread in workers:
        thread.join(WAIT * 2)
    assert sorted(outcome) == list(range(frames))
    for index, result in outcome.items():
        assert result.info["seed"] == frame_seed(spec, index, 0)
    assert len({np.asarray(result.image).tobytes() for result in outcome.values()}) == frames
    # The two requests the crash took never finished there; the frames came from elsewhere.
    finished_on_dying = {seed for seed, _ in dying.state.rendered}
    assert not finished_on_dying & set(lost)
    assert {outcome[i].info["server"] for i in outcome if outcome[i].info["seed"] in lost} <= {steady.url, dying.url}
    assert all(fraction == 1.0 for _, fraction in steady.state.rendered)


# --- cancel -----------------------------------------------------------------------------------


def test_cancel_with_a_request_queued_leaves_nothing_rendering(demo_clip, webui_servers, http_backends):
    # The interrupt comes within a quarter of the render (asserted below), even on a busy machine.
    server = webui_servers(delay=8.0)
    spec = job_spec(demo_clip, [server.url], **{"backend.requests_per_server": 2, "sampling.steps": 20})
    backend = http_backends(spec)
    backend.preflight()
    outcome: dict[int, Any] = {}
    threads = [call_in_thread(backend, request_for(spec, index), outcome) for index in range(2)]
    wait_until(lambda: holds_running_and_queued(server), "one frame renders and the next waits at the server")
    backend.interrupt()
    # Nothing of ours renders or waits at the server once interrupt() has returned.
    assert server.state.queue_lock.waiting() == 0
    assert server.state.progress.job == ""
    for thread in threads:
        thread.join(WAIT)
    assert all(isinstance(outcome[index], Cancelled) for index in (0, 1))
    # The queued frame did start (the WebUI cannot drop it) but was stopped within a step or two.
    assert len(server.state.rendered) == 2
    assert all(fraction <= 0.25 for _, fraction in server.state.rendered)
    rendered = server.state.renders_completed
    time.sleep(0.3)
    assert server.state.renders_completed == rendered  # and nothing starts later


def test_cancelled_job_keeps_only_frames_the_server_finished(tmp_path, demo_clip, webui_servers, http_backends):
    server = webui_servers(delay=0.6)
    spec = job_spec(demo_clip, [server.url], **{"backend.requests_per_server": 2})
    backend = http_backends(spec)
    cancel = CancelToken()

    def on_event(event: RenderEvent) -> None:
        if event.kind == "frame" and event.done >= 2:
            cancel.cancel()

    with create_job(spec, tmp_path / "job") as job:
        with pytest.raises(Cancelled):
            run_job(job, backend=backend, on_event=on_event, cancel=cancel, finish=False)
        assert server.state.queue_lock.waiting() == 0 and server.state.progress.job == ""
        done = [row for row in job.ledger.frames() if row.status == "done"]
        pending = [row for row in job.ledger.frames() if row.status == "pending"]
        assert len(done) >= 2 and pending
        assert [row.idx for row in done] == list(range(len(done)))  # a prefix: in order
        full = {seed for seed, fraction in server.state.rendered if fraction == 1.0}
        assert {row.seed for row in done} <= full  # no half-rendered frame kept
        assert all(job.out_path(row.idx).is_file() for row in done)
        assert not any(job.out_path(row.idx).exists() for row in pending)
    rendered = server.state.renders_completed
    time.sleep(0.3)
    assert server.state.renders_completed == rendered


def test_a_request_body_is_the_json_the_server_reads(demo_clip, webui_servers, http_backends):
    """Images are spliced into the JSON as bytes; the server must see the same fields as json.dumps gives."""
    server = webui_servers()
    spec = job_spec(demo_clip, [server.url], prompt='quote " backslash \\ and <lora:x:1> \u00e9')
    backend = http_backends(spec)
    request = dataclasses.replace(request_for(spec, 3), init_png=None, control_png=None)
    backend.img2img(request)
    sent = server.state.img2img_requests[-1]
    assert sent["prompt"] == spec.prompt
    init = Image.open(io.BytesIO(base64.b64decode(sent["init_images"][0])))
    assert np.array_equal(np.asarray(init.convert("RGB")), np.asarray(request.init_image))


def test_one_server_with_a_frame_queued_still_reports_progress_inside_a_frame(
    tmp_path, demo_clip, webui_servers, http_backends
):
    server = webui_servers(delay=0.5)
    spec = job_spec(demo_clip, [server.url], **{"source.end_frame": 3, "sampling.steps": 12})
    backend = http_backends(spec)
    assert backend.concurrency > 1 and backend.renders_at_once == 1
    events: list[RenderEvent] = []
    with create_job(spec, tmp_path / "job") as job:
        run_job(job, backend=backend, on_event=events.append, finish=False)
    fractions = [event.frame_fraction for event in events if event.kind == "progress"]
    assert any(fraction is not None and 0.0 < fraction < 1.0 for fraction in fractions)
