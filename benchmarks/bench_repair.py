"""Automatic repair through the real job path: scores in the finish stage, suspects, repair attempts.

A job renders the demo clip with the SIMULATED img2img backend (vidstyle/backends/simulated.py),
while a wrapper breaks a share of its frames' first attempt (a wrong seed at denoise 1.0, the
issue's definition of a broken frame); `repair.enabled` re-renders the suspects. Printed per
coherence mode: broken frames found (flagged suspect) and false alarms, frames repaired, the
mean scores before and after, and the img2img calls repair added per frame of the clip (in a
flow chain the frames after a repaired one are rendered again from it).

Goal (issue 12): repair finds >= 90 % of the broken frames with <= 5 % false alarms.
The simulation says how the *engine* finds and repairs frames; not how any real model fails.
"""

from __future__ import annotations

import argparse
import dataclasses
import statistics
import tempfile
import time
from pathlib import Path

import _common  # puts the repository root on sys.path (for vidstyle)
import numpy as np

from vidstyle.backends.base import Img2ImgRequest, Img2ImgResult
from vidstyle.backends.simulated import SimulatedImg2ImgBackend
from vidstyle.job import create_job
from vidstyle.render import run_job
from vidstyle.scores import load_scores
from vidstyle.spec import load_spec

SEED = 1234
WRONG_SEED = 987_654


class BreakingBackend(SimulatedImg2ImgBackend):
    """The simulated backend, with chosen frames' first attempt (the job's seed) broken."""

    def __init__(self, spec, broken: set[int]) -> None:
        super().__init__(spec)
        self.broken = broken

    def img2img(self, request: Img2ImgRequest) -> Img2ImgResult:
        if request.frame_index in self.broken and request.seed == SEED:
            request = dataclasses.replace(request, seed=WRONG_SEED, denoise=1.0)
        return super().img2img(request)


def run(mode: str, clip: Path, frames: int, size: int, share: float, folder: Path) -> None:
    rng = np.random.default_rng(7)
    broken = {int(i) for i in rng.choice(np.arange(1, frames), size=max(1, round(frames * share)), replace=False)}
    spec = load_spec(
        "anime-canny-sd15",
        {
            "source.path": str(clip),
            "source.end_frame": frames,
            "size.width": size,
            "size.height": size,
            "backend.kind": "simulated",
            "sampling.seed": SEED,
            "coherence.mode": mode,
            "repair.enabled": True,
            "encode.keep_audio": False,
        },
    )
    backend = BreakingBackend(spec, broken)
    started = time.perf_counter()
    with create_job(spec, folder / mode) as job:
        run_job(job, backend=backend)
        seconds = time.perf_counter() - started
        rows = job.ledger.frames()
        first = {row.idx: job.ledger.attempts(row.idx)[0]["scores"] for row in rows}
        flagged = {idx for idx, scores in first.items() if scores and scores["suspect"]}
        repair = job.ledger.get_meta("repair", {})
        final = {idx: score.as_ledger() for idx, score in load_scores(job).items()}
    found, false = len(flagged & broken), len(flagged - broken)
    good = frames - len(broken)
    extra_calls = backend.calls - frames
    print(
        f"{mode:<11} found {found}/{len(broken)} broken ({found / len(broken):.0%}), false alarms {false}/{good} "
        f"({false / good:.1%}); repaired {len(repair.get('repaired', []))}, re-rendered as followers "
        f"{len(repair.get('followers', []))}"
    )
    for name, table in (("first attempts", first), ("kept", final)):
        edges = statistics.fmean(s["edge_fidelity"] for s in table.values())
        warps = statistics.fmean(s["warp_error"] for s in table.values() if s["warp_error"] is not None)
        print(f"  {name:<15} mean edge fidelity {edges:.3f}, mean warp error {warps:.4f}")
    print(f"  img2img calls added by repair: {extra_calls / frames:.2f} per frame; whole job {seconds:.1f} s")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--frames", type=int, default=90)
    parser.add_argument("--size", type=int, default=256)
    parser.add_argument("--broken-share", type=float, default=0.06)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        clip = _common.make_source(folder / "clip.mp4", args.frames, size=args.size)
        print(
            f"repair through the job path: {args.frames} frames of {args.size}x{args.size}, "
            f"{args.broken_share:.0%} broken (wrong seed, denoise 1.0); goal: >= 90 % found, <= 5 % false alarms"
        )
        for mode in ("independent", "flow"):
            run(mode, clip, args.frames, args.size, args.broken_share, folder)


if __name__ == "__main__":
    main()
