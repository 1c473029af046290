"""Helpers shared by the benchmark scripts (media generation, RSS)."""

from __future__ import annotations

import resource
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))


def peak_rss_mb() -> float:
    """This process's peak RSS in MB.

    VmHWM, not ru_maxrss: Linux carries ru_maxrss across exec, so a child spawned by a big
    parent would report the parent's peak (seen here as +60 MB on the 3,000-frame run).
    """
    try:
        with open("/proc/self/status") as status:
            for line in status:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024.0
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0  # KiB on Linux


def make_source(path: Path, frames: int, size: int = 512, fps: int = 30) -> Path:
    from vidstyle.synthetic import make_clip

    if not path.exists():
        make_clip(path, seconds=frames / fps, fps=fps, size=(size * 16 // 9 // 8 * 8, size))
    return path
