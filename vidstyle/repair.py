"""Automatic repair: render suspect (or hand-picked) frames again and keep the best attempt.

Each attempt is a redo (render.schedule_redo + render.render_pending, the one frame loop)
with the settings of one step of the job's `repair.schedule`. Every attempt's file stays in
history/ and its settings and scores in the ledger's attempts rows; the best one is copied
back into out/ (atomically) and becomes the frame's current attempt.

"Best" is judged against the job's own distribution, as the suspect flag is: an attempt's
badness is its worst robust z-score among poor edge fidelity and a large warp error towards
either neighbour's current output.

In a flow chain (or a keyframe segment) a frame's attempts are judged by its own edges and
its continuity with the frame before; once one is kept, the frames made from its output are
rendered again from it (render.schedule_followers), once per repair rather than per attempt.
"""

from __future__ import annotations

import shutil
import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from . import atomic, quality
from .backends.base import Backend
from .errors import SpecError
from .events import EventCallback
from .imageio import read_png
from .job import Job
from .render import (
    CancelToken,
    RenderEvent,
    chain_followers,
    render_pending,
    schedule_followers,
    schedule_redo,
)
from .scores import (
    REPAIR_META,
    FrameScore,
    Measurements,
    edge_score,
    frame_inputs,
    link,
    load_scores,
    score_job,
)
from .spec import JobSpec, RepairStep, repair_schedule_problem


def _noop(event: RenderEvent) -> None:
    return None


@dataclass
class RepairResult:
    tried: list[int] = field(default_factory=list)
    repaired: dict[int, int] = field(default_factory=dict)  # frame -> the attempt now kept (better than before)
    attempts: dict[int, int] = field(default_factory=dict)  # frame -> attempts rendered by this repair
    failed: dict[int, str] = field(default_factory=dict)  # frame -> last render error (its best attempt is kept)
    followers: list[int] = field(default_factory=list)  # frames made again from a repaired frame's output


def attempt_steps(spec: JobSpec, count: int | None = None) -> list[RepairStep]:
    """The steps of `count` attempts (default repair.max_attempts); past the schedule the last repeats, reseeded."""
    schedule = spec.repair.schedule
    count = spec.repair.max_attempts if count is None else count
    steps = list(schedule[:count])
    while len(steps) < count:  # the same settings again are worth trying only with a new sample
        steps.append(schedule[-1].copy(update={"new_seed": True}))
    return steps


def step_overrides(spec: JobSpec, step: RepairStep) -> dict[str, Any]:
    """Redo overrides of one step, relative to the job's settings. A new seed comes from the attempt number."""
    overrides: dict[str, Any] = {}
    if not step.new_seed:
        overrides["sampling.seed"] = spec.sampling.seed
    if step.denoise_delta:
        overrides["sampling.denoise"] = round(spec.sampling.denoise + step.denoise_delta, 6)
    if step.controlnet_weight_delta:
        overrides["controlnet.weight"] = round(spec.controlnet.weight + step.controlnet_weight_delta, 6)
    if step.cfg_scale_delta:
        overrides["sampling.cfg_scale"] = round(spec.sampling.cfg_scale + step.cfg_scale_delta, 6)
    return overrides


class _Judge:
    """Badness of an attempt against the job's score distribution (lower is better)."""

    def __init__(self, scores: dict[int, FrameScore]) -> None:
        self.edges = [s.edge_fidelity for s in scores.values()]
        self.warps = [s.warp_error for s in scores.values() if s.warp_error is not None]

    def key(self, edge: float, warps: list[float | None]) -> tuple[float, float]:
        known = [w for w in warps if w is not None]
        z = -float(quality.robust_z(self.edges + [edge])[-1])
        for error in known:
            z = max(z, float(quality.robust_z(self.warps + [error])[-1]))
        # A short job has no statistics (all z are 0): fall back to the plain figures.
        return (round(z, 6), -edge + (sum(known) / len(known) if known else 0.0))


class _Neighbours:
    """A frame's links to its neighbours (source flow), computed once per repaired frame."""

    def __init__(self, job: Job, scores: dict[int, FrameScore]) -> None:
        self.job = job
        self.scores = scores
        self._cache: dict[int, tuple[np.ndarray, Any | None, Any | None]] = {}

    def _judged_by_next(self, idx: int) -> bool:
        """Whether the next output may judge this frame: not when it was made from this frame's
        output (a flow chain), since it then carries the very attempt being replaced."""
        return self._linked(idx + 1) and not chain_followers(self.job, [idx])

    def _linked(self, later: int) -> bool:
        """Whether frame `later` continues `later - 1` (both scored, no scene cut between)."""
        score = self.scores.get(later)
        return score is not None and later - 1 in self.scores and score.warp_error is not None

    def get(self, idx: int) -> tuple[np.ndarray, Any | None, Any | None]:
        if idx not in self._cache:
            source, control = frame_inputs(self.job, idx)
            to_previous = link(source, read_png(self.job.src_path(idx - 1))) if self._linked(idx) else None
            from_next = link(read_png(self.job.src_path(idx + 1)), source) if self._judged_by_next(idx) else None
            self._cache[idx] = (control, to_previous, from_next)
        return self._cache[idx]

    def measure(self, idx: int, output: np.ndarray) -> tuple[float, float | None, float | None]:
        """(edge fidelity, warp error from the previous output, warp error of the next output onto this one)."""
        control, to_previous, from_next = self.get(idx)
        before = quality.warp_error(output, read_png(self.job.out_path(idx - 1)), to_previous) if to_previous else None
        after = quality.warp_error(read_png(self.job.out_path(idx + 1)), output, from_next) if from_next else None
        return edge_score(self.job, output, control), before, after


def _keep_in_history(job: Job, idx: int, attempt: int) -> str:
    """Copy the current output of an attempt into history/ (if not there yet); its path in the job."""
    history = job.history_path(idx, attempt)
    history.parent.mkdir(exist_ok=True)
    if not history.exists():
        with atomic.atomic_path(history) as tmp:
            shutil.copy2(job.out_path(idx), tmp)
    kept_as = str(history.relative_to(job.root))
    job.ledger.set_kept_as(idx, attempt, kept_as)
    return kept_as


def _restore(job: Job, idx: int, attempt: int) -> None:
    """Put an attempt kept in history/ back into out/ (atomic rename) and make it current in the ledger."""
    with atomic.atomic_path(job.out_path(idx)) as tmp:
        shutil.copy2(job.history_path(idx, attempt), tmp)
    job.ledger.keep_attempt(idx, attempt)


def repair_frames(
    job: Job,
    backend: Backend,
    frames: list[int],
    on_event: EventCallback = _noop,
    cancel: CancelToken | None = None,
    stop_when_good: bool = True,
    attempts: int | None = None,
) -> RepairResult:
    """Render `frames` again with the job's repair schedule and keep each one's best attempt.

    With `stop_when_good`, a frame gets no more attempts once one is no longer an outlier
    (automatic repair); without it every step runs (a hand-picked redo: the best of N).
    """
    problem = repair_schedule_problem(job.spec.sampling, job.spec.controlnet, job.spec.repair.schedule)
    if problem:
        raise SpecError(f"The job's {problem} in job.toml.")
    result = RepairResult(tried=sorted(frames))
    if not frames:
        return result
    scores = load_scores(job)
    if any(idx not in scores for idx in frames):
        scores = score_job(job, on_event)
    judge, neighbours = _Judge(scores), _Neighbours(job, scores)
    original = {idx: job.ledger.frame(idx).attempt for idx in frames}
    keys: dict[int, dict[int, tuple[float, float]]] = {}
    for idx in frames:
        edge, before, after = neighbours.measure(idx, read_png(job.out_path(idx)))
        keys[idx] = {original[idx]: judge.key(edge, [before, after])}
    todo = list(frames)
    steps = attempt_steps(job.spec, attempts)
    for number, step in enumerate(steps, start=1):
        if stop_when_good and number > 1:  # every frame gets one attempt; more only while still an outlier
            todo = [idx for idx in todo if min(keys[idx].values())[0] > quality.SUSPECT_Z]
        if not todo:
            break
        on_event(RenderEvent("stage", "finish", message=f"repair attempt {number}/{len(steps)}: {len(todo)} frame(s)"))
        schedule_redo(job, todo, step_overrides(job.spec, step))
        summary = render_pending(job, backend, on_event, cancel)
        for idx in todo:
            row = job.ledger.frame(idx)
            if idx in summary.failed:
                result.failed[idx] = summary.failed[idx]
                continue
            result.attempts[idx] = result.attempts.get(idx, 0) + 1
            edge, before, after = neighbours.measure(idx, read_png(job.out_path(idx)))
            keys[idx][row.attempt] = judge.key(edge, [before, after])
            score = FrameScore(idx, edge, before, keys[idx][row.attempt][0] > quality.SUSPECT_Z, row.attempt)
            job.ledger.set_attempt_scores(idx, row.attempt, score.as_ledger())
            _keep_in_history(job, idx, row.attempt)
    for idx in frames:
        _settle(job, idx, keys[idx], original[idx], result)
    # Frames made from a changed frame's output (its flow chain, keyframe fills) are made again from it.
    followers = schedule_followers(job, sorted(result.repaired))
    if followers:
        on_event(
            RenderEvent(
                "stage",
                "finish",
                message=f"repair: re-rendering {len(followers)} frame(s) that follow the repaired ones",
            )
        )
        render_pending(job, backend, on_event, cancel)
        result.followers = followers
    _record(job, result)
    return result


def _settle(job: Job, idx: int, keys: dict[int, tuple[float, float]], original: int, result: RepairResult) -> None:
    """Keep the best rendered attempt of a frame in out/; every attempt stays in history/."""
    row = job.ledger.frame(idx)
    best = min(keys, key=lambda attempt: (keys[attempt], attempt))
    if row.status == "done" and job.out_path(idx).exists():
        _keep_in_history(job, idx, row.attempt)
    if best != row.attempt or row.status != "done":
        _restore(job, idx, best)
    if best != original:
        result.repaired[idx] = best


def _record(job: Job, result: RepairResult) -> None:
    """Which frames repair tried and which it changed, for the summaries and the report."""
    before = job.ledger.get_meta(REPAIR_META, {}) or {}
    repaired = (set(before.get("repaired", [])) - set(result.tried)) | set(result.repaired)
    job.ledger.set_meta(
        REPAIR_META,
        {
            "tried": sorted(set(before.get("tried", [])) | set(result.tried)),
            "repaired": sorted(
                repaired
            ),  # frames whose kept attempt is a repair's (before/after in the ledger's attempts)
            "followers": sorted(set(result.followers)),
            "at": time.time(),
        },
    )


def repair_job(
    job: Job,
    backend: Backend,
    on_event: EventCallback = _noop,
    cancel: CancelToken | None = None,
    attempts: int | None = None,
    measured: Measurements | None = None,
) -> RepairResult:
    """Score the job, repair its suspect frames, then score it again (the flags the summaries show).
    `measured`: what was measured while rendering; only changed frames are measured again."""
    scores = score_job(job, on_event, measured)
    suspects = sorted(idx for idx, score in scores.items() if score.suspect)
    if not suspects:
        on_event(RenderEvent("stage", "finish", message="repair: no suspect frames"))
        _record(job, RepairResult())
        return RepairResult()
    result = repair_frames(job, backend, suspects, on_event, cancel, stop_when_good=True, attempts=attempts)
    score_job(job, on_event, measured)
    return result
