"""Source-to-source optical flow computed ahead of a coherence chain, on a thread of its own.

A flow or in-between frame's correspondence (DIS flow there and back, occlusion mask) depends
only on the prepared source frames, never on an output; so while the backend renders frame t,
the links of frames t+1, t+2, ... can already be estimated. For a flow frame the worker also
prepares the source-only half of its init (`temporal.prepare_blend`: the occlusion fill's blurs
of the source and of the visibility), which leaves a chain frame's critical path with the warp
of the previous output and the blend. `SourceFlows` does that for the steps the render loop has
still to run, at most `ahead` results held at a time (see DEFAULT_AHEAD), and hands each one out
once. A link it has not
reached, or no longer holds (a retried frame asks twice), is computed in the caller's thread
exactly as `temporal.correspond` would: the pixels never depend on whether the prefetch was in time.
"""

from __future__ import annotations

import threading
from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np

from . import temporal
from .coherence import FrameStep, ImageReader
from .frame_feed import follower_thread

Pair = tuple[int, int]  # (target frame, reference frame)
# The worker is 4-6x faster than a flow frame's render path (benchmarks/bench_flow_prefetch.py),
# so 2 links would keep up; 4 leaves room for an in-between frame's two. At 1024x1024 a link is
# ~14 MB and a prepared flow init ~20 MB with occlusions over a fifth of the frame (sample maps
# 8 MB, source 3 MB, the boxes' blurs), so this holds ~55-80 MB (8 measured +67 MB peak RSS over
# 4 for links alone, no faster).
DEFAULT_AHEAD = 4
# Source frames the worker keeps after reading: a chain's consecutive links share one frame,
# an in-between frame's two links share the target.
_KEPT_FRAMES = 3


def step_pairs(step: FrameStep) -> list[Pair]:
    """The (target, reference) source links `coherence.frame_inputs` needs for a step."""
    if step.how == "flow" and step.previous is not None:
        return [(step.idx, step.previous)]
    if step.how == "between" and step.before is not None and step.after is not None:
        return [(step.idx, step.before), (step.idx, step.after)]
    return []


@dataclass
class _Prefetched:
    link: temporal.Correspondence | None  # None once a flow step's init is made from it (less to hold)
    flow_init: temporal.FlowInit | None  # flow steps, with the source mix the prefetch was told


class SourceFlows:
    """Correspondences of upcoming steps, estimated ahead on one background thread.

    `steps` in the order they are likely to render (the render loop's pending frames, lowest
    index first); `get` (and `flow_init`) blocks while the worker is on the asked link, takes it
    if ready, and otherwise computes it inline. `source_mix`: the job's coherence.source_mix, for
    the flow steps' prepared blends (a frame asking with another mix gets its blend made inline).
    `close` (or leaving a `with` block) stops the thread.
    """

    def __init__(
        self,
        steps: Iterable[FrameStep],
        read_src: ImageReader,
        ahead: int = DEFAULT_AHEAD,
        source_mix: float | None = None,
    ) -> None:
        if ahead < 1:
            raise ValueError(f"SourceFlows needs to look at least 1 link ahead (got {ahead}).")
        steps = list(steps)
        self._pairs = deque(dict.fromkeys(pair for step in steps for pair in step_pairs(step)))
        self._flow_pairs = {pair for step in steps if step.how == "flow" for pair in step_pairs(step)}
        self._source_mix = source_mix
        self._read_src = read_src
        self._ahead = ahead
        self._lock = threading.Condition()
        self._ready: dict[Pair, _Prefetched] = {}
        self._taken: set[Pair] = set()  # handed out or computed inline: the worker skips them
        self._busy: Pair | None = None
        self._closed = False
        # Frames ahead: the chain's next frame goes first.
        self._thread = follower_thread(self._run, name="vidstyle-flow-prefetch")
        if self._pairs:
            self._thread.start()

    def __enter__(self) -> SourceFlows:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def get(self, target: int, reference: int) -> temporal.Correspondence:
        """`temporal.correspond(read_src(target), read_src(reference))`, prefetched when possible."""
        found = self._take((target, reference))
        if found is not None and found.link is not None:
            return found.link
        return temporal.correspond(self._read_src(target), self._read_src(reference))

    def flow_init(self, target: int, reference: int, source_mix: float) -> temporal.FlowInit:
        """A flow frame's link, source and prepared blend, prefetched when possible."""
        found = self._take((target, reference))
        if found is not None and found.flow_init is not None and found.flow_init.blend.source_mix == source_mix:
            return found.flow_init
        source = self._read_src(target)
        link = found.link if found is not None and found.link is not None else None
        link = link or temporal.correspond(source, self._read_src(reference))
        return temporal.prepare_flow_init(link, source, source_mix)

    def _take(self, pair: Pair) -> _Prefetched | None:
        with self._lock:
            while self._busy == pair:
                self._lock.wait()
            found = self._ready.pop(pair, None)
            self._taken.add(pair)
            self._lock.notify_all()  # a slot in the buffer is free again
        return found

    def close(self) -> None:
        """Stop the worker (it finishes the link in hand, ~15 ms) and drop what it holds."""
        with self._lock:
            self._closed = True
            self._lock.notify_all()
        if self._thread.is_alive():
            self._thread.join()
        with self._lock:
            self._ready.clear()

    def _next(self) -> Pair | None:
        """The next link to estimate, once the buffer has room; None when closed."""
        with self._lock:
            while not self._closed and len(self._ready) >= self._ahead:
                self._lock.wait()
            while self._pairs and self._pairs[0] in self._taken:
                self._pairs.popleft()
            if self._closed or not self._pairs:
                return None
            self._busy = self._pairs.popleft()
            return self._busy

    def _run(self) -> None:
        frames: dict[int, np.ndarray] = {}

        def read(idx: int) -> np.ndarray:
            if idx not in frames:
                if len(frames) >= _KEPT_FRAMES:
                    del frames[next(iter(frames))]
                frames[idx] = self._read_src(idx)
            return frames[idx]

        while (pair := self._next()) is not None:
            try:
                found: _Prefetched | None = self._estimate(pair, read)
            except Exception:
                # The caller computes this link (and the rest) itself and meets the error there,
                # where the render loop reports it; the worker just stops.
                found = None
            with self._lock:
                self._busy = None
                if found is not None:
                    self._ready[pair] = found
                else:
                    self._closed = True
                self._lock.notify_all()

    def _estimate(self, pair: Pair, read: ImageReader) -> _Prefetched:
        source = read(pair[0])
        link = temporal.correspond(source, read(pair[1]))
        if self._source_mix is None or pair not in self._flow_pairs:
            return _Prefetched(link, None)
        return _Prefetched(None, temporal.prepare_flow_init(link, source, self._source_mix))
