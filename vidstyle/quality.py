"""Per-frame scores and the `suspect` flag that sends frames to automatic repair.

* edge fidelity: does the output keep the source's outlines? F1 of the output's canny edges
  against the source canny map, each counted as matched within `tolerance` pixels, because a
  stylised frame redraws a line a pixel or two away without being wrong.
* warp error: does the output continue the previous output? Mean absolute difference (0..1)
  to the previous output carried onto this frame by the *source* frames' flow, over the pixels
  that flow can supply (occlusions excluded).
* suspect: a frame that is an outlier against the job's own distribution (median / MAD
  robust z-scores), so no threshold has to be tuned per job or per style.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import cv2
import numpy as np

from .temporal import Correspondence, TemporalInputError

# Iglewicz & Hoaglin's cut-off for the modified z-score 0.6745 (x - median) / MAD.
SUSPECT_Z = 3.5
# Fewer scores than this say nothing about a job's distribution; nothing is flagged.
MIN_FRAMES_FOR_STATS = 8
# A spread below this share of the median is numerical noise, not a distribution to judge
# against (a job of near-identical frames would otherwise flag the slightest difference).
MIN_RELATIVE_SPREAD = 0.05


def edge_mask(image: np.ndarray, low: int = 100, high: int = 200) -> np.ndarray:
    """Canny edges (bool HxW) of an RGB image, as vidstyle.control draws its maps."""
    return cv2.Canny(image, int(low), int(high)) > 0


def _as_mask(edges: np.ndarray) -> np.ndarray:
    """A canny map (HxW or HxWx3, white on black) or a bool mask, as a bool HxW mask."""
    if edges.dtype == bool:
        return edges
    return (edges if edges.ndim == 2 else edges.max(axis=2)) > 127


def edge_fidelity(
    output: np.ndarray, source_edges: np.ndarray, low: int = 100, high: int = 200, tolerance: int = 2
) -> float:
    """F1 (0..1) of the output's canny edges against the source canny map, tolerant to `tolerance` px."""
    source = _as_mask(source_edges)
    if output.shape[:2] != source.shape:
        raise TemporalInputError(
            f"The output is {output.shape[1]}x{output.shape[0]} but its canny map is "
            f"{source.shape[1]}x{source.shape[0]}; score frames at the job's size."
        )
    made = edge_mask(output, low, high)
    if not made.any() and not source.any():
        return 1.0  # a flat source drawn flat is faithful
    if not made.any() or not source.any():
        return 0.0
    kernel = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * tolerance + 1, 2 * tolerance + 1))
    near_source = cv2.dilate(source.astype(np.uint8), kernel) > 0
    near_made = cv2.dilate(made.astype(np.uint8), kernel) > 0
    precision = float((made & near_source).sum() / made.sum())
    recall = float((source & near_made).sum() / source.sum())
    return 0.0 if precision + recall == 0 else 2 * precision * recall / (precision + recall)


def warp_error(output: np.ndarray, previous_output: np.ndarray, to_previous: Correspondence) -> float | None:
    """Mean absolute difference (0..1) between the output and the previous output warped onto it.

    `to_previous` is this frame's correspondence against the previous *source* frame. None when
    the flow supplies no pixel at all (nothing to compare).
    """
    if output.shape != previous_output.shape or output.shape[:2] != to_previous.occluded.shape:
        raise TemporalInputError(
            "The output, the previous output and the flow must all have the same size; score frames at the job's size."
        )
    visible = ~to_previous.occluded
    if not visible.any():
        return None
    carried = to_previous.warp(previous_output)
    difference = np.abs(output.astype(np.float32) - carried.astype(np.float32)).mean(axis=2)
    return float(difference[visible].mean() / 255.0)


def robust_z(values: Sequence[float | None]) -> np.ndarray:
    """Modified z-scores 0.6745 (x - median) / MAD of the given values (NaN where a value is None)."""
    data = np.array([np.nan if v is None else v for v in values], dtype=np.float64)
    known = data[~np.isnan(data)]
    if len(known) < MIN_FRAMES_FOR_STATS:
        return np.zeros_like(data)
    median = float(np.median(known))
    mad = float(np.median(np.abs(known - median)))
    mad = max(mad, MIN_RELATIVE_SPREAD * abs(median) * 0.6745, 1e-9)
    return 0.6745 * (data - median) / mad


@dataclass
class FrameScores:
    """One frame's scores, in job order; warp_error is None where a chain (or the clip) starts."""

    edge_fidelity: float | None
    warp_error: float | None


def find_suspects(scores: Sequence[FrameScores], z: float = SUSPECT_Z) -> list[bool]:
    """Flag frames whose edges are unusually poor or that break unusually from their neighbours.

    A warp error belongs to a pair of frames, so a broken frame raises the error of its own link
    and of the next frame's; the blame goes to the frame shared by two high links, and an
    isolated high link blames the later frame (in a flow chain that is the one that broke away).
    """
    edges = robust_z([s.edge_fidelity for s in scores])
    links = robust_z([s.warp_error for s in scores])
    high = np.nan_to_num(links, nan=0.0) > z
    suspect = list(np.nan_to_num(edges, nan=0.0) < -z)
    count = len(scores)
    for i in np.flatnonzero(high):
        previous_high = i > 0 and high[i - 1]
        next_high = i + 1 < count and high[i + 1]
        if next_high or not previous_high:
            suspect[i] = True  # i shares two high links, or its link is the only one: i broke away
        # else: i-1 shares this link with its own high link, and was flagged for that one.
    return [bool(flag) for flag in suspect]
