"""Throughput of the webui_api backend with 1, 2 and 4 WebUI servers (goal: >= 0.9 x N x one server).

Each server is the WebUI API double in its own process (as separate GPU machines would be),
taking a fixed time per img2img; the backend is driven the way the render loop drives it:
`concurrency` threads calling img2img for frames 0..F-1. Printed per server count: frames/s
and the ratio to N times the one-server rate.

    .venv/bin/python benchmarks/bench_http_scaling.py [--latency 0.2] [--size 256] [--frames-per-server 12]

Frames default to 256x256 so the doubles' own CPU work (decode, a numpy "render", PNG
encode at the WebUI's default level) stays small next to the latency on a 2-core machine.
"""

from __future__ import annotations

import argparse
import socket
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import List

import httpx

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from benchmarks.bench_http_overhead import canny_map, render_like_frame, request_for  # noqa: E402
from vidstyle.backends.webui_api import WebUIApiBackend  # noqa: E402
from vidstyle.spec import JobSpec  # noqa: E402


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def start_doubles(count: int, latency: float) -> List[subprocess.Popen]:
    processes = []
    for _ in range(count):
        port = free_port()
        argv = [sys.executable, "-m", "tests.doubles.webui_double", "--port", str(port), "--delay", str(latency)]
        process = subprocess.Popen(argv, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        process.url = f"http://127.0.0.1:{port}"  # type: ignore[attr-defined]
        processes.append(process)
    for process in processes:
        wait_ready(process)
    return processes


def wait_ready(process: subprocess.Popen, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"the WebUI double exited: {process.stderr.read() if process.stderr else ''}")
        try:
            httpx.get(process.url + "/sdapi/v1/sd-models", timeout=1.0)  # type: ignore[attr-defined]
            return
        except httpx.HTTPError:
            time.sleep(0.1)
    raise RuntimeError("the WebUI double did not start in time")


def stop_doubles(processes: List[subprocess.Popen]) -> None:
    for process in processes:
        process.terminate()
    for process in processes:
        process.wait(timeout=10)


def frames_per_second(urls: List[str], size: int, frames: int) -> float:
    spec = JobSpec.parse_obj(
        {
            "size": {"width": size, "height": size},
            "prompt": "1girl",
            "model": {"checkpoint": "v1-5-pruned-emaonly"},
            "sampling": {"seed": 1, "steps": 1, "sampler": "Euler a"},
            "backend": {"kind": "webui_api", "webui_urls": urls},
        }
    )
    backend = WebUIApiBackend(spec)
    backend.preflight()
    inits = [render_like_frame(size, i) for i in range(8)]
    pairs = [(init, canny_map(init)) for init in inits]
    requests = [request_for(spec, i, *pairs[i % len(pairs)]) for i in range(frames)]
    with ThreadPoolExecutor(max_workers=backend.concurrency) as pool:
        list(pool.map(backend.img2img, requests[: backend.concurrency]))  # warm-up: connections, speed estimates
        start = time.perf_counter()
        list(pool.map(backend.img2img, requests))
        elapsed = time.perf_counter() - start
    backend.close()
    return frames / elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--latency", type=float, default=0.2, help="seconds each server takes per frame")
    parser.add_argument("--size", type=int, default=256)
    parser.add_argument("--frames-per-server", type=int, default=12)
    parser.add_argument("--servers", type=int, nargs="+", default=[1, 2, 4])
    args = parser.parse_args()
    print(
        f"{args.size}x{args.size} frames, {args.latency * 1000:.0f} ms per frame per server, "
        f"{args.frames_per_server} frames per server"
    )
    baseline = None
    for count in args.servers:
        processes = start_doubles(count, args.latency)
        try:
            urls = [p.url for p in processes]  # type: ignore[attr-defined]
            fps = frames_per_second(urls, args.size, args.frames_per_server * count)
        finally:
            stop_doubles(processes)
        baseline = baseline if baseline is not None else fps / count
        ratio = fps / (count * baseline)
        print(
            f"  {count} server(s): {fps:6.2f} frames/s, ideal {count / args.latency:6.2f}, "
            f"ratio to {count} x one server {ratio:.2f} ({'meets' if ratio >= 0.9 else 'misses'} the 0.9 goal)"
        )


if __name__ == "__main__":
    main()
