"""Coherence modes through the real render loop (run_job), on the SIMULATED img2img backend.

bench_temporal.py measures the chains written directly with vidstyle.temporal; this one runs
whole jobs (prepare, plan, scheduling, PNG round trips, colour matching) the way a user does,
and prints per mode: warp error and edge fidelity relative to `independent`, img2img calls per
frame, and wall time. The simulated backend is no real model: the figures say what the engine
does with coherence, not how a real checkpoint looks.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import _common  # noqa: F401  (puts the repository root on sys.path)
import cv2
import numpy as np

from vidstyle import quality, temporal
from vidstyle.backends.simulated import SimulatedImg2ImgBackend
from vidstyle.imageio import read_png
from vidstyle.job import create_job
from vidstyle.render import run_job
from vidstyle.spec import load_spec
from vidstyle.synthetic import draw_scene


def write_clip(folder: Path, frames: int, size: int) -> Path:
    folder.mkdir(parents=True)
    for t in range(frames):
        cv2.imwrite(str(folder / f"{t:04d}.png"), cv2.cvtColor(draw_scene(t / 30.0, size, size), cv2.COLOR_RGB2BGR))
    return folder


def measure(clip: Path, root: Path, size: int, overrides: dict[str, object]) -> dict[str, float]:
    spec = load_spec(
        "anime-canny-sd15",
        {
            "source.path": str(clip),
            "size.width": size,
            "size.height": size,
            "backend.kind": "simulated",
            "sampling.seed": 1234,
            **overrides,
        },
    )
    backend = SimulatedImg2ImgBackend(spec)
    started = time.perf_counter()
    with create_job(spec, root) as job:
        run_job(job, backend, finish=False)
        seconds = time.perf_counter() - started
        count = job.ledger.frame_count()
        out = [read_png(job.out_path(i)) for i in range(count)]
        src = [read_png(job.src_path(i)) for i in range(count)]
        control = [read_png(job.control_path(i)) for i in range(count)]
    errors: list[float] = []
    for t in range(1, count):
        error = quality.warp_error(out[t], out[t - 1], temporal.correspond(src[t], src[t - 1]))
        if error is not None:
            errors.append(error)
    edges = [quality.edge_fidelity(o, c) for o, c in zip(out, control, strict=False)]
    return {
        "warp": float(np.mean(errors)),
        "edges": float(np.mean(edges)),
        "calls": backend.calls / count,
        "seconds": seconds,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--frames", type=int, default=32)
    parser.add_argument("--size", type=int, default=256)
    args = parser.parse_args()
    modes = {
        "independent": {"coherence.mode": "independent"},
        "flow (preset)": {"coherence.mode": "flow"},
        "flow + colour match": {"coherence.mode": "flow", "coherence.color_match": "first_frame"},
        "keyframes K=4": {"coherence.mode": "keyframes"},
    }
    with tempfile.TemporaryDirectory() as tmp:
        clip = write_clip(Path(tmp) / "clip", args.frames, args.size)
        print(
            f"demo scene (pan + dancer), {args.frames} frames of {args.size}x{args.size}, simulated img2img, "
            "preset values (denoise 0.5, flow denoise 0.3, source mix 0.1, coverage 0.9)"
        )
        print(
            f"{'mode':<22} {'warp err':>8} {'x indep':>7} {'edge F1':>7} {'x indep':>7} {'calls/frame':>11} "
            f"{'s/frame':>8}"
        )
        base = None
        for n, (name, overrides) in enumerate(modes.items()):
            row = measure(clip, Path(tmp) / f"job{n}", args.size, overrides)
            base = base or row
            print(
                f"{name:<22} {row['warp']:8.4f} {row['warp'] / base['warp']:7.2f} {row['edges']:7.3f} "
                f"{row['edges'] / base['edges']:7.3f} {row['calls']:11.2f} {row['seconds'] / args.frames:8.3f}"
            )
    sys.stdout.flush()


if __name__ == "__main__":
    main()
