"""Preparing frames on a thread while the first ones already render.

Decoding, fitting and canny for a long 1024x1024 clip take seconds that the backend would
otherwise spend idle before frame 0. When no frame's plan depends on frames after it (the
independent mode without colour references or scene cuts), the render loop takes frames
as they are prepared. The ledger stays with the loop's thread: this thread only writes
PNGs and hands over ledger rows; the loop inserts them and, at the end, marks the job
prepared.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable

from . import coherence
from .job import FrameRowData, Job, Preparation, finish_preparation, prepared_rows, start_preparation
from .spec import JobSpec


def prepares_while_rendering(spec: JobSpec) -> bool:
    """Whether every frame's plan is known before the clip is decoded to its end."""
    coh = spec.coherence
    return coh.mode == "independent" and coh.color_match == "off" and not coherence.needs_scenes(spec)


class BackgroundPrepare:
    """Prepares the job's frames on its own thread; the render loop takes the rows with `take`."""

    def __init__(self, job: Job, should_stop: Callable[[], bool]) -> None:
        self._job = job
        self.preparation: Preparation = start_preparation(job)  # probes and records on this thread
        self._should_stop = should_stop
        self._stopped = threading.Event()
        # Told the frame count once the last frame is prepared (from `take`, on the loop's thread).
        self.on_total: Callable[[int], None] | None = None
        self._rows: queue.SimpleQueue[FrameRowData | None] = queue.SimpleQueue()
        self._error: BaseException | None = None
        self.count = 0
        self.exhausted = False
        self._thread = threading.Thread(target=self._run, name="vidstyle-prepare-feed", daemon=True)
        self._thread.start()

    @property
    def estimated_frames(self) -> int | None:
        return self.preparation.estimated_frames

    def _run(self) -> None:
        try:
            for row in prepared_rows(self._job, self.preparation, self._stop_requested):
                self._rows.put(row)
        except BaseException as exc:  # noqa: BLE001 - handed to the render loop's thread, which raises it
            self._error = exc
        finally:
            self._rows.put(None)

    def _stop_requested(self) -> bool:
        return self._stopped.is_set() or self._should_stop()

    def take(self, timeout: float) -> list[FrameRowData]:
        """Rows prepared since the last call (waiting up to `timeout` for the first), added to the
        ledger here. Once the last one is taken the job is marked prepared. Raises what the
        preparing thread raised (a damaged video, a full disk)."""
        rows: list[FrameRowData] = []
        ended, block = False, timeout > 0
        while not self.exhausted and not ended:
            try:
                row = self._rows.get(block=block, timeout=timeout if block else None)
            except queue.Empty:
                break
            block = False
            if row is None:
                ended = True
            else:
                rows.append(row)
        self.count += len(rows)
        if rows:
            self._job.ledger.add_frames(rows)
        if ended:
            self.exhausted = True
            self._thread.join()
            if self._error is not None:
                raise self._error
            if not self._stop_requested():
                finish_preparation(self._job, self.preparation, self.count)
                if self.on_total is not None:
                    self.on_total(self.count)
        return rows

    def stop(self) -> None:
        """Stop preparing (the run ended early) and wait for the thread; what was written stays
        for the next run, which skips it."""
        self._stopped.set()
        self._thread.join()
