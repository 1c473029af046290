"""The feed that scoring and encoding threads follow, and the signatures that tell a frame changed."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest

import vidstyle.frame_feed as frame_feed
from vidstyle.deflicker import deflicker_frames
from vidstyle.frame_feed import (
    FeedAborted,
    FrameFeed,
    RecentOutputs,
    SignedFrames,
    read_signed,
)
from vidstyle.imageio import read_png, write_png
from vidstyle.temporal import TemporalInputError, deflicker


def _follow(feed: FrameFeed, seen: list[int]) -> threading.Thread:
    def run() -> None:
        try:
            seen.extend(feed.iter_done())
            feed.wait_sealed()
            seen.append(-1)  # published
        except FeedAborted:
            seen.append(-2)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread


def test_a_follower_takes_frames_in_order_whatever_order_they_finish() -> None:
    feed, seen = FrameFeed(total=4), []
    thread = _follow(feed, seen)
    for idx in (2, 0, 3, 1):
        feed.mark_done(idx)
    feed.seal()
    thread.join(timeout=5)
    assert seen == [0, 1, 2, 3, -1]


def test_a_follower_waits_for_a_missing_frame_and_drops_its_work_on_abort() -> None:
    feed, seen = FrameFeed(done=[0, 2], total=3), []
    thread = _follow(feed, seen)
    deadline = time.monotonic() + 10
    while not seen and time.monotonic() < deadline:  # however slowly the thread starts
        time.sleep(0.005)
    thread.join(timeout=0.3)
    assert thread.is_alive() and seen == [0]  # frame 1 is not done: it must not skip ahead
    feed.abort()
    thread.join(timeout=5)
    assert seen == [0, -2]


def test_the_frame_count_can_arrive_after_the_frames() -> None:
    feed, seen = FrameFeed(done=[0, 1]), []
    thread = _follow(feed, seen)
    thread.join(timeout=0.3)
    assert thread.is_alive()
    feed.set_total(2)
    feed.seal()
    thread.join(timeout=5)
    assert seen == [0, 1, -1]


def test_abort_after_seal_keeps_the_published_work() -> None:
    feed = FrameFeed(done=[0], total=1)
    feed.seal()
    feed.abort()
    assert not feed.aborted
    feed.wait_sealed()


def test_a_rewritten_frame_is_seen_as_changed(tmp_path: Path) -> None:
    path = tmp_path / "000000.png"
    write_png(path, np.zeros((8, 8, 3), np.uint8))
    image, signature = read_signed(path)
    signed = SignedFrames()
    signed.record(0, path, signature)
    assert signed.changed() == []
    write_png(path, np.full((8, 8, 3), 9, np.uint8))  # atomic rename: a new file under the same name
    assert signed.changed() == [0]
    path.unlink()
    assert signed.changed() == [0]


@pytest.mark.parametrize("window", [1, 3])
def test_streamed_deflicker_matches_the_whole_list_version_scene_by_scene(window: int) -> None:
    rng = np.random.default_rng(3)
    frames = [np.clip(rng.normal(120 + 30 * (i % 3), 20, (16, 16, 3)), 0, 255).astype(np.uint8) for i in range(11)]
    starts = [0, 4, 5]  # a one-frame scene in the middle
    expected = []
    for a, b in zip(starts, starts[1:] + [len(frames)], strict=True):
        expected.extend(deflicker(frames[a:b], window))
    streamed = list(deflicker_frames(iter(frames), window, starts))
    assert len(streamed) == len(frames)
    for got, want in zip(streamed, expected, strict=True):
        assert np.array_equal(got, want)


def test_streamed_deflicker_refuses_a_zero_window() -> None:
    with pytest.raises(TemporalInputError, match="window"):
        list(deflicker_frames(iter([np.zeros((4, 4, 3), np.uint8)]), 0, [0]))


# --------------------------------------------------------------------------- recent outputs


def _frame(seed: int) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (24, 32, 3), dtype=np.uint8)


def test_a_recent_output_is_served_from_memory_only_while_its_file_is_unchanged(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    outputs = RecentOutputs()
    path = tmp_path / "000001.png"
    first = _frame(1)
    write_png(path, first)
    outputs.remember(path, first)
    decoded: list[Path] = []
    monkeypatch.setattr(frame_feed, "read_png", lambda p: decoded.append(p) or read_png(p))
    assert outputs.read(path) is first and not first.flags.writeable  # no decode; nobody may change it
    assert decoded == []
    second = _frame(2)
    write_png(path, second)  # a redo replaced the file (a new inode): its pixels come from disk
    np.testing.assert_array_equal(outputs.read(path), second)
    assert decoded == [path]


def test_recent_outputs_keep_only_the_last_few(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    outputs = RecentOutputs(keep=2)
    paths = [tmp_path / f"{i:06d}.png" for i in range(3)]
    for i, path in enumerate(paths):
        write_png(path, _frame(i))
        outputs.remember(path, _frame(i))
    decoded: list[Path] = []
    monkeypatch.setattr(frame_feed, "read_png", lambda p: decoded.append(p) or read_png(p))
    for i, path in enumerate(paths):
        np.testing.assert_array_equal(outputs.read(path), _frame(i))
    assert decoded == [paths[0]]


# --------------------------------------------------------------------------- follower priority


_NICE_PROBE = """
import glob, os, threading
import cv2, numpy as np
from vidstyle.frame_feed import FOLLOWER_NICENESS, follower_thread

def nice(tid):
    return os.getpriority(os.PRIO_PROCESS, tid)

seen = {}
def follow():
    seen["tid"] = threading.get_native_id()
    seen["follower"] = nice(seen["tid"])
    # OpenCV's first parallel call in this process starts its worker pool; which call does that
    # differs between versions, so the kinds the followers make.
    cv2.GaussianBlur(np.zeros((1024, 1024, 3), np.float32), (0, 0), 3.0)
    grid = np.zeros((1024, 1024), np.float32)
    cv2.remap(np.zeros((1024, 1024, 3), np.uint8), grid, grid, cv2.INTER_LINEAR)
    cv2.resize(np.zeros((1024, 1024, 3), np.uint8), (300, 300), interpolation=cv2.INTER_AREA)
    small = np.zeros((256, 256), np.uint8)
    cv2.DISOpticalFlow_create(1).calc(small, small, None)

thread = follower_thread(follow, name="vidstyle-test-follower")
thread.start()
thread.join()
# The follower's own thread may linger in /proc for a moment after join.
tids = [int(d.rsplit("/", 1)[1]) for d in glob.glob("/proc/self/task/*")]
others = [nice(tid) for tid in tids if tid != seen["tid"]]
print(seen["follower"] == min(19, FOLLOWER_NICENESS), others == [0] * len(others), len(others))
"""


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="per-thread nice values are Linux's")
def test_a_follower_runs_at_lower_priority_and_leaves_the_rest_of_the_process_alone() -> None:
    """In a fresh process (so OpenCV has not started its worker pool yet): the follower thread runs
    nicer; the main thread and every thread left afterwards, OpenCV's pool included, do not."""
    if os.getpriority(os.PRIO_PROCESS, 0) != 0:
        pytest.skip("this test run is already niced")
    done = subprocess.run([sys.executable, "-c", _NICE_PROBE], capture_output=True, text=True, timeout=120, check=False)
    assert done.returncode == 0, done.stderr
    follower_nicer, rest_untouched, threads = done.stdout.split()
    assert (follower_nicer, rest_untouched) == ("True", "True")
    assert int(threads) >= 1
