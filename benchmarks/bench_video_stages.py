"""Per-stage cost of the video plumbing at 512x512: where the engine's ms/frame go.

Decode (iter_frames of a 912x512 clip), fit (crop to 512x512), canny, PNG write (plain
and with a `parameters` text chunk), PNG read, and the H.264 + AAC encode; also probe.
Complements bench_engine_overhead.py, which times the same work through the job folder.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from _common import make_source

from vidstyle.control import canny_map
from vidstyle.imageio import read_png, write_png
from vidstyle.spec import SourceSpec
from vidstyle.video import encode_video, fit_frame, iter_frames, probe


def per_frame(label: str, count: int, run: Callable[[], object]) -> None:
    start = time.perf_counter()
    run()
    print(f"{label:<42} {1000.0 * (time.perf_counter() - start) / count:7.2f} ms/frame")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--frames", type=int, default=150)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        clip = make_source(root / "src.mp4", args.frames)
        start = time.perf_counter()
        info = probe(clip)
        print(f"probe (first call, full packet scan):      {1000.0 * (time.perf_counter() - start):7.2f} ms")
        print(f"source: {info.width}x{info.height}, {info.frame_count} frames, audio: {bool(info.audio)}")
        decoded: list = []
        per_frame(
            "decode (iter_frames, RGB)",
            info.frame_count,
            lambda: decoded.extend(f.image for f in iter_frames(clip, SourceSpec(), info)),
        )
        fitted: list = []
        per_frame(
            "fit_frame crop -> 512x512",
            len(decoded),
            lambda: fitted.extend(fit_frame(i, 512, 512, "crop") for i in decoded),
        )
        edges: list = []
        per_frame("canny_map 100/200", len(fitted), lambda: edges.extend(canny_map(i, 100, 200) for i in fitted))
        frames_dir = root / "frames"
        per_frame(
            "write_png frame (cv2, level 1)",
            len(fitted),
            lambda: [write_png(frames_dir / f"{n:06d}.png", img) for n, img in enumerate(fitted)],
        )
        per_frame(
            "write_png canny map",
            len(edges),
            lambda: [write_png(root / "control" / f"{n:06d}.png", img) for n, img in enumerate(edges)],
        )
        text = {"parameters": "a dancer <lora:x:0.8>\nNegative prompt: blurry\nSteps: 20, Sampler: Euler a, Seed: 1"}
        per_frame(
            "write_png with text chunk (Pillow)",
            len(fitted),
            lambda: [write_png(root / "out" / f"{n:06d}.png", img, text=text) for n, img in enumerate(fitted)],
        )
        paths = sorted(frames_dir.glob("*.png"))
        per_frame("read_png", len(paths), lambda: [read_png(p) for p in paths])
        per_frame(
            "encode_video from PNGs + AAC (veryfast)",
            len(paths),
            lambda: encode_video(paths, root / "result.mp4", info.rate, audio_from=clip),
        )


if __name__ == "__main__":
    main()
