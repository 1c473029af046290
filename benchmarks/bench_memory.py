"""Peak RSS of a whole passthrough job of 300 and of 3,000 frames, each in a fresh process.

Goal: the 3,000-frame job peaks at most 50 MB above the 300-frame job (streaming decode,
no frames held in memory).
"""

from __future__ import annotations

import subprocess
import sys
import tempfile
from pathlib import Path

from _common import make_source

CHILD = """
import sys
sys.path.insert(0, {root!r})
sys.path.insert(0, {bench!r})
from _common import peak_rss_mb
from vidstyle.job import create_job
from vidstyle.render import run_job
from vidstyle.spec import load_spec
spec = load_spec("anime-canny-sd15", {{"source.path": {clip!r}, "backend.kind": "passthrough", "sampling.seed": 1}})
with create_job(spec, {job!r}) as job:
    run_job(job)
print(peak_rss_mb())
"""


def run(frames: int, tmp: Path) -> float:
    clip = make_source(tmp / f"src{frames}.mp4", frames)
    here = Path(__file__).resolve().parent
    code = CHILD.format(root=str(here.parent), bench=str(here), clip=str(clip), job=str(tmp / f"job{frames}"))
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    return float(out.stdout.strip().splitlines()[-1])


def main() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        small = run(300, Path(tmp))
        large = run(3000, Path(tmp))
    print(f"peak RSS, 300 frames:   {small:7.1f} MB")
    print(f"peak RSS, 3,000 frames: {large:7.1f} MB")
    print(f"growth (goal <= 50 MB): {large - small:7.1f} MB")


if __name__ == "__main__":
    main()
