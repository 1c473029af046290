"""Print what the ray backend costs and gains, on a local Ray cluster with the tiny model (CPU).

One run measures, each actor with one torch thread:
* throughput with 2 Ray workers vs 1 (goal >= 1.7x on 2 cores);
* Ray's added cost per frame at --overhead-size (goal <= 20 ms at 512x512): the driver's time
  per call minus the time the actor spent inside the diffusers backend (transfer, pickling,
  scheduling), and next to it the plain diffusers backend's time per frame in this process;
* time from job start (backend created) to the first frame with a warm cluster (goal <= 10 s
  plus model load), split into connect, workers started, models loaded, first frame.

    .venv/bin/python benchmarks/bench_ray.py [--size 256] [--frames 12] [--overhead-size 512]

Other programs on the machine share its cores: run it on a quiet machine, and read the
throughput ratio with that in mind.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")  # a cluster on loopback only
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import numpy as np  # noqa: E402
from PIL import Image  # noqa: E402


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=256, help="frame size for the throughput runs")
    parser.add_argument("--steps", type=int, default=4, help="sampling steps")
    parser.add_argument("--frames", type=int, default=12, help="frames per throughput run")
    parser.add_argument("--overhead-size", type=int, default=512, help="frame size for the per-frame cost")
    parser.add_argument("--overhead-frames", type=int, default=6, help="timed frames for the per-frame cost")
    return parser.parse_args()


def make_spec(size: int, steps: int, workers: int = 1) -> Any:
    from vidstyle.spec import build_spec

    return build_spec(
        {
            "model": {"checkpoint": "tiny"},
            "controlnet": {"model": "tiny"},
            "size": {"width": size, "height": size},
            "sampling": {"steps": steps, "denoise": 1.0, "seed": 1, "seed_policy": "per_frame"},
            "backend": {"kind": "ray", "device": "cpu", "ray_workers": workers},
        }
    )


def make_requests(spec: Any, count: int) -> list[Any]:
    from vidstyle.backends.base import Img2ImgRequest

    rng = np.random.default_rng(0)
    size = spec.size.width
    requests = []
    for idx in range(count):
        init = Image.fromarray(rng.integers(0, 255, (size, size, 3), dtype=np.uint8))
        edges = Image.fromarray(((rng.random((size, size)) > 0.9) * 255).astype(np.uint8)).convert("RGB")
        requests.append(
            Img2ImgRequest(
                frame_index=idx,
                init_image=init,
                control_image=edges,
                prompt="a dancer",
                negative_prompt="",
                checkpoint="tiny",
                loras=[],
                controlnet=spec.controlnet,
                width=size,
                height=size,
                denoise=1.0,
                steps=spec.sampling.steps,
                cfg_scale=spec.sampling.cfg_scale,
                sampler=spec.sampling.sampler,
                scheduler=spec.sampling.scheduler,
                seed=1 + idx,
            )
        )
    return requests


def throughput(workers: int, args: argparse.Namespace) -> float:
    """Frames/s of `workers` Ray workers fed from as many threads, as the render loop does."""
    from vidstyle.backends.ray import RayBackend

    spec = make_spec(args.size, args.steps, workers)
    backend = RayBackend(spec)
    try:
        backend.preflight()
        warm = make_requests(spec, workers)
        with ThreadPoolExecutor(workers) as pool:
            list(pool.map(backend.img2img, warm))  # every worker has rendered once
            requests = make_requests(spec, args.frames)
            started = time.perf_counter()
            list(pool.map(backend.img2img, requests))
            return args.frames / (time.perf_counter() - started)
    finally:
        backend.close()


def per_frame_cost(args: argparse.Namespace) -> dict[str, float]:
    """Ray's added time per frame, and the plain backend's frame time beside Ray's."""
    import torch

    from vidstyle.backends.diffusers import DiffusersBackend
    from vidstyle.backends.ray import RayBackend

    spec = make_spec(args.overhead_size, args.steps, 1)
    requests = make_requests(spec, args.overhead_frames + 1)
    backend = RayBackend(spec)
    added, via_ray = [], []
    try:
        backend.preflight()
        backend.img2img(requests[0])
        for request in requests[1:]:
            started = time.perf_counter()
            result = backend.img2img(request)
            call_ms = (time.perf_counter() - started) * 1000
            via_ray.append(call_ms)
            added.append(call_ms - result.info["ray_render_ms"])
    finally:
        backend.close()
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # as each Ray worker runs
    plain = DiffusersBackend(spec)
    try:
        plain.preflight()
        plain.img2img(requests[0])
        alone = []
        for request in requests[1:]:
            started = time.perf_counter()
            plain.img2img(request)
            alone.append((time.perf_counter() - started) * 1000)
    finally:
        plain.close()
        torch.set_num_threads(threads)
    return {
        "added_ms": statistics.median(added),
        "ray_ms": statistics.median(via_ray),
        "plain_ms": statistics.median(alone),
    }


def time_to_first_frame(args: argparse.Namespace) -> dict[str, float]:
    from vidstyle.backends.ray import RayBackend

    spec = make_spec(args.size, args.steps, 2)
    request = make_requests(spec, 1)[0]
    started = time.perf_counter()
    backend = RayBackend(spec)
    try:
        backend.preflight()
        backend.img2img(request)
        first = time.perf_counter() - started
        return {**backend.startup_seconds, "first_frame": first}
    finally:
        backend.close()


def main() -> None:
    args = parse_args()
    import ray

    started = time.perf_counter()
    ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False)
    print(f"local Ray {ray.__version__} cluster with 2 CPUs started in {time.perf_counter() - started:.1f} s")
    try:
        time_to_first_frame(args)  # warms the cluster: worker processes, imports, the tiny model's files
        one = throughput(1, args)
        two = throughput(2, args)
        print(
            f"throughput at {args.size}x{args.size}, {args.steps} steps, {args.frames} frames: "
            f"1 worker {one:.2f} frames/s, 2 workers {two:.2f} frames/s = {two / one:.2f}x (goal >= 1.7x)"
        )
        cost = per_frame_cost(args)
        print(
            f"per frame at {args.overhead_size}x{args.overhead_size}: Ray adds {cost['added_ms']:.1f} ms "
            f"(goal <= 20 ms; median of {args.overhead_frames}); call through Ray {cost['ray_ms']:.0f} ms, "
            f"plain diffusers backend {cost['plain_ms']:.0f} ms"
        )
        warm = time_to_first_frame(args)
        print(
            f"warm cluster, 2 workers: first frame after {warm['first_frame']:.1f} s = connect "
            f"{warm['connect']:.2f} s + workers started {warm['workers_started'] - warm['connect']:.1f} s + "
            f"models loaded {warm['models_loaded'] - warm['workers_started']:.1f} s + first frame "
            f"{warm['first_frame'] - warm['models_loaded']:.1f} s (goal <= 10 s plus model load)"
        )
    finally:
        ray.shutdown()


if __name__ == "__main__":
    main()
