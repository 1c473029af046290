"""Kill a real tiny-model render mid-way, resume it, and get the same pixels as an uninterrupted run."""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("diffusers", reason="the standalone backend needs diffusers")

from vidstyle.imageio import read_png  # noqa: E402

FRAMES = 12
ARGS = [
    "--model",
    "tiny",
    "--end-frame",
    str(FRAMES),
    "--width",
    "64",
    "--height",
    "64",
    "--steps",
    "4",
    "--seed",
    "77",
    "--device",
    "cpu",
    "-q",
]


def _done(job: Path) -> int:
    try:
        with sqlite3.connect(f"file:{job / 'ledger.sqlite'}?mode=ro", uri=True, timeout=1) as db:
            return int(db.execute("SELECT COUNT(*) FROM frames WHERE status='done'").fetchone()[0])
    except sqlite3.Error:
        return 0


def test_killed_render_resumes_to_identical_pixels(tmp_path: Path, demo_clip: Path) -> None:
    killed = tmp_path / "killed"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    # a slower-per-frame setting in the child so the kill lands mid-way
    proc = subprocess.Popen(
        [sys.executable, "-m", "vidstyle", "stylize", str(demo_clip), "-o", str(killed), *ARGS],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    deadline = time.monotonic() + 300
    while _done(killed) < 3 and time.monotonic() < deadline and proc.poll() is None:
        time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    done_at_kill = _done(killed)
    assert 0 < done_at_kill < FRAMES, "the kill should land mid-render"
    assert not (killed / "result.mp4").exists()

    # both finishing runs in fresh processes with the same thread count as the killed one
    def run(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "vidstyle", *args], env=env, capture_output=True, text=True)

    resumed = run("resume", str(killed), "-q")
    assert resumed.returncode == 0, resumed.stderr
    whole = run("stylize", str(demo_clip), "-o", str(tmp_path / "whole"), *ARGS)
    assert whole.returncode == 0, whole.stderr
    for idx in range(FRAMES):
        a = read_png(killed / "out" / f"{idx:06d}.png")
        b = read_png(tmp_path / "whole" / "out" / f"{idx:06d}.png")
        assert np.array_equal(a, b), f"frame {idx} differs after resume"
    assert (killed / "result.mp4").is_file()
