"""The job API under load on loopback (issue 10): status polls while a job renders, and bad bodies.

Starts `vidstyle serve` in a child process (as a user would) and, in the same run:
1. renders one pass-through job with nobody polling, then the same job again while 200 status
   polls per second hit GET /vidstyle/v1/jobs/{id} -> status latency p50/p99/max and the job's
   frames per second with and without polling (goal: p99 <= 50 ms, throughput within 10 %);
2. sends 50 bad request bodies at once (wrong content type, broken JSON, oversized, forged
   cross-site, unknown keys, preset paths, absolute model paths) -> every answer must be 4xx,
   and the server must still list jobs and take a good one afterwards.

    .venv/bin/python benchmarks/bench_api_load.py [--frames 300] [--size 256] [--rate 200]
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
from _common import make_source

API = "/vidstyle/v1"
HEADERS = {"X-Vidstyle-Request": "1"}


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def start_server(root: Path, media: Path, port: int) -> subprocess.Popen:
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    command = [
        sys.executable,
        "-m",
        "vidstyle",
        "serve",
        "--port",
        str(port),
        "--output-root",
        str(root / "jobs"),
        "--allow",
        str(media),
        "--max-upload-mb",
        "64",
    ]
    server = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"http://127.0.0.1:{port}{API}/jobs", timeout=1).status_code == 200:
                return server
        except httpx.HTTPError:
            time.sleep(0.2)
    server.kill()
    raise SystemExit(f"vidstyle serve did not start: {server.stderr.read() if server.stderr else ''}")


def spec(clip: Path, frames: int, size: int) -> dict[str, Any]:
    return {
        "source": {"path": str(clip), "end_frame": frames},
        "size": {"width": size, "height": size},
        "sampling": {"seed": 1},
        "backend": {"kind": "passthrough"},
    }


def run_job(client: httpx.Client, name: str, body: dict[str, Any]) -> tuple[float, dict[str, Any]]:
    """Submit, then wait (checking twice a second) until it is done; seconds from submit to done."""
    started = time.perf_counter()
    created = client.post(f"{API}/jobs", json={"spec": body, "name": name}, headers=HEADERS)
    created.raise_for_status()
    while True:
        status = client.get(f"{API}/jobs/{name}").json()
        if status["state"] not in ("queued", "preparing", "rendering", "finishing"):
            return time.perf_counter() - started, status
        time.sleep(0.5)


def poll(base: str, job_id: str, rate: float, stop: threading.Event, latencies: list[float], errors: list[str]) -> None:
    """One poller at `rate` requests/s on a fixed schedule (a slow answer is not made up for)."""
    with httpx.Client(base_url=base, timeout=10) as client:
        next_at = time.perf_counter()
        while not stop.is_set():
            t0 = time.perf_counter()
            try:
                response = client.get(f"{API}/jobs/{job_id}")
                if response.status_code != 200:
                    errors.append(str(response.status_code))
            except httpx.HTTPError as exc:
                errors.append(type(exc).__name__)
            latencies.append(time.perf_counter() - t0)
            next_at += 1.0 / rate
            time.sleep(max(0.0, next_at - time.perf_counter()))


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process so far (Linux /proc), to tell load from contention."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(q * (len(ordered) - 1))))]


def bad_bodies(clip: Path) -> list[dict[str, Any]]:
    good = json.dumps({"spec": spec(clip, 3, 64)}).encode()
    cases: list[dict[str, Any]] = [
        {"content": good, "headers": {**HEADERS, "content-type": "text/plain"}},  # a cross-site form
        {"content": good, "headers": {"content-type": "application/json"}},  # no X-Vidstyle-Request
        {"content": b"{not json", "headers": {**HEADERS, "content-type": "application/json"}},
        {"content": b"[1,2,3]", "headers": {**HEADERS, "content-type": "application/json"}},
        {"content": b"{" + b" " * (2 * 1024 * 1024) + b"}", "headers": {**HEADERS, "content-type": "application/json"}},
        {"json": {"spec": {**spec(clip, 3, 64), "colour": "red"}}, "headers": HEADERS},
        {"json": {"spec": spec(clip, 3, 64), "preset": "../../../etc/passwd"}, "headers": HEADERS},
        {"json": {"spec": {**spec(clip, 3, 64), "model": {"checkpoint": "/etc/shadow"}}}, "headers": HEADERS},
        {
            "json": {
                "spec": {
                    **spec(clip, 3, 64),
                    "backend": {"kind": "webui_api", "webui_urls": ["http://169.254.169.254"]},
                }
            },
            "headers": HEADERS,
        },
        {
            "json": {"spec": {**spec(clip, 3, 64), "backend": {"kind": "passthrough", "webui_auth": "a:b"}}},
            "headers": HEADERS,
        },
    ]
    return [cases[i % len(cases)] for i in range(50)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--frames", type=int, default=300)
    parser.add_argument("--size", type=int, default=256)
    parser.add_argument("--rate", type=float, default=200.0, help="status polls per second in all")
    parser.add_argument("--pollers", type=int, default=4)
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        media = root / "media"
        media.mkdir()
        clip = make_source(media / "clip.mp4", args.frames, size=args.size)
        port = free_port()
        base = f"http://127.0.0.1:{port}"
        server = start_server(root, media, port)
        try:
            with httpx.Client(base_url=base, timeout=30) as client:
                cpu0 = cpu_seconds(server.pid)
                quiet_s, quiet = run_job(client, "quiet", spec(clip, args.frames, args.size))
                cpu1 = cpu_seconds(server.pid)

                stop, latencies, errors = threading.Event(), [], []  # type: ignore[var-annotated]
                # The job id is known before it exists: polls start with the submit (404 until then are
                # not counted as errors, but their latency is).
                pollers = [
                    threading.Thread(
                        target=poll, args=(base, "polled", args.rate / args.pollers, stop, latencies, errors)
                    )
                    for _ in range(args.pollers)
                ]
                for thread in pollers:
                    thread.start()
                polled_s, polled = run_job(client, "polled", spec(clip, args.frames, args.size))
                cpu2 = cpu_seconds(server.pid)
                stop.set()
                for thread in pollers:
                    thread.join()

                with ThreadPoolExecutor(max_workers=50) as pool:
                    answers = list(
                        pool.map(
                            lambda case: httpx.post(f"{base}{API}/jobs", timeout=60, **case).status_code,
                            bad_bodies(clip),
                        )
                    )
                healthy = client.get(f"{API}/jobs").status_code
                after_s, after = run_job(client, "after", spec(clip, 3, 64))
        finally:
            server.terminate()
            server.wait(30)

    real_errors = [e for e in errors if e != "404"]
    print(f"job: {args.frames} frames {args.size}x{args.size}, passthrough backend, vidstyle serve on loopback")
    print(f"no polling:   {quiet_s:6.2f} s  {args.frames / quiet_s:6.1f} frames/s  ({quiet['state']})")
    print(
        f"with polling: {polled_s:6.2f} s  {args.frames / polled_s:6.1f} frames/s  ({polled['state']}); "
        f"throughput {100 * (quiet_s / polled_s - 1):+.1f} % vs no polling"
    )
    print(
        f"status polls: {len(latencies)} in {polled_s:.1f} s ({len(latencies) / polled_s:.0f}/s, target "
        f"{args.rate:.0f}/s); "
        f"latency p50 {1000 * statistics.median(latencies):.1f} ms, p99 {1000 * percentile(latencies, 0.99):.1f} ms, "
        f"max {1000 * max(latencies):.1f} ms; errors {len(real_errors)}"
    )
    extra = (cpu2 - cpu1) - (cpu1 - cpu0)
    print(
        f"server CPU: {cpu1 - cpu0:.2f} s for the job alone, {cpu2 - cpu1:.2f} s with polling -> "
        f"{1000 * extra / max(1, len(latencies)):.2f} ms per status call; load average now {os.getloadavg()[0]:.1f} "
        f"on {os.cpu_count()} CPUs"
    )
    counts: dict[int, int] = {}
    for status in answers:
        counts[status] = counts.get(status, 0) + 1
    print(f"50 concurrent bad submits: {dict(sorted(counts.items()))}; all 4xx: {all(400 <= s < 500 for s in answers)}")
    print(f"after: GET /jobs {healthy}; a good job {after['state']} in {after_s:.1f} s")


if __name__ == "__main__":
    main()
