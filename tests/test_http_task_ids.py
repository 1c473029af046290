"""Cancel stops only our requests on a WebUI others use too (issue 18 follow-up).

The WebUI's /sdapi/v1/interrupt stops whatever job runs. Each of our img2img requests
carries its own `force_task_id`, and a cancel interrupts a server only while
/internal/progress says one of OUR tasks is the active one: another client's job, running
ahead of ours or queued behind them, renders in full. A WebUI without /internal/progress
(started with --nowebui) cannot tell jobs apart; there cancel interrupts whatever runs, as
before, and says so once. The WebUI double keeps the task bookkeeping of modules/progress.py.
"""

from __future__ import annotations

import threading
import time
from typing import Any

import httpx
import pytest
from PIL import Image

from vidstyle.backends.base import Img2ImgResult
from vidstyle.errors import Cancelled
from vidstyle.job import create_job
from vidstyle.render import CancelToken, RenderEvent, run_job

try:
    from tests.doubles.webui_double import DoubleServer, encode_png
    from tests.test_http_pipelining import SIZE, WAIT, call_in_thread, job_spec, request_for, wait_until
except ImportError:  # pytest run with tests/ (not the repo root) on sys.path
    from doubles.webui_double import DoubleServer, encode_png
    from test_http_pipelining import SIZE, WAIT, call_in_thread, job_spec, request_for, wait_until

WEBUI_MODELS = ("anything-v5.safetensors",)  # what webui_servers doubles offer here
FOREIGN_SEED = 424242
PROGRESS_FIELDS = {"active", "queued", "completed", "progress", "eta", "live_preview", "id_live_preview", "textinfo"}


class ForeignClient:
    """Another user's program posting one plain img2img to the same WebUI (no task id of ours)."""

    def __init__(self, server: DoubleServer, steps: int = 10, task_id: str | None = None) -> None:
        self.body: dict[str, Any] = {
            "init_images": [encode_png(Image.new("RGB", (SIZE, SIZE), (200, 40, 90)))],
            "width": SIZE,
            "height": SIZE,
            "steps": steps,
            "seed": FOREIGN_SEED,
            "sampler_name": "Euler a",
        }
        if task_id is not None:
            self.body["force_task_id"] = task_id
        self.url = server.url
        self.answer: httpx.Response | None = None
        self._thread = threading.Thread(target=self._post)
        self._thread.start()

    def _post(self) -> None:
        self.answer = httpx.post(f"{self.url}/sdapi/v1/img2img", json=self.body, timeout=WAIT)

    def join(self) -> httpx.Response:
        self._thread.join(WAIT)
        assert self.answer is not None, "the foreign request did not come back"
        return self.answer


def our_tasks(server: DoubleServer) -> list[str]:
    with server.state.lock:
        return [task for task in server.state.pending_tasks if task.startswith("vidstyle-")]


def ours_active(server: DoubleServer) -> bool:
    with server.state.lock:
        return (server.state.current_task or "").startswith("vidstyle-")


def foreign_fraction(server: DoubleServer) -> float:
    return dict(server.state.rendered)[FOREIGN_SEED]


def progress_of(server: DoubleServer, task: str) -> dict[str, Any]:
    answer = httpx.post(f"{server.url}/internal/progress", json={"id_task": task, "id_live_preview": -1}, timeout=WAIT)
    answer.raise_for_status()
    return answer.json()


# --- the double keeps tasks like modules/progress.py -------------------------------------------


def test_double_reports_queued_active_and_completed_tasks(webui_servers):
    server = webui_servers(delay=0.6)
    first = ForeignClient(server, task_id="first")
    wait_until(lambda: server.state.current_task == "first", "the first task runs")
    second = ForeignClient(server, task_id="second")
    wait_until(lambda: "second" in server.state.pending_tasks, "the second task is queued")

    running, waiting, unknown = (progress_of(server, task) for task in ("first", "second", "nobody"))
    assert set(running) == set(waiting) == set(unknown) == PROGRESS_FIELDS
    assert running["active"] and not running["queued"] and not running["completed"]
    assert 0.0 <= running["progress"] < 1.0 and running["live_preview"] is None
    assert waiting == {**waiting, "active": False, "queued": True, "completed": False, "textinfo": "In queue: 1/1"}
    assert waiting["progress"] is None and waiting["eta"] is None and waiting["id_live_preview"] == -1
    assert unknown == {**unknown, "active": False, "queued": False, "completed": False, "textinfo": "Waiting..."}
    assert httpx.get(f"{server.url}/internal/pending-tasks", timeout=WAIT).json() == {"size": 1, "tasks": ["second"]}

    first.join(), second.join()
    done = progress_of(server, "first")
    assert done["completed"] and not done["active"] and not done["queued"]
    # A request without force_task_id gets the WebUI's own id: task(img2img-XXXXXXX).
    ForeignClient(server, steps=1).join()
    assert server.state.finished_tasks[-1].startswith("task(img2img-")
    # Unknown fields are refused (upstream drops them); a WebUI with --nowebui has no such route.
    assert httpx.post(f"{server.url}/internal/progress", json={"id_task": "x", "bogus": 1}).status_code == 422
    nowebui = webui_servers(internal_progress=False)
    assert httpx.post(f"{nowebui.url}/internal/progress", json={"id_task": "x"}).status_code == 404


# --- every request carries its own task id --------------------------------------------------------


def test_every_request_carries_its_own_task_id(demo_clip, webui_servers, http_backends):
    server = webui_servers()
    spec = job_spec(demo_clip, [server.url])
    backend = http_backends(spec)
    for index in (0, 1, 1):
        assert isinstance(backend.img2img(request_for(spec, index)), Img2ImgResult)
    ids = [request["force_task_id"] for request in server.state.img2img_requests]
    assert len(set(ids)) == 3  # unique, even for the same frame sent twice
    assert [task.split("-")[2] for task in ids] == ["0", "1", "1"]  # vidstyle-<run>-<frame>-<try>-<random>
    assert all(task.startswith("vidstyle-") for task in ids)
    assert len({task.split("-")[1] for task in ids}) == 1  # one run token for the backend
    assert all(progress_of(server, task)["completed"] for task in ids)  # the WebUI ran them under these ids


# --- cancel beside another client's job -------------------------------------------------------------


def test_cancel_leaves_a_foreign_job_running_ahead_of_ours_alone(demo_clip, webui_servers, http_backends):
    server = webui_servers(delay=1.5)
    spec = job_spec(demo_clip, [server.url], **{"backend.requests_per_server": 2})
    backend = http_backends(spec)
    backend.preflight()
    foreign = ForeignClient(server)
    wait_until(lambda: (server.state.current_task or "").startswith("task(img2img-"), "the foreign job runs")
    outcome: dict[int, Any] = {}
    threads = [call_in_thread(backend, request_for(spec, index), outcome) for index in range(2)]
    wait_until(lambda: len(our_tasks(server)) == 2, "both our frames wait behind the foreign job")

    backend.interrupt()  # returns once no request of ours renders or waits at the server

    assert not our_tasks(server) and not ours_active(server) and server.state.queue_lock.waiting() == 0
    assert foreign.join().status_code == 200
    assert foreign_fraction(server) == 1.0  # the other user's job rendered in full
    for thread in threads:
        thread.join(WAIT)
    assert all(isinstance(outcome[index], Cancelled) for index in (0, 1))
    # Ours became active after it and were stopped as soon as they did.
    ours = [fraction for seed, fraction in server.state.rendered if seed != FOREIGN_SEED]
    assert len(ours) == 2 and all(fraction < 1.0 for fraction in ours)
    rendered = server.state.renders_completed
    time.sleep(0.3)
    assert server.state.renders_completed == rendered


def test_cancelled_job_with_a_foreign_job_queued_behind_it_keeps_each_frame_once(
    tmp_path, demo_clip, webui_servers, http_backends
):
    server = webui_servers(delay=0.6)
    spec = job_spec(demo_clip, [server.url], **{"backend.requests_per_server": 2})
    backend = http_backends(spec)
    cancel = CancelToken()
    foreign: list[ForeignClient] = []

    def on_event(event: RenderEvent) -> None:
        if event.kind == "frame" and event.done >= 2 and not foreign:
            # Another user submits while our frames run and wait; then our user cancels.
            foreign.append(ForeignClient(server, task_id="another-user"))
            wait_until(
                lambda: "another-user" in server.state.pending_tasks or server.state.current_task == "another-user",
                "the foreign job reached the WebUI",
            )
            cancel.cancel()

    with create_job(spec, tmp_path / "job") as job:
        with pytest.raises(Cancelled):
            run_job(job, backend=backend, on_event=on_event, cancel=cancel, finish=False)
        assert not our_tasks(server) and not ours_active(server)
        rows = job.ledger.frames()
        done = [row for row in rows if row.status == "done"]
        assert len(done) >= 2 and len(done) < len(rows)
        assert [row.idx for row in done] == list(range(len(done)))
        assert all(len(job.ledger.attempts(row.idx)) == 1 for row in done)  # each frame once
        full = {seed for seed, fraction in server.state.rendered if fraction == 1.0}
        assert {row.seed for row in done} <= full
        assert not any(job.out_path(row.idx).exists() for row in rows if row.status != "done")
    assert foreign[0].join().status_code == 200
    assert foreign_fraction(server) == 1.0
    # Nothing of ours rendered in full after the cancel: the frames not kept were stopped.
    kept = {row.seed for row in done}
    assert all(fraction < 1.0 for seed, fraction in server.state.rendered if seed not in kept | {FOREIGN_SEED})


# --- a WebUI that cannot tell jobs apart -------------------------------------------------------------


def test_without_internal_progress_cancel_interrupts_whatever_runs_and_says_so(demo_clip, webui_servers, http_backends):
    server = webui_servers(delay=2.0, internal_progress=False)  # e.g. started with --nowebui
    spec = job_spec(demo_clip, [server.url], **{"backend.requests_per_server": 2, "sampling.steps": 20})
    messages: list[str] = []
    backend = http_backends(spec, on_status=messages.append)
    backend.preflight()
    outcome: dict[int, Any] = {}
    threads = [call_in_thread(backend, request_for(spec, index), outcome) for index in range(2)]
    wait_until(lambda: server.state.queue_lock.waiting() == 2 and server.state.progress.job != "", "ours run and wait")

    backend.interrupt()

    assert server.state.queue_lock.waiting() == 0 and server.state.progress.job == ""
    for thread in threads:
        thread.join(WAIT)
    assert all(isinstance(outcome[index], Cancelled) for index in (0, 1))
    assert len(server.state.rendered) == 2 and all(fraction <= 0.25 for _, fraction in server.state.rendered)
    about = [message for message in messages if server.url in message and "/internal/progress" in message]
    assert len(about) == 1, messages
    assert "another" in about[0]  # the user learns a foreign job there may have been stopped too


def test_a_webui_that_drops_force_task_id_gets_the_same_fallback(demo_clip, webui_servers, http_backends):
    server = webui_servers(delay=1.0, task_ids=False)  # a WebUI from before force_task_id
    spec = job_spec(demo_clip, [server.url], **{"backend.requests_per_server": 2})
    messages: list[str] = []
    backend = http_backends(spec, on_status=messages.append)
    server.state.delay = 0.0
    backend.img2img(request_for(spec, 0))  # its answer's `parameters` show the id was dropped
    server.state.delay = 1.0
    outcome: dict[int, Any] = {}
    threads = [call_in_thread(backend, request_for(spec, index), outcome) for index in (1, 2)]
    wait_until(lambda: server.state.queue_lock.waiting() == 2 and server.state.progress.job != "", "ours run and wait")
    assert server.state.current_task.startswith("task(img2img-")  # the WebUI's own id, not ours

    backend.interrupt()

    assert server.state.queue_lock.waiting() == 0 and server.state.progress.job == ""
    for thread in threads:
        thread.join(WAIT)
    assert all(isinstance(outcome[index], Cancelled) for index in (1, 2))
    assert all(fraction < 1.0 for _, fraction in server.state.rendered[1:])
    assert len([message for message in messages if "force_task_id" in message]) == 1, messages
