"""Flow-mode chain: the render path's per-frame cost with and without source flow prefetch.

A chain of `frame_inputs` calls as the render loop makes them (source and previous output read
from PNGs, output written back), with `--backend-ms` of sleep standing in for the backend call
(a GPU backend leaves the CPU free meanwhile; 0 is the pass-through case). Prints ms/frame on
the render path, wall ms/frame, and how many links the prefetch thread supplied (for flow frames
with the source-only half of the init prepared, as the render loop asks for it).
"""

from __future__ import annotations

import argparse
import collections
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np
from _common import peak_rss_mb

from vidstyle import coherence, temporal
from vidstyle.flow_prefetch import SourceFlows
from vidstyle.imageio import read_png, write_png
from vidstyle.spec import load_spec
from vidstyle.synthetic import draw_scene

calls: collections.Counter[str] = collections.Counter()
_correspond = temporal.correspond


def counted_correspond(*args: Any, **kwargs: Any) -> temporal.Correspondence:
    calls[threading.current_thread().name] += 1
    return _correspond(*args, **kwargs)


def run(root: Path, frames: int, prefetch: bool, backend_ms: float, ahead: int) -> tuple[float, float, int]:
    spec = load_spec("anime-canny-sd15", {"source.path": "clip.mp4", "coherence.mode": "flow"})
    plan = coherence.plan_frames(spec.coherence, frames, cuts=[])

    def read_src(idx: int) -> np.ndarray:
        return read_png(root / "src" / f"{idx:06d}.png")

    def read_out(idx: int) -> np.ndarray:
        return read_png(root / "out" / f"{idx:06d}.png")

    write_png(root / "out" / f"{0:06d}.png", read_src(0))
    calls.clear()
    flows = (
        SourceFlows(plan.steps[1:], read_src, ahead=ahead, source_mix=spec.coherence.source_mix) if prefetch else None
    )
    on_path = 0.0
    start = time.perf_counter()
    try:
        for step in plan.steps[1:]:
            t0 = time.perf_counter()
            inputs = coherence.frame_inputs(step, spec, read_src, read_out, flows=flows)
            on_path += time.perf_counter() - t0
            time.sleep(backend_ms / 1000.0)
            write_png(root / "out" / f"{step.idx:06d}.png", inputs.init)
    finally:
        if flows is not None:
            flows.close()
    wall = time.perf_counter() - start
    n = len(plan.steps) - 1
    return 1000.0 * on_path / n, 1000.0 * wall / n, calls["vidstyle-flow-prefetch"]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--frames", type=int, default=120)
    parser.add_argument("--size", type=int, default=512)
    parser.add_argument("--backend-ms", type=float, default=0.0)
    parser.add_argument("--ahead", type=int, default=8)
    parser.add_argument("--repeats", type=int, default=2)
    args = parser.parse_args()
    temporal.correspond = counted_correspond  # counts which thread estimated each link
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        (root / "src").mkdir()
        (root / "out").mkdir()
        for i in range(args.frames):
            write_png(root / "src" / f"{i:06d}.png", draw_scene(i / 30, args.size, args.size))
        print(f"{args.frames} frames at {args.size}x{args.size}, backend {args.backend_ms:g} ms, ahead {args.ahead}")
        for repeat in range(args.repeats):
            for prefetch in (False, True):
                path, wall, supplied = run(root, args.frames, prefetch, args.backend_ms, args.ahead)
                label = "prefetch" if prefetch else "inline  "
                print(
                    f"[{repeat}] {label}: frame_inputs {path:6.2f} ms/frame, wall {wall:6.2f} ms/frame, "
                    f"links from the prefetch thread {supplied}/{args.frames - 1}"
                )
    print(f"peak RSS: {peak_rss_mb():.0f} MB")


if __name__ == "__main__":
    main()
