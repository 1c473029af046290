"""Per-frame scores of a job, kept in the ledger: edge fidelity, warp error, the suspect flag.

Scoring streams through the job in frame order with two frames in memory (this one and the
previous), reading the outputs from out/ and the fitted source frames and canny maps from
src/ and control/ (rebuilt from the source video when a finished job dropped them). The
source frames' flow is estimated only for pairs of consecutive rendered frames, where a
warp error can be measured; frames that start a scene have none.
"""

from __future__ import annotations

import statistics
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from functools import cached_property
from typing import Any

import cv2
import numpy as np

from . import quality, temporal
from .frame_feed import FeedAborted, FileSignature, FrameFeed, file_signature, follower_thread, read_signed
from .imageio import read_png
from .job import Job, prepare
from .ledger import Ledger

EventCallback = Callable[[Any], None]
# How many of the worst frames the summaries name.
WORST_COUNT = 5
REPAIR_META = "repair"


@dataclass
class FrameScore:
    frame: int
    edge_fidelity: float
    warp_error: float | None  # None where a scene (or the rendered run of frames) starts
    suspect: bool
    attempt: int

    def as_ledger(self) -> dict[str, Any]:
        """The JSON the ledger keeps (frames.scores and attempts.scores)."""
        return {"edge_fidelity": self.edge_fidelity, "warp_error": self.warp_error, "suspect": self.suspect}


def _event(on_event: EventCallback | None, done: int, total: int, message: str) -> None:
    if on_event is not None:
        from .render import RenderEvent

        on_event(RenderEvent("stage", "finish", done, total, message=message))


def ensure_inputs(job: Job, on_event: EventCallback | None = None) -> None:
    """Source frames and canny maps on disk again when a finished job dropped them (as redo does)."""
    if job.prepared:
        return
    _event(on_event, 0, 0, "decoding frames and canny maps again for scoring")
    prepare(job)


def frame_inputs(job: Job, idx: int) -> tuple[np.ndarray, np.ndarray]:
    """(fitted source frame, canny map) of one frame, as RGB arrays."""
    return read_png(job.src_path(idx)), read_png(job.control_path(idx))


def link(source: np.ndarray, previous_source: np.ndarray) -> temporal.Correspondence:
    """This frame's correspondence against the previous one, from the *source* frames."""
    return temporal.correspond(source, previous_source)


def edge_score(job: Job, output: np.ndarray, control: np.ndarray) -> float:
    cn = job.spec.controlnet
    return quality.edge_fidelity(output, control, cn.low_threshold, cn.high_threshold)


class _Frame:
    """One done frame's inputs and output, each read from disk the first time it is needed."""

    def __init__(self, job: Job, idx: int, signed: bool = False) -> None:
        self.job, self.idx = job, idx
        self._output: np.ndarray | None = None
        # A follower reads the output at once, with the signature of exactly what it read.
        self._signature: FileSignature | None = None
        if signed:
            self._output, self._signature = read_signed(job.out_path(idx))

    @property
    def signature(self) -> FileSignature:
        if self._signature is None:
            self._signature = file_signature(self.job.out_path(self.idx))
        return self._signature

    @property
    def output(self) -> np.ndarray:
        if self._output is None:
            self._output = read_png(self.job.out_path(self.idx))
        return self._output

    @cached_property
    def inputs(self) -> tuple[np.ndarray, np.ndarray]:
        return frame_inputs(self.job, self.idx)

    @cached_property
    def source_signature(self) -> np.ndarray:
        return temporal.frame_signature(self.inputs[0])


@dataclass
class Measurements:
    """What scoring measured, and of which output files: a frame measured while the job rendered
    is not measured again at the finish unless its output (or its predecessor's) changed since."""

    edges: dict[int, tuple[FileSignature, float]] = field(default_factory=dict)
    # frame -> (previous frame's output, this frame's output, warp error between them)
    pairs: dict[int, tuple[FileSignature, FileSignature, float | None]] = field(default_factory=dict)
    # frame -> scene-cut distance from the previous source frame (sources never change)
    distances: dict[int, float] = field(default_factory=dict)

    def measure(self, job: Job, frame: _Frame, previous: _Frame | None) -> tuple[float, float | None, float | None]:
        """(edge fidelity, warp error, scene-cut distance) of a frame; the last two need its predecessor."""
        known_edge = self.edges.get(frame.idx)
        if known_edge is not None and known_edge[0] == frame.signature:
            edge = known_edge[1]
        else:
            edge = edge_score(job, frame.output, frame.inputs[1])
            self.edges[frame.idx] = (frame.signature, edge)
        if previous is None or previous.idx != frame.idx - 1:
            return edge, None, None
        known_pair = self.pairs.get(frame.idx)
        error: float | None
        if known_pair is not None and known_pair[:2] == (previous.signature, frame.signature):
            error = known_pair[2]
        else:
            error = quality.warp_error(frame.output, previous.output, link(frame.inputs[0], previous.inputs[0]))
            self.pairs[frame.idx] = (previous.signature, frame.signature, error)
        distance = self.distances.get(frame.idx)
        if distance is None:
            distance = float(
                cv2.compareHist(previous.source_signature, frame.source_signature, cv2.HISTCMP_BHATTACHARYYA)
            )
            self.distances[frame.idx] = distance
        return edge, error, distance


class ScoreFollower:
    """Measures each frame on its own thread as soon as it and its predecessor are done, so the
    finish stage only reads the measurements (and measures what changed since, e.g. by repair)."""

    def __init__(self, job: Job, feed: FrameFeed) -> None:
        self.measurements = Measurements()
        self._job, self._feed = job, feed
        self._thread = follower_thread(self._run, name="vidstyle-scores")
        self._thread.start()

    def _run(self) -> None:
        previous: _Frame | None = None
        try:
            for idx in self._feed.iter_done():
                frame = _Frame(self._job, idx, signed=True)
                self.measurements.measure(self._job, frame, previous)
                previous = frame
        except FeedAborted:
            return
        except Exception:  # noqa: BLE001 - the finish stage measures the frame again and reports the error
            return

    def join(self) -> Measurements:
        """Wait until every frame so far is measured (or the feed was aborted); the measurements."""
        self._thread.join()
        return self.measurements


def score_job(
    job: Job, on_event: EventCallback | None = None, measured: Measurements | None = None
) -> dict[int, FrameScore]:
    """Score every done frame, store the scores in the ledger (frame and attempt rows), return them.

    `measured`: what a ScoreFollower (or an earlier call) measured; only frames whose output
    changed since are read and measured again.
    """
    ensure_inputs(job, on_event)
    measured = measured if measured is not None else Measurements()
    rows = [row for row in job.ledger.frames() if row.status == "done" and job.out_path(row.idx).exists()]
    total = len(rows)
    _event(on_event, 0, total, f"scoring {total} frames (edge fidelity, warp error)")
    results: list[tuple[int, int, float, float | None]] = []
    distances: list[float] = []  # scene-cut distance of each measured pair ...
    pair_frames: list[int] = []  # ... and the later frame of that pair
    previous: _Frame | None = None
    for done, row in enumerate(rows, start=1):
        frame = _Frame(job, row.idx)
        edge, error, distance = measured.measure(job, frame, previous)
        if distance is not None:
            distances.append(distance)
            pair_frames.append(row.idx)
        results.append((row.idx, row.attempt, edge, error))
        previous = frame
        if on_event is not None and (done % 25 == 0 or done == total):
            _event(on_event, done, total, f"scoring {total} frames (edge fidelity, warp error)")
    # A new scene cannot continue the previous output; its jump is not the frame's fault.
    cuts = {pair_frames[position - 1] for position in temporal.find_cuts(np.array(distances))}
    results = [(idx, attempt, edge, None if idx in cuts else error) for idx, attempt, edge, error in results]
    flags = quality.find_suspects([quality.FrameScores(edge, error) for _, _, edge, error in results])
    scores = {
        idx: FrameScore(idx, edge, error, flag, attempt)
        for (idx, attempt, edge, error), flag in zip(results, flags, strict=True)
    }
    store_scores(job, scores.values())
    return scores


def store_scores(job: Job, scores: Any) -> None:
    with job.ledger.transaction():
        for score in scores:
            job.ledger.set_scores(score.frame, score.as_ledger())
            job.ledger.set_attempt_scores(score.frame, score.attempt, score.as_ledger())


def load_scores(job: Job) -> dict[int, FrameScore]:
    """The scores the ledger holds, by frame (frames never scored are absent)."""
    return ledger_scores(job.ledger)


def ledger_scores(ledger: Ledger) -> dict[int, FrameScore]:
    return {
        idx: FrameScore(
            idx,
            float(data.get("edge_fidelity", 0.0)),
            data.get("warp_error"),
            bool(data.get("suspect", False)),
            attempt,
        )
        for idx, (attempt, data) in ledger.all_scores().items()
    }


def worst_frames(scores: dict[int, FrameScore], count: int = WORST_COUNT) -> list[int]:
    """The frames furthest from the job's own norm (poor edges or a large jump), worst first."""
    ordered = sorted(scores.values(), key=lambda s: s.frame)
    edges = quality.robust_z([s.edge_fidelity for s in ordered])
    warps = np.nan_to_num(quality.robust_z([s.warp_error for s in ordered]), nan=0.0)
    badness = {s.frame: max(-float(e), float(w)) for s, e, w in zip(ordered, edges, warps, strict=True)}
    # Ties (a short job has no statistics) fall back to the plain edge fidelity.
    return sorted(badness, key=lambda f: (-badness[f], scores[f].edge_fidelity))[:count]


def scores_summary(job: Job) -> dict[str, Any]:
    """What the CLI, the API status and the tab show: suspects, repaired frames, means, worst frames."""
    return ledger_summary(job.ledger)


def ledger_summary(ledger: Ledger) -> dict[str, Any]:
    scores = ledger_scores(ledger)
    repair = ledger.get_meta(REPAIR_META, {}) or {}
    edges = [s.edge_fidelity for s in scores.values()]
    warps = [s.warp_error for s in scores.values() if s.warp_error is not None]
    return {
        "scored": len(scores),
        "suspects": sorted(f for f, s in scores.items() if s.suspect),
        "repaired": sorted(repair.get("repaired", [])),
        "repair_tried": sorted(repair.get("tried", [])),
        "mean_edge_fidelity": statistics.fmean(edges) if edges else None,
        "mean_warp_error": statistics.fmean(warps) if warps else None,
        "worst": [asdict(scores[f]) for f in worst_frames(scores)] if scores else [],
    }


def describe_summary(summary: dict[str, Any]) -> str:
    """One line for the CLI and the tab."""
    if not summary["scored"]:
        return "scores: none yet"
    suspects = summary["suspects"]
    text = f"scores: {len(suspects)} suspect frame(s)"
    if suspects:
        text += f" ({_frames(suspects)})"
    if summary["repair_tried"]:
        text += f", {len(summary['repaired'])} of {len(summary['repair_tried'])} repaired"
        if summary["repaired"]:
            text += f" ({_frames(summary['repaired'])})"
    text += f"; mean edge fidelity {summary['mean_edge_fidelity']:.3f}"
    if summary["mean_warp_error"] is not None:
        text += f", mean warp error {summary['mean_warp_error']:.4f}"
    if summary["worst"]:
        text += "; worst: " + ", ".join(f"{w['frame']} (edges {w['edge_fidelity']:.2f})" for w in summary["worst"][:3])
    return text


def _frames(frames: list[int], limit: int = 12) -> str:
    shown = ", ".join(map(str, frames[:limit]))
    return shown + (f", ... {len(frames) - limit} more" if len(frames) > limit else "")
