"""Deflicker as a stream: each frame leaves as soon as the `window` frames after it have come in.

A frame's target colour statistics are the median of its scene's frames within +-window
(temporal.deflicker_targets, which works on a whole list); here the same targets come from a
sliding buffer, so the encoder can take deflickered frames while later frames still render,
and a long job never holds more than window + 1 frames (and 2 x window + 1 stats) in memory.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable, Iterator

import numpy as np

from . import temporal


def deflicker_frames(frames: Iterable[np.ndarray], window: int, scene_starts: Iterable[int]) -> Iterator[np.ndarray]:
    """The frames with their LAB stats pulled to the windowed median; windows stop at scene starts."""
    temporal.check_deflicker_window(window)
    starts = set(scene_starts)
    held: deque[tuple[int, np.ndarray]] = deque()  # frames in, not yet out: (index, frame)
    stats: dict[int, np.ndarray] = {}  # this scene's stats, from the oldest any held frame needs
    scene_start = 0
    for idx, frame in enumerate(frames):
        if idx in starts and idx > scene_start:
            yield from _release(held, stats, window, scene_start, until=None)
            stats.clear()
            scene_start = idx
        stats[idx] = temporal.lab_stats(frame)
        held.append((idx, frame))
        yield from _release(held, stats, window, scene_start, until=idx - window)
    yield from _release(held, stats, window, scene_start, until=None)


def _release(
    held: deque[tuple[int, np.ndarray]], stats: dict[int, np.ndarray], window: int, scene_start: int, until: int | None
) -> Iterator[np.ndarray]:
    """Held frames up to index `until` (all when None: the scene or the stream ended)."""
    while held and (until is None or held[0][0] <= until):
        idx, frame = held.popleft()
        near = [stats[i] for i in range(max(scene_start, idx - window), idx + window + 1) if i in stats]
        yield temporal.apply_lab_stats(frame, np.median(np.stack(near), axis=0))
        stats.pop(idx - window, None)  # no later frame's window reaches back that far
