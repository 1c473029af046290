"""Finished frames, announced in frame order to threads that follow the render loop.

Scoring and encoding need frames in index order, while the render loop finishes them in
any order (several backend slots, chains, retries). The loop marks each frame done here;
a follower asks for frame 0, 1, 2, ... and waits until that one is done, so it runs a few
frames behind the backend instead of after the last frame. The loop also says when no
frame will change any more (`seal`), or that the run stopped (`abort`): a follower that
writes a file holds its last step until then, so nothing is published from a run that
failed or that repair is still changing.
"""

from __future__ import annotations

import os
import sys
import threading
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from .imageio import read_png

# What identifies one version of a frame file: every write is an atomic rename of a new file,
# so a rewritten frame has a new inode (and, in practice, a new mtime).
FileSignature = tuple[int, int, int]


# How much nicer than the render path a follower thread runs (Linux nice steps).
FOLLOWER_NICENESS = 10
_pools_started = threading.Lock()
_pools_ready = False


def _start_shared_pools() -> None:
    """Have OpenCV start its worker pool now, from the calling (render) thread: a pool started
    from a follower would inherit its lower priority, and the whole process (the WebUI's own
    OpenCV calls included) would run on lower-priority workers from then on."""
    global _pools_ready
    with _pools_started:
        if not _pools_ready:
            # Which call starts the pool differs between OpenCV versions (4.11: remap, not a blur),
            # so the kinds of call the followers make.
            cv2.GaussianBlur(np.zeros((1024, 1024), np.float32), (0, 0), 3.0)
            grid = np.zeros((1024, 1024), np.float32)
            cv2.remap(np.zeros((1024, 1024, 3), np.uint8), grid, grid, cv2.INTER_LINEAR)
            cv2.resize(np.zeros((1024, 1024, 3), np.uint8), (512, 512), interpolation=cv2.INTER_AREA)
            _pools_ready = True


def follower_thread(target: Callable[..., None], name: str, args: tuple[Any, ...] = ()) -> threading.Thread:
    """A daemon thread for work that follows the render loop (scores, encoding, prefetch).

    On Linux it runs at a lower CPU priority (and so do threads it starts, such as FFmpeg's
    encoder threads): on a machine with few cores the render path that feeds the GPU gets the CPU
    first, and followers have frames of slack. Elsewhere, or if the system refuses, nothing changes.
    """
    _start_shared_pools()

    def run() -> None:
        _lower_priority()
        target(*args)

    return threading.Thread(target=run, name=name, daemon=True)


def _lower_priority() -> None:
    if not sys.platform.startswith("linux"):
        return
    try:
        tid = threading.get_native_id()
        os.setpriority(os.PRIO_PROCESS, tid, min(19, os.getpriority(os.PRIO_PROCESS, tid) + FOLLOWER_NICENESS))
    except OSError:
        pass


class FeedAborted(Exception):
    """The run stopped before its frames were final; a follower drops what it made."""


def file_signature(path: Path) -> FileSignature:
    stat = os.stat(path)
    return (stat.st_ino, stat.st_size, stat.st_mtime_ns)


class FrameFeed:
    """Which frames are done; thread-safe. `total` may be unknown while frames are still prepared."""

    def __init__(self, done: Iterable[int] = (), total: int | None = None) -> None:
        self._cond = threading.Condition()
        self._done = set(done)
        self._total = total
        self._sealed = False
        self._aborted = False

    def mark_done(self, idx: int) -> None:
        with self._cond:
            self._done.add(idx)
            self._cond.notify_all()

    def set_total(self, total: int) -> None:
        with self._cond:
            self._total = total
            self._cond.notify_all()

    def seal(self) -> None:
        """No frame changes any more: followers may publish what they made."""
        with self._cond:
            self._sealed = True
            self._cond.notify_all()

    def abort(self) -> None:
        """The run stopped (failure, cancel, frames left to render): followers stop and drop their work."""
        with self._cond:
            if not self._sealed:
                self._aborted = True
            self._cond.notify_all()

    @property
    def aborted(self) -> bool:
        with self._cond:
            return self._aborted

    def wait_for(self, idx: int) -> bool:
        """Block until frame `idx` is done (True) or the job has fewer frames (False).

        Raises FeedAborted when the run stopped first.
        """
        with self._cond:
            while True:
                if self._aborted:
                    raise FeedAborted()
                if idx in self._done:
                    return True
                if self._total is not None and idx >= self._total:
                    return False
                self._cond.wait()

    def wait_sealed(self) -> None:
        """Block until the frames are final; FeedAborted when the run stopped instead."""
        with self._cond:
            self._cond.wait_for(lambda: self._sealed or self._aborted)
            if self._aborted:
                raise FeedAborted()

    def iter_done(self) -> Iterable[int]:
        """0, 1, 2, ... each as soon as it is done, until the last frame of the job."""
        idx = 0
        while self.wait_for(idx):
            yield idx
            idx += 1


class SignedFrames:
    """The file signature of each frame a follower read, to tell later whether it is still current."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._read: dict[int, tuple[Path, FileSignature]] = {}

    def record(self, idx: int, path: Path, signature: FileSignature) -> None:
        with self._lock:
            self._read[idx] = (path, signature)

    def changed(self) -> list[int]:
        """Frames whose file was replaced (or removed) since it was read."""
        with self._lock:
            read = dict(self._read)
        stale = []
        for idx, (path, signature) in sorted(read.items()):
            try:
                if file_signature(path) != signature:
                    stale.append(idx)
            except FileNotFoundError:
                stale.append(idx)
        return stale


def read_signed(path: Path) -> tuple[np.ndarray, FileSignature]:
    """A frame and the signature of exactly the file version read (a rename may land in between)."""
    while True:
        before = file_signature(path)
        image = read_png(path)
        if file_signature(path) == before:
            return image, before


class RecentOutputs:
    """The last few output frames the render loop wrote, in memory with the signature of the file
    written, so a chain's next frame need not decode the PNG just written (~15 ms at 1024x1024 on
    its critical path). A file that has changed since (a redo, another run) is read from disk; PNG
    is lossless, so the pixels are the file's either way and a resumed chain starts from the same."""

    def __init__(self, keep: int = 4) -> None:
        self._keep = keep
        self._lock = threading.Lock()
        self._frames: dict[Path, tuple[FileSignature, np.ndarray]] = {}

    def remember(self, path: Path, pixels: np.ndarray) -> None:
        """After `pixels` were written to `path` (the caller no longer changes them)."""
        pixels.flags.writeable = False  # handed to other threads from here on
        signature = file_signature(path)
        with self._lock:
            self._frames.pop(path, None)
            self._frames[path] = (signature, pixels)
            while len(self._frames) > self._keep:
                del self._frames[next(iter(self._frames))]

    def read(self, path: Path) -> np.ndarray:
        with self._lock:
            kept = self._frames.get(path)
        if kept is not None and file_signature(path) == kept[0]:
            return kept[1]
        pixels = read_png(path)
        pixels.flags.writeable = False  # as a kept frame is: no reader may change what others share
        return pixels
