"""`resume` on a 3,000-frame job: seconds from opening the job to the first new frame.

The job is prepared and half rendered first (not timed); then a fresh resume is timed up
to its first `frame` event. Goal: <= 2 s.
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path

from _common import make_source

from vidstyle.backends.passthrough import PassthroughBackend
from vidstyle.errors import Cancelled
from vidstyle.job import create_job, open_job, prepare
from vidstyle.render import CancelToken, RenderEvent, run_job
from vidstyle.spec import load_spec

FRAMES = 3000


def main() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        clip = make_source(root / "src.mp4", FRAMES)
        spec = load_spec(
            "anime-canny-sd15", {"source.path": str(clip), "backend.kind": "passthrough", "sampling.seed": 1}
        )
        stop = CancelToken()

        def halfway(event: RenderEvent) -> None:
            if event.kind == "frame" and event.done >= FRAMES // 2:
                stop.cancel()

        with create_job(spec, root / "job") as job:
            prepare(job)
            try:
                run_job(job, on_event=halfway, cancel=stop)
            except Cancelled:
                pass
        first_frame = CancelToken()
        timings = {}

        def on_event(event: RenderEvent) -> None:
            if event.kind == "frame" and "first" not in timings:
                timings["first"] = time.perf_counter()
                first_frame.cancel()

        t0 = time.perf_counter()
        with open_job(root / "job") as job:
            done = job.ledger.counts()["done"]
            try:
                run_job(job, backend=PassthroughBackend(job.spec), on_event=on_event, cancel=first_frame)
            except Cancelled:
                pass
    print(f"job: {FRAMES} frames, {done} already done")
    print(f"resume -> first new frame (goal <= 2 s): {timings['first'] - t0:.3f} s")


if __name__ == "__main__":
    main()
