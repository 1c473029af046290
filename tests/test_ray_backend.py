"""The ray backend on a real two-node Ray cluster on this machine (loopback), with the tiny model.

Each node has one CPU, so the two workers land one per node; the second node sees another
HOME, as a second machine would, which lets a model path exist on one node and not the other.
"""

from __future__ import annotations

import os
import shutil
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

# Ray refuses loopback unless told this; set before Ray is imported (here, in its nodes and workers).
os.environ["RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"] = "0"
ray = pytest.importorskip("ray", reason="the ray backend needs the vidstyle[ray] extra")
pytest.importorskip("diffusers", reason="the ray backend runs the diffusers backend")

from vidstyle.backends.diffusers import DiffusersBackend  # noqa: E402
from vidstyle.backends.ray import RayBackend  # noqa: E402
from vidstyle.errors import ModelNotFoundError  # noqa: E402
from vidstyle.imageio import read_png  # noqa: E402
from vidstyle.render import RenderEvent, run_job, start_job  # noqa: E402
from vidstyle.spec import JobSpec, load_spec  # noqa: E402
from vidstyle.tiny_models import cache_root, tiny_pipeline_dir  # noqa: E402

FRAMES = 10
SETTINGS: dict[str, Any] = {
    "model.checkpoint": "tiny",
    "controlnet.model": "tiny",
    "source.end_frame": FRAMES,
    "size.width": 64,
    "size.height": 64,
    "sampling.steps": 4,
    "sampling.seed": 77,
    "sampling.seed_policy": "per_frame",
    "backend.device": "cpu",
}
CLI_ARGS = [
    "--model",
    "tiny",
    "--end-frame",
    str(FRAMES),
    "--width",
    "64",
    "--height",
    "64",
    "--steps",
    "4",
    "--seed",
    "77",
    "--seed-policy",
    "per_frame",
    "--device",
    "cpu",
    "-q",
]


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    from ray.cluster_utils import Cluster

    tiny_pipeline_dir()  # built once here, so both nodes read the same cached files
    homes = tmp_path_factory.mktemp("homes")
    home_a, home_b = homes / "a", homes / "b"
    (home_a / "models").mkdir(parents=True)
    home_b.mkdir()
    shutil.copytree(tiny_pipeline_dir(), home_a / "models" / "sd15")  # only on node A
    shared = {"VIDSTYLE_CACHE_DIR": str(cache_root()), "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
    head = Cluster(
        initialize_head=True,
        head_node_args={"num_cpus": 1, "include_dashboard": False, "env_vars": {**shared, "HOME": str(home_a)}},
    )
    node_b = head.add_node(num_cpus=1, env_vars={**shared, "HOME": str(home_b)})
    ray.init(address=head.address, log_to_driver=False)
    address = head.address
    try:
        yield {"address": address, "node_b": node_b.node_id, "head": head.head_node.node_id}
    finally:
        ray.shutdown()
        head.shutdown()
        _forget_cluster(address)


def _forget_cluster(address: str) -> None:
    """Cluster() records its address for `ray.init('auto')`; a dead one there would make others wait."""
    from ray._common.utils import reset_ray_address
    from ray._private.utils import read_ray_address

    if read_ray_address() == address:
        reset_ray_address()


def _spec(source: Path, **changes: Any) -> JobSpec:
    return load_spec("anime-canny-sd15", {**SETTINGS, "source.path": str(source), **changes})


def _render(spec: JobSpec, root: Path, backend: Any, on_event: Any = None) -> list[RenderEvent]:
    events: list[RenderEvent] = []

    def record(event: RenderEvent) -> None:
        events.append(event)
        if on_event is not None:
            on_event(event)

    try:
        job = start_job(spec, root, backend, on_event=record)
        with job:
            run_job(job, backend=backend, on_event=record, preflighted=True, finish=False)
    finally:
        backend.close()
    return events


@pytest.fixture(scope="module")
def reference(tmp_path_factory: pytest.TempPathFactory, demo_clip: Path) -> list[np.ndarray]:
    """The frames of the plain diffusers backend in this process, with one torch thread like each worker."""
    import torch

    root = tmp_path_factory.mktemp("reference") / "job"
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        _render(_spec(demo_clip), root, DiffusersBackend(_spec(demo_clip)))
    finally:
        torch.set_num_threads(threads)
    return [read_png(root / "out" / f"{idx:06d}.png") for idx in range(FRAMES)]


def _assert_same_pixels(root: Path, reference: list[np.ndarray]) -> None:
    for idx in range(FRAMES):
        assert np.array_equal(read_png(root / "out" / f"{idx:06d}.png"), reference[idx]), f"frame {idx} differs"


def _ledger(root: Path) -> list[tuple]:
    with sqlite3.connect(f"file:{root / 'ledger.sqlite'}?mode=ro", uri=True, timeout=1) as db:
        return db.execute("SELECT idx, status, attempt FROM frames ORDER BY idx").fetchall()


def test_two_workers_render_the_same_pixels_as_diffusers_alone(
    cluster: dict[str, Any], reference: list[np.ndarray], demo_clip: Path, tmp_path: Path
) -> None:
    spec = _spec(demo_clip, **{"backend.kind": "ray", "backend.ray_workers": 2})
    statuses: list[str] = []
    backend = RayBackend(spec, on_status=statuses.append)
    events = _render(spec, tmp_path / "job", backend)
    _assert_same_pixels(tmp_path / "job", reference)
    assert sorted(e.frame_index for e in events if e.kind == "frame") == list(range(FRAMES))
    progress = backend.worker_progress
    assert [p.worker for p in progress] == ["worker 0", "worker 1"]
    assert sum(p.frames for p in progress) == FRAMES
    assert all(p.frames > 0 for p in progress), "frames should spread over both workers"
    nodes = {p.node.split("node ")[1].rstrip(")") for p in progress}
    assert nodes == {cluster["head"][:8], cluster["node_b"][:8]}, "one worker per node"
    assert any(s.startswith("Ray workers:") and "frames/s" in s for s in statuses)


def test_killing_a_worker_mid_job_loses_and_doubles_nothing(
    cluster: dict[str, Any], reference: list[np.ndarray], demo_clip: Path, tmp_path: Path
) -> None:
    spec = _spec(demo_clip, **{"backend.kind": "ray", "backend.ray_workers": 2})
    statuses: list[str] = []
    backend = RayBackend(spec, on_status=statuses.append)
    killed: list[int] = []

    def kill_a_busy_worker(event: RenderEvent) -> None:
        if event.kind == "frame" and event.done == 2 and not killed:
            busy = [p for p in backend.worker_progress if p.state == "rendering"] or backend.worker_progress
            killed.append(busy[0].pid)
            os.kill(busy[0].pid, signal.SIGKILL)

    events = _render(spec, tmp_path / "job", backend, kill_a_busy_worker)
    assert killed
    frames = [e.frame_index for e in events if e.kind == "frame"]
    assert sorted(frames) == list(range(FRAMES)), "every frame recorded exactly once"
    assert _ledger(tmp_path / "job") == [(idx, "done", 0) for idx in range(FRAMES)]
    _assert_same_pixels(tmp_path / "job", reference)
    assert killed[0] not in {p.pid for p in backend.worker_progress}
    assert any("Ray restarted worker" in s and "rendered there again" in s for s in statuses), statuses


def test_cancel_stops_the_frames_in_flight_on_every_worker(
    cluster: dict[str, Any], reference: list[np.ndarray], demo_clip: Path, tmp_path: Path
) -> None:
    from vidstyle.errors import Cancelled
    from vidstyle.render import CancelToken

    spec = _spec(demo_clip, **{"backend.kind": "ray", "backend.ray_workers": 2, "sampling.steps": 24})
    backend = RayBackend(spec)
    cancel = CancelToken()
    reported: list[int] = []

    def cancel_after_first_frame(event: RenderEvent) -> None:
        if event.kind == "frame":
            reported.append(event.frame_index)
            cancel.cancel()

    try:
        job = start_job(spec, tmp_path / "job", backend)
        with job, pytest.raises(Cancelled):
            run_job(job, backend=backend, on_event=cancel_after_first_frame, cancel=cancel, preflighted=True)
    finally:
        backend.close()
    # Frames were in flight on both workers when the cancel came. Had they run to the end, the
    # render loop would have kept them (done, without a frame event); stopped, they stay pending.
    assert 0 < _done(tmp_path / "job") == len(reported) < FRAMES
    assert {row[1] for row in _ledger(tmp_path / "job")} == {"done", "pending"}, "the rest stays to resume"


def test_a_worker_lost_for_good_hands_its_frame_on_and_losing_all_stops_the_job(
    cluster: dict[str, Any], reference: list[np.ndarray], demo_clip: Path, tmp_path: Path
) -> None:
    from vidstyle.backends.ray import WorkersLostError

    spec = _spec(demo_clip, **{"backend.kind": "ray", "backend.ray_workers": 2})
    statuses: list[str] = []
    backend = RayBackend(spec, on_status=statuses.append)

    def lose_one_then_the_other(event: RenderEvent) -> None:
        # As if a node went away for good (Ray does not restart a worker killed this way).
        if event.kind == "frame" and event.done in (1, 6):
            ray.kill(backend._workers[0 if event.done == 1 else 1].actor, no_restart=True)

    with pytest.raises(WorkersLostError, match="All Ray workers were lost.*`vidstyle resume`"):
        _render(spec, tmp_path / "job", backend, lose_one_then_the_other)
    assert any("Ray gave up on worker 0" in s and "goes to another worker" in s for s in statuses), statuses
    rows = _ledger(tmp_path / "job")
    done = [idx for idx, status, _ in rows if status == "done"]
    assert 6 <= len(done) < FRAMES
    assert {status for _, status, _ in rows} == {"done", "pending"}, "nothing failed: the rest stays to resume"
    for idx in done:
        assert np.array_equal(read_png(tmp_path / "job" / "out" / f"{idx:06d}.png"), reference[idx])


def test_frames_of_a_chain_run_in_order_on_one_worker(cluster: dict[str, Any], demo_clip: Path, tmp_path: Path) -> None:
    import torch

    from vidstyle.job import create_job, prepare
    from vidstyle.render import build_request

    # The requests are built up front from the source frames, as independent frames are.
    spec = _spec(
        demo_clip, **{"backend.kind": "ray", "backend.ray_workers": 2, "coherence.mode": "independent"}
    ).resolved()
    job = create_job(spec, tmp_path / "job")
    chains = [[0, 1, 2, 3, 4], [5, 6, 7, 8, 9]]
    ran: dict[int, list[tuple]] = {0: [], 1: []}
    backend = RayBackend(spec)
    try:
        with job:
            prepare(job)
            # Built up front here; a flow chain builds each from the previous output (on the driver).
            requests = {idx: build_request(job, job.ledger.frame(idx), spec) for chain in chains for idx in chain}
            backend.preflight()

            def run_chain(number: int) -> None:
                with backend.lease() as worker:
                    for idx in chains[number]:
                        result = worker.img2img(requests[idx])
                        ran[number].append((idx, result.info["ray_worker"], np.asarray(result.image)))

            threads = [threading.Thread(target=run_chain, args=(n,)) for n in (0, 1)]
            for thread in threads:
                thread.start()
            for thread in threads:
                thread.join(timeout=120)
    finally:
        backend.close()
    local, threads_before = DiffusersBackend(spec), torch.get_num_threads()
    torch.set_num_threads(1)  # as each worker runs
    try:
        reference = {idx: np.asarray(local.img2img(request).image) for idx, request in requests.items()}
    finally:
        torch.set_num_threads(threads_before)
        local.close()
    for number, chain in enumerate(chains):
        assert [idx for idx, _, _ in ran[number]] == chain, "in order"
        assert len({worker for _, worker, _ in ran[number]}) == 1, "one worker for the whole chain"
        for idx, _, pixels in ran[number]:
            assert np.array_equal(pixels, reference[idx])
    assert ran[0][0][1] != ran[1][0][1], "two chains at once take the two workers"


def test_a_model_missing_on_one_node_fails_preflight_naming_that_worker(
    cluster: dict[str, Any], demo_clip: Path, tmp_path: Path
) -> None:
    spec = _spec(demo_clip, **{"backend.kind": "ray", "backend.ray_workers": 2, "model.checkpoint": "~/models/sd15"})
    backend = RayBackend(spec)
    try:
        with pytest.raises(ModelNotFoundError) as caught:
            start_job(spec, tmp_path / "job", backend)
    finally:
        backend.close()
    message = str(caught.value)
    assert f"node {cluster['node_b'][:8]}" in message and "not found" in message
    assert cluster["head"][:8] not in message
    assert not (tmp_path / "job").exists(), "nothing written before preflight passed"


def _done(job: Path) -> int:
    try:
        with sqlite3.connect(f"file:{job / 'ledger.sqlite'}?mode=ro", uri=True, timeout=1) as db:
            return int(db.execute("SELECT COUNT(*) FROM frames WHERE status='done'").fetchone()[0])
    except sqlite3.Error:
        return 0


def test_killed_driver_resumes_to_identical_pixels(
    cluster: dict[str, Any], reference: list[np.ndarray], demo_clip: Path, tmp_path: Path
) -> None:
    job = tmp_path / "job"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    argv = [
        sys.executable,
        "-m",
        "vidstyle",
        "stylize",
        str(demo_clip),
        "-o",
        str(job),
        *CLI_ARGS,
        "--ray",
        cluster["address"],
        "--ray-workers",
        "2",
    ]
    proc = subprocess.Popen(argv, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 240
    while _done(job) < 2 and time.monotonic() < deadline and proc.poll() is None:
        time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)
    _, stderr = proc.communicate()
    assert 0 < _done(job) < FRAMES, f"the kill should land mid-render: {stderr.decode()[-2000:]}"
    resumed = subprocess.run(
        [sys.executable, "-m", "vidstyle", "resume", str(job), "-q"],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert resumed.returncode == 0, resumed.stderr
    assert _ledger(job) == [(idx, "done", 0) for idx in range(FRAMES)]
    _assert_same_pixels(job, reference)
    assert (job / "result.mp4").is_file()


def test_no_cluster_at_the_address_is_one_sentence() -> None:
    import socket

    from vidstyle.backends.ray import _check_reachable
    from vidstyle.errors import PreflightError

    with socket.socket() as sock:  # a port nothing listens on once this closes
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    with pytest.raises(PreflightError, match=f"No Ray cluster answers at 127.0.0.1:{port}; start one with"):
        _check_reachable(f"127.0.0.1:{port}")
