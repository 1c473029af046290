"""Coherence modes in the render loop: which frame depends on which, and how each frame's init is made.

The plan is a pure function of the spec's `coherence` section, the frame count and the scene
cuts (detected once from the prepared source frames and kept in the ledger). A frame's output
is then a pure function of (spec, frame index, attempt) and the outputs of the frames it
depends on, read back from their PNGs: so `resume` after a kill gives the same pixels as an
uninterrupted run in every mode, and the render loop may run any frame whose dependencies
are done, in parallel across backend slots.

* independent: no dependencies (except a colour reference).
* flow: a chain per scene; frame t starts from output t-1 warped onto it.
* keyframes: every Kth frame of a scene (and its last) renders alone; the frames between are
  filled from both neighbouring keyframes, and go to img2img when too little is covered.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from itertools import pairwise
from typing import TYPE_CHECKING, Any

import numpy as np

from . import temporal
from .spec import CoherenceSpec, JobSpec

if TYPE_CHECKING:  # flow_prefetch imports this module for FrameStep
    from .flow_prefetch import SourceFlows

ImageReader = Callable[[int], np.ndarray]


@dataclass(frozen=True)
class FrameStep:
    """How one frame is made, and from which other frames' outputs."""

    idx: int
    how: str  # "alone" | "flow" | "keyframe" | "between"
    previous: int | None = None  # flow: the chain's frame before this one
    before: int | None = None  # between: the keyframes on either side
    after: int | None = None
    colour_ref: int | None = None  # whose colours a rendered output is matched to

    @property
    def deps(self) -> tuple[int, ...]:
        return tuple(sorted({d for d in (self.previous, self.before, self.after, self.colour_ref) if d is not None}))


@dataclass
class CoherencePlan:
    steps: list[FrameStep]
    scenes: list[tuple[int, int]]  # [start, end) of each scene
    notes: list[str] = field(default_factory=list)  # fallbacks the job report states

    def followers(self, frames: Iterable[int]) -> list[int]:
        """Frames whose output depends, directly or through others, on any of `frames` (not those themselves)."""
        dependents: dict[int, list[int]] = defaultdict(list)
        for step in self.steps:
            for dep in step.deps:
                dependents[dep].append(step.idx)
        start = set(frames)
        seen: set[int] = set()
        todo = list(start)
        while todo:
            for nxt in dependents.get(todo.pop(), []):
                if nxt not in seen:
                    seen.add(nxt)
                    todo.append(nxt)
        return sorted(seen - start)


def scene_ranges(count: int, cuts: Sequence[int]) -> list[tuple[int, int]]:
    bounds = [0] + sorted(c for c in set(cuts) if 0 < c < count) + [count]
    return [(a, b) for a, b in pairwise(bounds) if b > a]


def _keyframes(start: int, end: int, interval: int, with_last: bool) -> list[int]:
    keys = list(range(start, end, interval))
    if with_last and keys[-1] != end - 1:
        keys.append(end - 1)
    return keys


def _colour_ref(coh: CoherenceSpec, t: int, start: int, keys: Sequence[int]) -> int | None:
    if coh.color_match == "off" or t == start:
        return None
    if coh.color_match == "first_frame":
        return start
    latest = max(k for k in keys if k <= t)
    # A keyframe itself is matched to its scene's first frame, so keyframes do not drift apart.
    return start if latest == t else latest


def plan_frames(coh: CoherenceSpec, count: int, cuts: Sequence[int]) -> CoherencePlan:
    """The steps of every frame; settings that cannot apply as given fall back and say so in `notes`."""
    scenes = scene_ranges(count, cuts)
    notes: list[str] = []
    mode = coh.mode
    k = coh.keyframe_interval
    if mode != "independent" and count == 1:
        notes.append(
            f"The clip has one frame, so {mode} mode has nothing to carry over; the frame was rendered on its own."
        )
    elif mode == "keyframes" and k >= count:
        notes.append(
            f"The keyframe interval ({k}) is not shorter than the clip ({count} frames); "
            "only its first and last frames were keyframes."
        )
    single = sum(1 for a, b in scenes if b - a == 1)
    if mode != "independent" and count > 1 and single:
        notes.append(f"{single} scene(s) of one frame (between scene cuts) were rendered on their own.")
    if count > 2 and len(scenes) > count // 2:
        notes.append(
            f"Scene-cut detection split the clip into {len(scenes)} scenes of {count} frames; if the clip "
            "is one shot, raise coherence.scene_cut_z or turn coherence.scene_cuts off."
        )
    steps: list[FrameStep] = []
    for start, end in scenes:
        keys = _keyframes(start, end, k, with_last=mode == "keyframes")
        keyset = set(keys)
        for t in range(start, end):
            ref = _colour_ref(coh, t, start, keys)
            if mode == "flow" and t > start:
                steps.append(FrameStep(t, "flow", previous=t - 1, colour_ref=ref))
            elif mode == "keyframes" and t not in keyset:
                before = max(x for x in keys if x < t)
                after = min(x for x in keys if x > t)
                steps.append(FrameStep(t, "between", before=before, after=after, colour_ref=ref))
            else:
                steps.append(FrameStep(t, "keyframe" if mode == "keyframes" else "alone", colour_ref=ref))
    return CoherencePlan(steps=steps, scenes=scenes, notes=notes)


def needs_scenes(spec: JobSpec) -> bool:
    """Whether scene cuts change anything: chains or colour references, or the deflicker's windows."""
    coh = spec.coherence
    return coh.scene_cuts and (coh.mode != "independent" or coh.color_match != "off" or coh.deflicker)


def detect_cuts(frames: Iterable[np.ndarray], z: float) -> list[int]:
    """Frame indices where a new scene starts; reads one frame at a time (a long job stays small)."""
    return temporal.find_cuts(temporal.cut_distances([temporal.frame_signature(f) for f in frames]), z)


@dataclass
class FrameInputs:
    """What the render loop sends to img2img for one frame, or the finished frame when no call is needed."""

    init: np.ndarray
    denoise: float
    finished: np.ndarray | None = None  # a keyframe fill that covers enough: kept as the output
    info: dict[str, Any] = field(default_factory=dict)  # for the ledger: how the frame was made
    source: np.ndarray | None = None  # the frame's source pixels, when already decoded here


def flow_denoise(spec: JobSpec) -> float:
    """The denoise of flow-guided frames: coherence.flow_denoise, or one sampling step's worth when
    that runs none (img2img runs int(steps x denoise) steps; a job of few steps, e.g. a quick test)."""
    steps, wanted = spec.sampling.steps, spec.coherence.flow_denoise
    return wanted if int(steps * wanted) >= 1 else min(1.0, float(np.ceil(100.0 / steps)) / 100.0)


def flow_denoise_note(spec: JobSpec) -> str | None:
    used = flow_denoise(spec)
    if spec.coherence.mode == "independent" or used == spec.coherence.flow_denoise:
        return None
    return (
        f"coherence.flow_denoise {spec.coherence.flow_denoise} runs no sampling step at {spec.sampling.steps} "
        f"steps, so flow-guided frames used denoise {used:.2f} (one step)."
    )


def frame_inputs(
    step: FrameStep,
    spec: JobSpec,
    read_src: ImageReader,
    read_out: ImageReader,
    force_render: bool = False,
    flows: SourceFlows | None = None,
) -> FrameInputs:
    """The init image and denoise for a frame (or its finished fill); `force_render`: never keep a fill
    (a redo of an in-between frame asks for a new sample, not the same fill again); `flows`: source
    links estimated ahead (`flow_prefetch.SourceFlows`), the same pixels as computing them here."""
    coh = spec.coherence
    if step.how == "flow":
        assert step.previous is not None
        prepared = _flow_init(step, coh.source_mix, read_src, flows)
        return FrameInputs(
            prepared.init(read_out(step.previous)),
            flow_denoise(spec),
            info={"made_by": "img2img", "coherence": "flow", "coverage": round(prepared.coverage, 4)},
            source=prepared.source,
        )
    source = read_src(step.idx)

    def link_to(reference: int) -> temporal.Correspondence:
        if flows is not None:
            return flows.get(step.idx, reference)
        return temporal.correspond(source, read_src(reference))

    if step.how == "between":
        assert step.before is not None and step.after is not None
        position = (step.idx - step.before) / (step.after - step.before)
        to_before = link_to(step.before)
        to_after = link_to(step.after)
        fill = temporal.fill_between(source, position, read_out(step.before), to_before, read_out(step.after), to_after)
        info: dict[str, Any] = {"coherence": "keyframes", "coverage": round(fill.coverage, 4)}
        if fill.coverage >= coh.coverage_threshold and not force_render:
            return FrameInputs(fill.image, flow_denoise(spec), finished=fill.image, info={**info, "made_by": "fill"})
        # Large occlusions (or a redo): img2img repaints from the fill, gently, as a flow frame.
        return FrameInputs(fill.image, flow_denoise(spec), info={**info, "made_by": "img2img"})
    return FrameInputs(source, spec.sampling.denoise, info={"made_by": "img2img", "coherence": step.how})


def _flow_init(
    step: FrameStep, source_mix: float, read_src: ImageReader, flows: SourceFlows | None
) -> temporal.FlowInit:
    assert step.previous is not None
    if flows is not None:
        return flows.flow_init(step.idx, step.previous, source_mix)
    source = read_src(step.idx)
    return temporal.prepare_flow_init(temporal.correspond(source, read_src(step.previous)), source, source_mix)


def match_output(image: np.ndarray, step: FrameStep, spec: JobSpec, read_out: ImageReader) -> np.ndarray:
    """A rendered output with its colours matched to the step's reference frame (if any)."""
    if step.colour_ref is None:
        return image
    return temporal.match_colors(image, read_out(step.colour_ref), spec.coherence.color_match_strength)


# --------------------------------------------------------------------------- the job's plan

SCENE_CUTS_META = "scene_cuts"
NOTES_META = "coherence_notes"
# {frame: attempt} of attempts opened only because a frame they depend on was redone: an
# in-between frame among them is filled again rather than sent to img2img.
FOLLOWERS_META = "follower_attempts"


def scene_cuts(job: Any) -> list[int]:
    """The job's scene cuts, detected once from its prepared source frames and kept in the ledger,
    so every later run (resume, redo) splits the job into the same chains."""
    if not needs_scenes(job.spec):
        return []
    from .imageio import read_png

    count = job.ledger.frame_count()
    key = {
        "z": job.spec.coherence.scene_cut_z,
        "frames": count,
        "source": job.spec.source.dict(),
        "size": job.spec.size.dict(),
    }
    stored = job.ledger.get_meta(SCENE_CUTS_META)
    if isinstance(stored, dict) and stored.get("key") == key:
        return [int(c) for c in stored["cuts"]]
    cuts = detect_cuts((read_png(job.src_path(i)) for i in range(count)), job.spec.coherence.scene_cut_z)
    job.ledger.set_meta(SCENE_CUTS_META, {"key": key, "cuts": cuts})
    return cuts


def job_plan(job: Any) -> CoherencePlan:
    """The plan of a prepared job; its fallback notes are kept in the ledger for the report."""
    plan = plan_frames(job.spec.coherence, job.ledger.frame_count(), scene_cuts(job))
    note = flow_denoise_note(job.spec)
    if note:
        plan.notes.append(note)
    if job.ledger.get_meta(NOTES_META) != plan.notes:
        job.ledger.set_meta(NOTES_META, plan.notes)
    return plan


def job_scenes(job: Any) -> list[tuple[int, int]]:
    """Scenes for the deflicker pass: the stored cuts (a finished job's src/ may be gone)."""
    stored = job.ledger.get_meta(SCENE_CUTS_META)
    cuts = stored["cuts"] if isinstance(stored, dict) and job.spec.coherence.scene_cuts else []
    return scene_ranges(job.ledger.frame_count(), cuts)
