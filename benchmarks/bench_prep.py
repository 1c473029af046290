"""trainer prep on 2,000 images of 1024x1024: total seconds, near-duplicate seconds, peak RSS.

Goals (issue #5): full prep (hash, filters, crops, writes) <= 60 s, near-duplicate search
<= 5 s of that, peak RSS <= 1.5 GB. The images (varied shapes, half JPEG, half PNG, each
with a caption) are generated first and that time is not counted.

    .venv/bin/python benchmarks/bench_prep.py [--count 2000] [--keep DIR] [--workers N]
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import resource
import tempfile
import threading
import time
from pathlib import Path

import _common  # noqa: F401  (puts the repository on sys.path)
import cv2
import numpy as np
from PIL import Image

SIZE = 1024


def make_image(args: tuple) -> None:
    index, folder = args
    path_base = Path(folder) / f"img{index:05d}"
    if path_base.with_suffix(".txt").exists():
        return
    rng = np.random.default_rng(index)
    image = np.empty((SIZE, SIZE, 3), np.uint8)
    image[:] = rng.integers(180, 256, 3)
    for _ in range(int(rng.integers(12, 30))):
        colour = tuple(int(c) for c in rng.integers(0, 256, 3))
        centre = (int(rng.integers(0, SIZE)), int(rng.integers(0, SIZE)))
        if rng.random() < 0.5:
            cv2.circle(image, centre, int(rng.integers(20, 220)), colour, -1, cv2.LINE_AA)
        else:
            corner = (int(rng.integers(0, SIZE)), int(rng.integers(0, SIZE)))
            cv2.rectangle(image, centre, corner, colour, -1)
        start = (int(rng.integers(0, SIZE)), int(rng.integers(0, SIZE)))
        end = (int(rng.integers(0, SIZE)), int(rng.integers(0, SIZE)))
        cv2.line(image, start, end, (20, 20, 20), 3, cv2.LINE_AA)
    if index % 2:
        Image.fromarray(image).save(path_base.with_suffix(".jpg"), "JPEG", quality=92)
    else:
        Image.fromarray(image).save(path_base.with_suffix(".png"), "PNG", compress_level=6)
    path_base.with_suffix(".txt").write_text(
        f"1girl, solo, brown_hair, amber_eyes, shape_{index % 17}", encoding="utf-8"
    )


def generate(folder: Path, count: int) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    with multiprocessing.get_context("spawn").Pool() as pool:
        pool.map(make_image, [(i, str(folder)) for i in range(count)], chunksize=16)


def _rss_kb(pid: int) -> int:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    except OSError:
        pass
    return 0


def _descendants(pid: int) -> list[int]:
    found: list[int] = []
    try:
        for task in Path(f"/proc/{pid}/task").iterdir():
            for child in (task / "children").read_text().split():
                found.append(int(child))
                found.extend(_descendants(int(child)))
    except OSError:
        pass
    return found


def _cpu_seconds() -> float:
    """User + system CPU of this process and of its finished children (the pool's workers)."""
    total = 0.0
    for who in (resource.RUSAGE_SELF, resource.RUSAGE_CHILDREN):
        usage = resource.getrusage(who)
        total += usage.ru_utime + usage.ru_stime
    return total


class RssSampler(threading.Thread):
    """Sum of RSS over this process and its worker processes, sampled every 50 ms (Linux)."""

    def __init__(self) -> None:
        super().__init__(daemon=True)
        self.peak_kb = 0
        self.stop = threading.Event()

    def run(self) -> None:
        me = os.getpid()
        while not self.stop.is_set():
            total = _rss_kb(me) + sum(_rss_kb(pid) for pid in _descendants(me))
            self.peak_kb = max(self.peak_kb, total)
            time.sleep(0.05)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--count", type=int, default=2000)
    parser.add_argument("--keep", type=Path, help="generate into / reuse this folder")
    parser.add_argument("--workers", type=int, default=None)
    args = parser.parse_args()

    from trainer.dataset import build_options, prepare

    with tempfile.TemporaryDirectory() as tmp:
        src = args.keep or Path(tmp) / "src"
        t0 = time.perf_counter()
        generate(src, args.count)
        print(f"generated {args.count} images of {SIZE}x{SIZE} in {time.perf_counter() - t0:.1f} s (not counted)")
        options = build_options(sources=[str(src)], out=str(Path(tmp) / "dataset"), name="bench", workers=args.workers)
        sampler = RssSampler()
        sampler.start()
        cpu_before = _cpu_seconds()
        result = prepare(options)
        cpu = _cpu_seconds() - cpu_before
        sampler.stop.set()
        sampler.join()

    counts = result.counts
    timings = result.timings
    children_kb = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    self_kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    print(
        f"kept {counts['kept']} ({counts['train']} train + {counts['val']} val), dropped {counts['dropped']} "
        f"{counts['by_reason']}"
    )
    print("stages: " + ", ".join(f"{k} {v:.2f} s" for k, v in timings.items() if k != "total"))
    print(f"prep total:             {timings['total']:7.2f} s   (goal <= 60 s)")
    print(f"near-duplicate search:  {timings['dedupe']:7.3f} s   (goal <= 5 s)")
    cores = args.workers or os.cpu_count() or 1
    print(
        f"CPU time, all processes: {cpu:6.1f} s  (/ {cores} cores = {cpu / cores:.1f} s: the wall time on an idle "
        "machine)"
    )
    print(f"load average during the run: {os.getloadavg()[0]:.1f} (other work on the machine slows the wall time)")
    print(f"peak RSS, main + workers sampled together: {sampler.peak_kb / 1024:7.1f} MB   (goal <= 1,536 MB)")
    print(f"peak RSS, main process:                    {self_kb / 1024:7.1f} MB")
    print(f"peak RSS, largest worker (getrusage):      {children_kb / 1024:7.1f} MB")


if __name__ == "__main__":
    main()
