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
from dataclasses import asdict, dataclass
from typing import Any

import cv2
import numpy as np

from . import quality, temporal
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


@dataclass
class _Previous:
    idx: int
    source: np.ndarray
    output: np.ndarray
    signature: np.ndarray


def score_job(job: Job, on_event: EventCallback | None = None) -> dict[int, FrameScore]:
    """Score every done frame, store the scores in the ledger (frame and attempt rows), return them."""
    ensure_inputs(job, on_event)
    rows = [row for row in job.ledger.frames() if row.status == "done" and job.out_path(row.idx).exists()]
    total = len(rows)
    _event(on_event, 0, total, f"scoring {total} frames (edge fidelity, warp error)")
    measured: list[tuple[int, int, float, float | None]] = []
    distances: list[float] = []  # scene-cut distance of each measured pair ...
    pair_frames: list[int] = []  # ... and the later frame of that pair
    previous: _Previous | None = None
    for done, row in enumerate(rows, start=1):
        source, control = frame_inputs(job, row.idx)
        output = read_png(job.out_path(row.idx))
        signature = temporal.frame_signature(source)
        error: float | None = None
        if previous is not None and previous.idx == row.idx - 1:
            error = quality.warp_error(output, previous.output, link(source, previous.source))
            distances.append(float(cv2.compareHist(previous.signature, signature, cv2.HISTCMP_BHATTACHARYYA)))
            pair_frames.append(row.idx)
        measured.append((row.idx, row.attempt, edge_score(job, output, control), error))
        previous = _Previous(row.idx, source, output, signature)
        if on_event is not None and (done % 25 == 0 or done == total):
            _event(on_event, done, total, f"scoring {total} frames (edge fidelity, warp error)")
    # A new scene cannot continue the previous output; its jump is not the frame's fault.
    cuts = {pair_frames[position - 1] for position in temporal.find_cuts(np.array(distances))}
    measured = [(idx, attempt, edge, None if idx in cuts else error) for idx, attempt, edge, error in measured]
    flags = quality.find_suspects([quality.FrameScores(edge, error) for _, _, edge, error in measured])
    scores = {
        idx: FrameScore(idx, edge, error, flag, attempt)
        for (idx, attempt, edge, error), flag in zip(measured, flags, strict=True)
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
