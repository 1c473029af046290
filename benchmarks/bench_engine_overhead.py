"""Engine overhead per 512x512 frame with a pass-through backend.

Everything but the backend call: decode, fit, canny, PNG writes (src, control, out),
ledger, and the result.mp4 encode. compare.mp4 and the report are printed separately.
Goal: <= 25 ms/frame on the 2-core machine.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

from _common import make_source, peak_rss_mb

from vidstyle.backends.passthrough import PassthroughBackend
from vidstyle.job import create_job, prepare
from vidstyle.outputs import _audio_args, _frame_paths
from vidstyle.render import render_pending
from vidstyle.spec import load_spec
from vidstyle.video import encode_video


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--frames", type=int, default=300)
    # independent: the engine's own cost per frame (the goal's baseline); flow adds optical flow,
    # warping and blending per frame on top, and runs the chain in order.
    parser.add_argument("--mode", choices=["independent", "flow", "keyframes"], default="independent")
    args = parser.parse_args()
    print(f"coherence mode: {args.mode}")
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        clip = make_source(root / "src.mp4", args.frames)
        spec = load_spec(
            "anime-canny-sd15",
            {"source.path": str(clip), "backend.kind": "passthrough", "sampling.seed": 1, "coherence.mode": args.mode},
        )
        with create_job(spec, root / "job") as job:
            t0 = time.perf_counter()
            n = prepare(job)
            t1 = time.perf_counter()
            render_pending(job, PassthroughBackend(job.spec))
            t2 = time.perf_counter()
            encode_video(
                _frame_paths(job, "out"),
                job.result_path,
                fps=job.fps,
                crf=18,
                preset=job.spec.encode.preset,
                **_audio_args(job),
            )
            t3 = time.perf_counter()
            from vidstyle.outputs import write_outputs

            write_outputs(job)
            t4 = time.perf_counter()

    def per(seconds: float) -> float:
        return 1000.0 * seconds / n

    print(f"frames: {n} at 512x512 (source {clip.name})")
    print(f"prepare (decode + fit + canny + 2 PNG writes + ledger): {per(t1 - t0):6.2f} ms/frame")
    print(f"render loop (PNG reads + out PNG with text + ledger):   {per(t2 - t1):6.2f} ms/frame")
    print(f"encode result.mp4 with audio:                          {per(t3 - t2):6.2f} ms/frame")
    print(f"ENGINE OVERHEAD (goal <= 25):                          {per(t3 - t0):6.2f} ms/frame")
    print(f"all outputs again (result + compare + sheet + report): {per(t4 - t3):6.2f} ms/frame")
    print(f"peak RSS: {peak_rss_mb():.0f} MB")


if __name__ == "__main__":
    main()
