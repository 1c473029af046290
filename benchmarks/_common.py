"""Helpers shared by the benchmark scripts (media generation, RSS)."""

from __future__ import annotations

import resource
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))


def peak_rss_mb() -> float:
    # ru_maxrss is KiB on Linux
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def make_source(path: Path, frames: int, size: int = 512, fps: int = 30) -> Path:
    from vidstyle.synthetic import make_clip

    if not path.exists():
        make_clip(path, seconds=frames / fps, fps=fps, size=(size * 16 // 9 // 8 * 8, size))
    return path
