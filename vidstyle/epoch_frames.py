"""Which frames of a clip tell LoRA epochs apart: spread over the clip, favouring the hard ones.

A character LoRA fails first where the figure is small (a far-away full-body shot leaves the
face a few pixels wide) and where it moves fast (a turn of the head). Both are read from the
source itself, deterministically, with OpenCV:

* figure size: the box holding the middle 96 % of the canny edge pixels (the job's own canny
  thresholds), as a fraction of the frame; a frame with almost no edges has no figure to judge;
* motion: the mean Farneback optical-flow magnitude from the previous frame, in frame widths.

Each measure is scaled to 0..1 over the clip and the two are added; the clip is cut into as
many equal spans as frames are wanted and each span gives its hardest frame (the earliest on a
tie), so the picks are spread over the clip and repeat exactly for the same source.
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from .control import canny_map
from .errors import UserInputError
from .render import parse_frame_list
from .spec import ControlNetSpec, SourceSpec
from .video import VideoInfo, iter_frames, plan_selection, probe

ANALYSIS_WIDTH = 160  # enough to find a figure and its motion; decoding dominates the cost anyway
MAX_ANALYSED = 600  # longer clips are measured on every k-th frame
MIN_EDGE_FRACTION = 0.002  # below this a frame is blank or a fade: nothing to judge a LoRA on
MAX_FRAMES = 12  # columns in one grid; more cells get too small to judge a face
DEFAULT_COUNT = 4


@dataclass(frozen=True)
class FrameScore:
    index: int  # frame number in the selection (the job's frame numbers)
    extent: float | None  # edge box area / frame area; None when the frame has (almost) no edges
    motion: float  # mean flow magnitude from the previous frame, in frame widths
    hardness: float = 0.0


def _small_gray(image: np.ndarray) -> np.ndarray:
    height, width = image.shape[:2]
    scale = ANALYSIS_WIDTH / float(width)
    size = (ANALYSIS_WIDTH, max(8, round(height * scale)))
    return cv2.resize(cv2.cvtColor(image, cv2.COLOR_RGB2GRAY), size, interpolation=cv2.INTER_AREA)


def edge_extent(gray: np.ndarray, canny: ControlNetSpec) -> float | None:
    """Area of the box around the middle 96 % of edge pixels, as a fraction of the frame."""
    edges = canny_map(cv2.cvtColor(gray, cv2.COLOR_GRAY2RGB), canny.low_threshold, canny.high_threshold, canny.blur)
    rows, cols = np.nonzero(edges[..., 0])
    if rows.size < MIN_EDGE_FRACTION * gray.size:
        return None
    top, bottom = np.percentile(rows, (2, 98))
    left, right = np.percentile(cols, (2, 98))
    return float((bottom - top + 1) * (right - left + 1)) / float(gray.size)


def flow_magnitude(previous: np.ndarray, current: np.ndarray) -> float:
    # OpenCV allocates the flow when given None; its stubs only accept an array there.
    flow = cv2.calcOpticalFlowFarneback(previous, current, None, 0.5, 3, 15, 3, 5, 1.2, 0)  # type: ignore[call-overload]
    return float(np.linalg.norm(flow, axis=2).mean()) / float(current.shape[1])


def _scaled(values: Sequence[float]) -> np.ndarray:
    array = np.asarray(values, dtype=np.float64)
    span = float(array.max() - array.min()) if array.size else 0.0
    return (array - array.min()) / span if span > 0 else np.zeros_like(array)


def score_frames(
    path: str, source: SourceSpec, canny: ControlNetSpec, info: VideoInfo | None = None
) -> list[FrameScore]:
    """Figure size and motion of the selection's frames (every k-th one on long clips)."""
    info = info or probe(path, source.sequence_fps)
    total = plan_selection(info, source).frame_count
    stride = max(1, math.ceil(total / MAX_ANALYSED))
    raw: list[FrameScore] = []
    previous: np.ndarray | None = None
    for frame in iter_frames(path, source, info):
        gray = _small_gray(frame.image)
        if frame.index % stride == 0:
            motion = flow_magnitude(previous, gray) if previous is not None and previous.shape == gray.shape else 0.0
            raw.append(FrameScore(frame.index, edge_extent(gray, canny), motion))
        previous = gray
    if len(raw) > 1 and raw[0].index == 0:  # frame 0 has no predecessor: it moves as the next one does
        raw[0] = FrameScore(0, raw[0].extent, raw[1].motion)
    smallness = _scaled([1.0 - s.extent if s.extent is not None else 0.0 for s in raw])
    # A blank frame has no figure: it gets no credit for being "small".
    smallness = np.where([s.extent is None for s in raw], 0.0, smallness)
    motion_scores = _scaled([s.motion for s in raw])
    return [
        FrameScore(s.index, s.extent, s.motion, float(a + b))
        for s, a, b in zip(raw, smallness, motion_scores, strict=True)
    ]


def pick_spread(scores: Sequence[FrameScore], count: int) -> list[int]:
    """The hardest frame of each of `count` equal spans of the clip (earliest on a tie)."""
    if not scores:
        return []
    ordered = sorted(scores, key=lambda s: s.index)
    end = ordered[-1].index + 1
    picks: list[int] = []
    for span in range(count):
        low, high = span * end / count, (span + 1) * end / count
        inside = [s for s in ordered if low <= s.index < high]
        if inside:
            best = max(inside, key=lambda s: (s.hardness, -s.index))
            picks.append(best.index)
    return sorted(set(picks))


def parse_frames(text: str, frame_count: int) -> list[int]:
    """'0,120,240' (ranges like 10-12 too) -> frame numbers, each checked against the clip."""
    for number in re.findall(r"\d+", text):
        if int(number) >= frame_count:
            raise UserInputError(
                f"Frame {int(number)} is outside the clip, which has frames 0-{frame_count - 1}; "
                "pick frames in that range or use --frames auto."
            )
    frames = parse_frame_list(text, frame_count)
    if len(frames) > MAX_FRAMES:
        raise UserInputError(f"{len(frames)} frames were given but a preview shows at most {MAX_FRAMES}; pick fewer.")
    return frames


def choose_frames(
    path: str,
    source: SourceSpec,
    canny: ControlNetSpec,
    frames: str = "auto",
    count: int = DEFAULT_COUNT,
    info: VideoInfo | None = None,
) -> list[int]:
    """`frames` is 'auto' (spread + hardest, `count` of them) or a list like '0,120,240'."""
    if not 1 <= count <= MAX_FRAMES:
        raise UserInputError(f"The number of preview frames must be between 1 and {MAX_FRAMES}, not {count}.")
    if not Path(path).exists():
        raise UserInputError(f"Source video {path} does not exist; give a video file or a folder of frames.")
    info = info or probe(path, source.sequence_fps)
    if frames.strip().lower() != "auto":
        return parse_frames(frames, plan_selection(info, source).frame_count)
    return pick_spread(score_frames(path, source, canny, info), count)
