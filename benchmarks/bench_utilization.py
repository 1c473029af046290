"""Does the GPU ever wait for the engine? A whole job through `run_job` with a backend that
sleeps 300 ms per frame (a GPU's pace at 1024x1024), against the time the backend was busy.

Goal: job wall time <= 1.03 x the backend's busy time, both measured in the same run (the ideal
is N x 300 ms plus however late `time.sleep` wakes). The rest is split by the job's own events
and the backend's call log: before the first frame (preflight, decode + canny + PNG writes), the
gaps between frames (render loop: PNG reads, init, output PNG, ledger), scores, and the finish
stage (encoding result.mp4 and compare.mp4, contact sheet, report).

    .venv/bin/python benchmarks/bench_utilization.py [--frames 200] [--frame-ms 300] [--size 1024] [--coherence flow]
"""

from __future__ import annotations

import argparse
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import _common  # noqa: F401  (puts the repository on sys.path)

from vidstyle.backends.base import Img2ImgRequest, Img2ImgResult
from vidstyle.job import create_job
from vidstyle.render import run_job
from vidstyle.spec import load_spec
from vidstyle.synthetic import make_clip


@dataclass
class SleepingBackend:
    """Renders nothing: holds each frame `seconds` (a GPU's time per frame) and returns the init image."""

    seconds: float
    name: str = "sleeping"
    concurrency: int = 1
    calls: list[tuple[float, float]] = field(default_factory=list)  # (start, end) per img2img call
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def preflight(self) -> None:
        return None

    def img2img(self, request: Img2ImgRequest) -> Img2ImgResult:
        # The init image itself is the "output": a copy here would be the backend's work but
        # would land between its calls (on this VM the first touch of a fresh 3 MB buffer after
        # 300 ms idle costs 20-50 ms of page faults). The engine converts it on its own thread.
        start = time.perf_counter()
        time.sleep(self.seconds)
        end = time.perf_counter()
        with self._lock:
            self.calls.append((start, end))
        return Img2ImgResult(request.init_image, {"backend": self.name})

    def interrupt(self) -> None:
        return None

    def close(self) -> None:
        return None


@dataclass
class EventLog:
    """Every event of the job with the time it arrived."""

    events: list[tuple[float, Any]] = field(default_factory=list)

    def __call__(self, event: Any) -> None:
        self.events.append((time.perf_counter(), event))

    def first(self, kind: str, stage: str, after: float = 0.0, message: str = "") -> float | None:
        """When the first such event came (at or after `after`, its message starting with `message`)."""
        for at, event in self.events:
            if at >= after and event.kind == kind and event.stage == stage and event.message.startswith(message):
                return at
        return None


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--frames", type=int, default=200)
    parser.add_argument("--frame-ms", type=float, default=300.0, help="the backend's time per frame")
    parser.add_argument("--size", type=int, default=1024, help="source and output width = height")
    parser.add_argument(
        "--coherence",
        choices=("independent", "flow", "keyframes"),
        default="independent",
        help="coherence.mode (flow and keyframes decode the whole clip first: their plans need its scene cuts)",
    )
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        fps = 30
        clip = make_clip(root / "src.mp4", seconds=args.frames / fps, fps=fps, size=(args.size, args.size))
        spec = load_spec(
            "anime-canny-sd15",
            {
                "source.path": str(clip),
                "size.width": args.size,
                "size.height": args.size,
                "sampling.seed": 1,
                "coherence.mode": args.coherence,
                "backend.kind": "passthrough",  # stored in job.toml only; the job runs on `backend` below
            },
        )
        backend = SleepingBackend(args.frame_ms / 1000.0)
        log = EventLog()
        with create_job(spec, root / "job") as job:
            start = time.perf_counter()
            run_job(job, backend=backend, on_event=log)
            end = time.perf_counter()
            frames = job.ledger.frame_count()

    calls = sorted(backend.calls)
    busy = sum(b - a for a, b in calls)
    wall = end - start
    first_call, last_end = calls[0][0], calls[-1][1]
    gaps = [calls[i + 1][0] - calls[i][1] for i in range(len(calls) - 1)]
    # Scores report as "finish" stage events too; the outputs start with run_job's "encoding ..." one.
    finish_at = log.first("stage", "finish", after=last_end, message="encoding") or end
    prepare_at = log.first("stage", "prepare") or first_call
    slept = busy / len(calls) * 1000.0

    print(f"coherence: {args.coherence}")
    print(f"frames: {frames} at {args.size}x{args.size}, backend {args.frame_ms:.0f} ms/frame (slept {slept:.1f} ms)")
    print(f"backend busy (sum of img2img calls):            {busy:8.2f} s   ({len(calls)} calls)")
    print(f"job wall time (run_job):                        {wall:8.2f} s")
    print(f"RATIO wall / busy (goal <= 1.03):               {wall / busy:8.3f}")
    print(f"rest: {wall - busy:.2f} s, where it goes:")
    print(f"  before frame 1: preflight                       {prepare_at - start:8.2f} s")
    print(f"  before frame 1: prepare (decode, canny, PNGs)   {first_call - prepare_at:8.2f} s")
    gap_ms = sorted(1000.0 * gap for gap in gaps) or [0.0]
    print(
        f"  gaps between frames (render loop):              {sum(gaps):8.2f} s"
        f"   (median {gap_ms[len(gap_ms) // 2]:.1f} ms, max {gap_ms[-1]:.1f} ms)"
    )
    print(f"  after the last frame, before outputs (scores):  {finish_at - last_end:8.2f} s")
    print(f"  finish (encode result + compare, sheet, report):{end - finish_at:8.2f} s")


if __name__ == "__main__":
    main()
