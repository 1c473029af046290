"""Which source frames a SourceSpec selects, in output terms (fps, time range, frame count).

A frame-accurate mode for constant-fps sources (index ranges, every Nth frame) and a by-time mode
(`target_fps`, and every variable-fps source): output tick k at `start + k / fps` shows the latest
source frame whose pts <= tick, which is how a VFR source becomes the constant-fps sequence the
encoder and audio need.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

from ..errors import SpecError
from ..spec import SourceSpec
from .container import decoding
from .probe import SCAN_LIMIT, VideoInfo, scan_packets

STANDARD_RATES = (
    Fraction(24000, 1001),
    Fraction(24),
    Fraction(25),
    Fraction(30000, 1001),
    Fraction(30),
    Fraction(48),
    Fraction(50),
    Fraction(60000, 1001),
    Fraction(60),
    Fraction(120),
)


@dataclass
class Selection:
    """What a SourceSpec selects from a video, in output terms."""

    fps: float  # output frame rate
    rate: Fraction  # the same, exact, for encode_video
    resample: bool  # True: by time (target_fps or a VFR source); False: frame-accurate indices
    start_time: float  # video-timeline seconds where output frame 0 begins (audio_start)
    end_time: float  # start_time + frame_count / fps (audio_end)
    start_frame: int  # first source index considered
    end_frame: int | None  # source index to stop before (None: to the end)
    every_nth: int
    frame_count: int
    frame_count_exact: bool

    @property
    def duration(self) -> float:
        return self.end_time - self.start_time


def _nice_rate(fps: float) -> Fraction:
    """A standard rate within 2% of a VFR source's average, else the nearest whole fps."""
    best = min(STANDARD_RATES, key=lambda r: abs(float(r) - fps))
    if abs(float(best) - fps) <= 0.02 * fps:
        return best
    return Fraction(max(1, round(fps))) if fps >= 1 else Fraction(fps).limit_denominator(1000)


def rate_of(fps: float | Fraction) -> Fraction:
    return fps if isinstance(fps, Fraction) else Fraction(fps).limit_denominator(1001)


def plan_selection(info: VideoInfo, source: SourceSpec) -> Selection:
    """Output fps, time range and frame count that `iter_frames` will produce for this source spec."""
    resample = source.target_fps is not None or info.is_vfr
    if resample:
        return _plan_by_time(info, source)
    return _plan_by_index(info, source)


def count_selected(info: VideoInfo, source: SourceSpec) -> int:
    """Frames `iter_frames` yields (exact when info.frame_count is; see Selection.frame_count_exact)."""
    return plan_selection(info, source).frame_count


def _plan_by_index(info: VideoInfo, source: SourceSpec) -> Selection:
    fps = float(info.rate)
    # A frame belongs to [start_time, end_time) when its time is >= start - tol and < end - tol;
    # a quarter frame of tolerance absorbs time-base rounding without changing which frame wins.
    first = source.start_frame or 0
    if source.start_time is not None:
        first = max(first, math.ceil(source.start_time * fps - 0.25))
    stop = info.frame_count
    if source.end_frame is not None:
        stop = min(stop, source.end_frame)
    if source.end_time is not None:
        stop = min(stop, math.ceil(source.end_time * fps - 0.25))
    count = -(-(stop - first) // source.every_nth) if stop > first else 0
    _check_not_empty(count, info, source)
    rate = info.rate / source.every_nth
    start = first / fps
    bounded = info.frame_count_exact or stop < info.frame_count
    return Selection(
        fps=float(rate),
        rate=rate,
        resample=False,
        start_time=start,
        end_time=start + count / float(rate),
        # An estimated frame count must not cut the video short: then decode to the real end.
        start_frame=first,
        end_frame=stop if bounded else None,
        every_nth=source.every_nth,
        frame_count=count,
        frame_count_exact=bounded,
    )


def _plan_by_time(info: VideoInfo, source: SourceSpec) -> Selection:
    if source.target_fps is not None:
        rate = rate_of(source.target_fps)
    else:
        rate = _nice_rate(info.fps) / source.every_nth
    first = source.start_frame or 0
    start = source.start_time or 0.0
    end = info.duration
    times = _frame_times(info) if (source.start_frame or source.end_frame is not None) else None
    if source.start_frame:
        start = max(start, times[first] if times is not None and first < len(times) else info.duration)
    if source.end_frame is not None and times is not None and source.end_frame < len(times):
        end = min(end, times[source.end_frame])
    if source.end_time is not None:
        end = min(end, source.end_time)
    count = max(0, math.ceil((end - start) * float(rate) - 1e-6))
    _check_not_empty(count, info, source)
    return Selection(
        fps=float(rate),
        rate=rate,
        resample=True,
        start_time=start,
        end_time=start + count / float(rate),
        start_frame=first,
        end_frame=source.end_frame,
        every_nth=source.every_nth,
        frame_count=count,
        frame_count_exact=True,
    )


def _check_not_empty(count: int, info: VideoInfo, source: SourceSpec) -> None:
    if count <= 0:
        raise SpecError(
            f"The selected range holds no frames: the source has {info.frame_count} frames over "
            f"{info.duration:.2f} s; adjust start/end time or frame."
        )


def _frame_times(info: VideoInfo) -> list[float]:
    """Video-timeline time of every source frame, by index (for index limits on VFR sources)."""
    if info.is_image_sequence or not info.is_vfr:
        return [i / info.fps for i in range(info.frame_count)]
    path = Path(info.path)
    with decoding(path) as (container, stream):  # demux only: no decoder is opened
        scan = scan_packets(container, stream, path, SCAN_LIMIT)
        return [float(p * stream.time_base) - info.start_time for p in scan.pts]
