"""The feed that scoring and encoding threads follow, and the signatures that tell a frame changed."""

from __future__ import annotations

import threading
from pathlib import Path

import numpy as np
import pytest

from vidstyle.deflicker import deflicker_frames
from vidstyle.frame_feed import FeedAborted, FrameFeed, SignedFrames, read_signed
from vidstyle.imageio import write_png
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
