"""How busy the webui_api backend keeps each WebUI (goal: >= 0.97 for one server, >= 0.95 x N for 4).

Each server is the WebUI API double in its own process (as separate GPU machines would be).
Like the WebUI it renders one request at a time behind a first-come-first-served queue
lock, decoding a request's images only once it holds the lock, and reports how long it
held that lock: its "GPU" time. Efficiency is frames/s divided by the ideal, the rate the
server would reach if it never waited for us between frames (1 / its busy seconds per
frame). A server's frames/s is its steady rate between the first and the last frame it
returned; figures a little above 1 are noise (the busy time varies from frame to frame with
the decoding in it). For context the script also prints 1 / latency (the "GPU" alone,
without the double's decoding).

1024x1024 frames take 16 x the 256x256 latency by default (the same GPU speed per pixel):
at 200 ms the double's own CPU work for a 1024x1024 answer (a PNG at the WebUI's default
compression, ~200 ms here) would exceed the "GPU" time on a 2-core machine.

The backend is driven the way the render loop drives it: `concurrency` workers taking
frames in order, requests carrying the PNG bytes the job folder already has, each result
written as a PNG. One run measures:
  * in-flight depth (requests_per_server) 1, 2 and 3 for one server at 256x256 and at
    1024x1024 (the default depth is chosen from these figures);
  * the default depth for 4 servers at 256x256.

    .venv/bin/python benchmarks/bench_http_scaling.py [--latency 0.2] [--frames-per-server 20] [--latency-1024 S]
"""

from __future__ import annotations

import argparse
import base64
import dataclasses
import os
import socket
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from benchmarks.bench_http_overhead import canny_map, render_like_frame, request_for  # noqa: E402
from vidstyle.backends.base import Img2ImgRequest  # noqa: E402
from vidstyle.backends.webui_api import WebUIApiBackend  # noqa: E402
from vidstyle.backends.webui_http import encode_png_base64  # noqa: E402
from vidstyle.imageio import write_png  # noqa: E402
from vidstyle.spec import JobSpec  # noqa: E402

DEPTHS = (1, 2, 3)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def start_doubles(count: int, latency: float) -> list[subprocess.Popen]:
    processes = []
    for _ in range(count):
        port = free_port()
        argv = [sys.executable, "-m", "tests.doubles.webui_double", "--port", str(port), "--delay", str(latency)]
        process = subprocess.Popen(argv, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
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


def stop_doubles(processes: list[subprocess.Popen]) -> None:
    for process in processes:
        process.terminate()
    for process in processes:
        process.wait(timeout=10)


def server_stats(urls: list[str]) -> list[tuple[float, int]]:
    """Each double's (seconds it held its queue lock, renders done): its own diagnostics route."""
    answers = [httpx.get(url + "/double/stats", timeout=10.0).json() for url in urls]
    return [(answer["busy_seconds"], answer["renders_completed"]) for answer in answers]


def job_like_requests(spec: JobSpec, size: int, frames: int) -> list[Img2ImgRequest]:
    """Frames as the render loop builds them: images plus the PNG bytes of the job's files."""
    requests = []
    for index in range(frames):
        init = render_like_frame(size, index % 8)
        control = canny_map(init)
        request = request_for(spec, index, init, control)
        requests.append(
            dataclasses.replace(
                request,
                init_png=base64.b64decode(encode_png_base64(init)),
                control_png=base64.b64decode(encode_png_base64(control)),
            )
        )
    return requests


def measure(
    urls: list[str], size: int, frames_per_server: int, depth: int, out_dir: str
) -> tuple[list[float], list[float]]:
    """(each server's frames/s, each server's ideal frames/s) over one timed run.

    A server's frames/s is taken between the first and the last frame it returned, so the
    start (the first request on its way) and the end (the last answer on its way back) do
    not count: it is the steady rate a long job sees. Its ideal is 1 / its busy seconds per frame.
    """
    spec = JobSpec.parse_obj(
        {
            "size": {"width": size, "height": size},
            "prompt": "1girl",
            "model": {"checkpoint": "v1-5-pruned-emaonly"},
            "sampling": {"seed": 1, "steps": 4, "sampler": "Euler a"},
            "backend": {"kind": "webui_api", "webui_urls": urls, "requests_per_server": depth},
        }
    )
    backend = WebUIApiBackend(spec)
    backend.preflight()
    frames = frames_per_server * len(urls)
    requests = job_like_requests(spec, size, frames + backend.concurrency)

    def render(request: Img2ImgRequest) -> tuple[str, float]:
        result = backend.img2img(request)
        returned = time.perf_counter()
        write_png(os.path.join(out_dir, f"{request.frame_index:06d}.png"), np.asarray(result.image))
        return result.info["server"], returned

    with ThreadPoolExecutor(max_workers=backend.concurrency) as pool:
        list(pool.map(render, requests[: backend.concurrency]))  # warm-up: connections, speed estimates
        before = server_stats(urls)
        finished = list(pool.map(render, requests[backend.concurrency :]))
        after = server_stats(urls)
    backend.close()
    rates = []
    for url in urls:
        times = sorted(t for server, t in finished if server == url)
        rates.append((len(times) - 1) / (times[-1] - times[0]) if len(times) > 1 else 0.0)
    ideals = [(a[1] - b[1]) / (a[0] - b[0]) for b, a in zip(before, after, strict=False)]
    return rates, ideals


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--latency", type=float, default=0.2, help="seconds each server takes per frame")
    parser.add_argument("--frames-per-server", type=int, default=20)
    parser.add_argument("--servers", type=int, default=4)
    parser.add_argument(
        "--latency-1024",
        type=float,
        default=None,
        help="seconds per 1024x1024 frame (default: 16 x --latency, the same GPU speed per pixel)",
    )
    parser.add_argument("--frames-1024", type=int, default=8)
    args = parser.parse_args()
    default_depth = JobSpec.parse_obj({"backend": {"kind": "webui_api"}}).backend.requests_per_server
    print(
        "efficiency = frames/s / ideal, ideal = 1 / the server's busy seconds per frame; "
        f"load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores"
    )
    big_latency = args.latency_1024 if args.latency_1024 is not None else args.latency * 16
    big_frames = args.frames_1024
    processes = start_doubles(args.servers, args.latency) + start_doubles(1, big_latency)
    urls = [p.url for p in processes[:-1]]  # type: ignore[attr-defined]
    big_url = [processes[-1].url]  # type: ignore[attr-defined]
    results: dict[tuple[int, int], float] = {}
    try:
        with tempfile.TemporaryDirectory() as out_dir:
            runs = ((256, args.latency, args.frames_per_server, urls[:1]), (1024, big_latency, big_frames, big_url))
            for size, latency, frames, server in runs:
                for depth in DEPTHS:
                    rates, ideals = measure(server, size, frames, depth, out_dir)
                    fps = rates[0]
                    results[(size, depth)] = fps / ideals[0]
                    print(
                        f"  1 server  {size:4d}x{size:<4d} {latency * 1000:4.0f} ms  depth {depth}: {fps:5.2f} "
                        "frames/s, "
                        f"ideal {ideals[0]:5.2f} (latency alone {1 / latency:5.2f}): efficiency {fps / ideals[0]:.3f}"
                        f"  [load {os.getloadavg()[0]:.1f}]"
                    )
            rates, ideals = measure(urls, 256, args.frames_per_server, default_depth, out_dir)
            each = [rate / ideal for rate, ideal in zip(rates, ideals, strict=False)]
            total = sum(each)
            print(
                f"  {args.servers} servers  256x256  {args.latency * 1000:4.0f} ms  depth {default_depth}: "
                f"{sum(rates):5.2f} frames/s, ideal {sum(ideals):5.2f} (latency alone "
                f"{args.servers / args.latency:5.2f}): "
                f"efficiency per server {', '.join(f'{e:.3f}' for e in each)}, sum {total:.2f} = "
                f"{total / args.servers:.3f} x {args.servers}  [load {os.getloadavg()[0]:.1f}]"
            )
    finally:
        stop_doubles(processes)
    enough = [d for d in DEPTHS if all(results[(size, d)] >= 0.97 for size in (256, 1024))]
    print(
        f"default depth {default_depth}; smallest depth with >= 0.97 at both sizes: "
        f"{enough[0] if enough else 'none'} (a deeper queue only adds requests a cancel must stop)"
    )
    goals = [
        results[(256, default_depth)] >= 0.97,
        results[(1024, default_depth)] >= 0.97,
        total >= 0.95 * args.servers,
    ]
    print("goals (1 server 256, 1 server 1024, 4 servers):", ", ".join("met" if g else "missed" for g in goals))


if __name__ == "__main__":
    main()
