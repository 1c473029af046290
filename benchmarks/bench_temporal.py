"""Temporal coherence: flow cost and accuracy, and what `flow` / `keyframes` chains buy over `independent`.

1. DIS optical flow at 512x512 per preset and scale: ms per flow, end-point error on known
   motion (pan, zoom, a moving square) and how much of the square's disoccluded strip the
   forward-backward check finds; then warp and occlusion cost at the default settings.
2. The three coherence modes simulated on the project's clips with known motion through the
   SIMULATED img2img backend (vidstyle/backends/simulated.py): warp error and edge fidelity
   relative to `independent`, and img2img calls per frame. The chains are written here with
   vidstyle.temporal only, the way the render loop will run them.
3. Automatic repair's detection: frames deliberately broken (wrong seed, denoise 1.0) among
   good ones; share found by `quality.find_suspects`, and false alarms.

Goals (issue 12): flow <= 15 ms per 512x512 pair; `flow` <= 0.6x independent warp error at
>= 0.95x its edge fidelity; `keyframes` <= 0.5x at >= 0.9x with <= 0.25x the calls;
repair finds >= 90 % of broken frames with <= 5 % false alarms.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))

import media  # tests/media.py: the test clip (pan + zoom texture, walking figure)
import motion_media as mm  # tests/motion_media.py: pan, zoom, moving square

from vidstyle import quality, temporal
from vidstyle.backends.base import Img2ImgRequest
from vidstyle.backends.simulated import SimulatedImg2ImgBackend
from vidstyle.control import canny_map
from vidstyle.spec import ControlNetSpec
from vidstyle.synthetic import draw_scene

SIZE = 512
SEED = 1234
WRONG_SEED = 987_654


def timed(run: Callable[[], object], repeat: int) -> tuple[float, float]:
    """(median, fastest) ms of `repeat` runs; the fastest is the figure least moved by other load."""
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        run()
        times.append((time.perf_counter() - start) * 1000.0)
    return statistics.median(times), min(times)


def epe(flow: np.ndarray, truth: np.ndarray) -> float:
    return float(np.sqrt(((flow - truth) ** 2).sum(axis=-1))[16:-16, 16:-16].mean())


# --------------------------------------------------------------------------- 1. flow


def flow_table(repeat: int) -> None:
    pan = mm.pan_frames(2, SIZE, (6, 2))
    zoom = mm.zoom_frames(2, SIZE, 0.02)
    side, step = 160, 12
    square, lefts = mm.square_frames(2, SIZE, side=side, step=step, start=80)
    top = SIZE // 2 - side // 2
    square_truth = np.zeros((SIZE, SIZE, 2), np.float32)
    square_truth[top : top + side, lefts[1] : lefts[1] + side, 0] = -step
    trailing = np.zeros((SIZE, SIZE), bool)
    trailing[top : top + side, lefts[0] : lefts[0] + step] = True
    print(f"1. DIS flow, {SIZE}x{SIZE} (one flow = one direction; a correspondence needs two)")
    print(
        f"{'preset':<10} {'scale':>5} {'ms med':>7} {'ms min':>7} {'EPE pan':>8} {'zoom':>6} {'square':>7} "
        f"{'disocc. found':>14} {'extra':>6}"
    )
    for preset in temporal.PRESETS:
        for scale in (1.0, 0.5, 0.25):
            med, fast = timed(lambda s=scale, p=preset: temporal.estimate_flow(square[1], square[0], s, p), repeat)
            corr = temporal.correspond(square[1], square[0], scale, preset)
            found = (corr.occluded & trailing).sum() / trailing.sum()
            extra = (corr.occluded & ~trailing).sum() / trailing.sum()
            print(
                f"{preset:<10} {scale:>5} {med:7.1f} {fast:7.1f} "
                f"{epe(temporal.estimate_flow(pan[1], pan[0], scale, preset), np.float32([6, 2])):8.3f} "
                f"{epe(temporal.estimate_flow(zoom[1], zoom[0], scale, preset), mm.zoom_flow(SIZE, 0.02)):6.3f} "
                f"{epe(temporal.estimate_flow(square[1], square[0], scale, preset), square_truth):7.3f} "
                f"{found:13.0%} {extra:6.2f}"
            )
    default = temporal.auto_scale(SIZE, SIZE)
    print(f"default: preset {temporal.DEFAULT_PRESET}, scale {default} (auto_scale for {SIZE}x{SIZE})")
    med, fast = timed(lambda: temporal.estimate_flow(square[1], square[0]), repeat)
    print(f"  flow, one 512x512 pair:               {med:6.1f} ms median, {fast:6.1f} ms fastest  (goal <= 15)")
    flow = temporal.estimate_flow(square[1], square[0])
    med, fast = timed(lambda: temporal.warp(square[0], flow), repeat)
    print(f"  warp of an RGB frame:                 {med:6.1f} ms median, {fast:6.1f} ms fastest")
    # correspond() checks consistency at the flow's working size; time that step alone there.
    small = [cv2.resize(f, None, fx=default, fy=default, interpolation=cv2.INTER_AREA) for f in square]
    there, back = temporal.estimate_flow(small[1], small[0], 1.0), temporal.estimate_flow(small[0], small[1], 1.0)
    med, fast = timed(lambda: temporal.occlusion_mask(there, back, True, small[1], small[0]), repeat)
    print(
        f"  occlusion check at {small[0].shape[1]}x{small[0].shape[0]} (flows given): {med:6.1f} ms median, "
        f"{fast:6.1f} ms fastest"
    )
    med, fast = timed(lambda: temporal.correspond(square[1], square[0]), repeat)
    print(f"  correspond (2 flows + occlusion):     {med:6.1f} ms median, {fast:6.1f} ms fastest")


# --------------------------------------------------------------------------- 2. chains


@dataclass
class Clip:
    name: str
    frames: list[np.ndarray]
    control: list[np.ndarray]
    to_previous: list[temporal.Correspondence | None]  # frame t against t-1 (source flow)


def make_clip(name: str, frames: list[np.ndarray]) -> Clip:
    control = [canny_map(frame, 100, 200) for frame in frames]
    links = [None] + [temporal.correspond(frames[t], frames[t - 1]) for t in range(1, len(frames))]
    return Clip(name, frames, control, links)


def project_clips(count: int) -> list[Clip]:
    step = min(6, (SIZE - 200) // max(1, count - 1))  # stays inside the frame for long runs
    square, _ = mm.square_frames(count, SIZE, side=160, step=step, start=20)
    return [
        make_clip("demo scene (pan + dancer)", [draw_scene(t / 30.0, SIZE, SIZE) for t in range(count)]),
        make_clip("test clip (pan/zoom + walker)", [media.draw_frame(t, t / 30.0, (SIZE, SIZE)) for t in range(count)]),
        make_clip("moving square", square),
    ]


class Renderer:
    """img2img through the simulated backend, counting calls (the render loop's Backend call)."""

    def __init__(self) -> None:
        self.backend = SimulatedImg2ImgBackend()

    def __call__(
        self, init: np.ndarray, control: np.ndarray, index: int, denoise: float, seed: int = SEED
    ) -> np.ndarray:
        from PIL import Image

        request = Img2ImgRequest(
            frame_index=index,
            init_image=Image.fromarray(init),
            control_image=Image.fromarray(control),
            prompt="",
            negative_prompt="",
            checkpoint="simulated",
            loras=[],
            controlnet=ControlNetSpec(),
            width=init.shape[1],
            height=init.shape[0],
            denoise=denoise,
            steps=1,
            cfg_scale=7.0,
            sampler="Euler a",
            scheduler="Automatic",
            seed=seed,
        )
        return np.asarray(self.backend.img2img(request).image)


@dataclass
class Settings:
    denoise: float = 0.5  # the JobSpec default
    flow_denoise: float = 0.3
    source_mix: float = 0.1
    keyframe_every: int = 4
    min_coverage: float = 0.9


def run_independent(clip: Clip, render: Renderer, s: Settings, broken: set[int] = frozenset()) -> list[np.ndarray]:
    return [
        render(f, c, t, 1.0 if t in broken else s.denoise, WRONG_SEED if t in broken else SEED)
        for t, (f, c) in enumerate(zip(clip.frames, clip.control, strict=False))
    ]


def run_flow(clip: Clip, render: Renderer, s: Settings, broken: set[int] = frozenset()) -> list[np.ndarray]:
    outputs: list[np.ndarray] = []
    for t, (frame, control) in enumerate(zip(clip.frames, clip.control, strict=False)):
        link = clip.to_previous[t]
        if link is None:  # chain start (frame 0 or a scene cut): a normal img2img frame
            init, denoise = frame, s.denoise
        else:
            init = temporal.blend_init(link.warp(outputs[-1]), frame, link.occluded, s.source_mix)
            denoise = s.flow_denoise
        if t in broken:
            denoise = 1.0
        outputs.append(render(init, control, t, denoise, WRONG_SEED if t in broken else SEED))
    return outputs


def run_keyframes(clip: Clip, render: Renderer, s: Settings) -> list[np.ndarray]:
    count, k = len(clip.frames), s.keyframe_every
    keys = list(range(0, count, k))
    outputs: dict[int, np.ndarray] = {t: render(clip.frames[t], clip.control[t], t, s.denoise) for t in keys}
    for t in range(count):
        if t in outputs:
            continue
        before = t - t % k
        after = before + k if before + k < count else None  # the clip's tail fills from one side
        # Direct flow to each keyframe: measured as good as chaining the 1-frame flows at K=4.
        to_before = temporal.correspond(clip.frames[t], clip.frames[before])
        to_after = temporal.correspond(clip.frames[t], clip.frames[after]) if after is not None else None
        fill = temporal.fill_between(
            clip.frames[t],
            (t - before) / k,
            outputs[before],
            to_before,
            outputs[after] if after is not None else None,
            to_after,
        )
        outputs[t] = fill.image
        if fill.coverage < s.min_coverage:  # large occlusions: let img2img repaint from the fill
            outputs[t] = render(fill.image, clip.control[t], t, s.flow_denoise)
    return [outputs[t] for t in range(count)]


def scores(clip: Clip, outputs: Sequence[np.ndarray]) -> list[quality.FrameScores]:
    result = []
    for t, out in enumerate(outputs):
        link = clip.to_previous[t]
        error = quality.warp_error(out, outputs[t - 1], link) if link is not None else None
        result.append(quality.FrameScores(quality.edge_fidelity(out, clip.control[t]), error))
    return result


def mean(values: Sequence[float | None]) -> float:
    return float(np.mean([v for v in values if v is not None]))


def modes_table(clips: list[Clip], s: Settings) -> None:
    print(
        f"\n2. coherence modes, simulated img2img, {len(clips[0].frames)} frames of {SIZE}x{SIZE}; "
        f"denoise {s.denoise}, flow denoise {s.flow_denoise}, source mix {s.source_mix}, K={s.keyframe_every}, "
        f"img2img below {s.min_coverage:.0%} coverage"
    )
    print(f"{'clip':<30} {'mode':<11} {'warp err':>8} {'x indep':>7} {'edge F1':>7} {'x indep':>7} {'calls/frame':>11}")
    ratios: dict[str, list[tuple[float, float, float]]] = {}
    for clip in clips:
        base: tuple[float, float] | None = None
        for mode, run in (("independent", run_independent), ("flow", run_flow), ("keyframes", run_keyframes)):
            render = Renderer()
            frame_scores = scores(clip, run(clip, render, s))
            error = mean([f.warp_error for f in frame_scores])
            edges = mean([f.edge_fidelity for f in frame_scores])
            calls = render.backend.calls / len(clip.frames)
            base = base or (error, edges)
            ratios.setdefault(mode, []).append((error / base[0], edges / base[1], calls))
            print(
                f"{clip.name:<30} {mode:<11} {error:8.4f} {error / base[0]:7.2f} {edges:7.3f} {edges / base[1]:7.3f} "
                f"{calls:11.2f}"
            )
    print("mean over clips:")
    for mode, rows in ratios.items():
        e, f, c = (float(np.mean(col)) for col in zip(*rows, strict=False))
        print(f"  {mode:<11} warp error {e:.2f}x, edge fidelity {f:.3f}x, img2img calls {c:.2f} per frame")


# --------------------------------------------------------------------------- 3. repair detection


def broken_frames(count: int, share: float, seed: int) -> set[int]:
    rng = np.random.default_rng(seed)
    return {int(i) for i in rng.choice(np.arange(1, count), size=max(1, round(count * share)), replace=False)}


def repair_table(clips: list[Clip], s: Settings, share: float) -> None:
    print(
        f"\n3. repair detection: {share:.0%} of frames broken (wrong seed, denoise 1.0); suspect = robust z > "
        f"{quality.SUSPECT_Z}"
    )
    totals = {"found": 0, "broken": 0, "false": 0, "good": 0}
    for n, clip in enumerate(clips):
        for mode, run in (("independent", run_independent), ("flow", run_flow)):
            broken = broken_frames(len(clip.frames), share, seed=n)
            flags = quality.find_suspects(scores(clip, run(clip, Renderer(), s, broken)))
            flagged = {i for i, f in enumerate(flags) if f}
            found, false = len(flagged & broken), len(flagged - broken)
            good = len(clip.frames) - len(broken)
            for key, value in (("found", found), ("broken", len(broken)), ("false", false), ("good", good)):
                totals[key] += value
            print(f"  {clip.name:<30} {mode:<11} found {found}/{len(broken)}, false alarms {false}/{good}")
    print(
        f"  total: found {totals['found'] / totals['broken']:.0%} of broken frames (goal >= 90 %), "
        f"false alarms {totals['false'] / totals['good']:.1%} of good frames (goal <= 5 %)"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--frames", type=int, default=48, help="frames per clip for the mode and repair runs")
    parser.add_argument("--repeat", type=int, default=15, help="timing runs per flow figure")
    parser.add_argument("--broken-share", type=float, default=0.06)
    args = parser.parse_args()
    flow_table(args.repeat)
    clips = project_clips(args.frames)
    settings = Settings()
    modes_table(clips, settings)
    repair_table(clips, settings, args.broken_share)


if __name__ == "__main__":
    main()
