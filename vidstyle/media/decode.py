"""Streamed decoding of the frames a selection picks (one frame held at a time), and preview frames.

Streamed decoding keeps FFmpeg's frame threads; one-frame reads decode on the calling thread
(see "Decoder threads" in container.py).
"""

from __future__ import annotations

from collections.abc import Callable, Generator, Iterator
from contextlib import closing
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import MediaError
from ..imageio import read_image
from ..spec import SourceSpec
from .container import PathLike, decode_packets, decoding
from .probe import VideoInfo, probe, sequence_files
from .rotation import frame_to_rgb
from .selection import Selection, plan_selection

# A frame within this many seconds after an output tick still counts as "at" the tick:
# absorbs pts rounding of millisecond time bases (mkv, webm).
TICK_EPS = 1e-4
# Seek instead of decoding from the start when the selection starts this late (seconds).
SEEK_AFTER = 2.0


@dataclass
class SelectedFrame:
    index: int  # 0..N-1 in the output sequence
    source_index: int  # decode-order index in the source
    time: float  # the source frame's pts in video-timeline seconds
    image: np.ndarray  # RGB uint8 HxWx3, rotation applied


@dataclass
class _RawFrame:
    index: int
    time: float
    to_rgb: Callable[[], np.ndarray]


def _iter_video_raw(info: VideoInfo, seek_to: float | None, frame_threads: bool) -> Generator[_RawFrame, None, None]:
    """Source frames with index and video-timeline time; images are converted only on demand.

    frame_threads: True for streamed decoding, False for a read that stops after a frame or two.
    """
    path = Path(info.path)
    with decoding(path, frame_threads) as (container, stream):
        tb = stream.time_base
        index_by_time = False
        if seek_to is not None and seek_to > SEEK_AFTER and not info.is_vfr:
            container.seek(int((info.start_time + seek_to) / tb), stream=stream, backward=True)
            index_by_time = True  # after a seek, counting is lost: CFR index = time x fps
        count = 0
        last_time = -1.0 / info.fps
        for frame in decode_packets(container, stream, path):
            if frame.pts is not None:
                time = float(frame.pts * tb) - info.start_time
            else:
                time = last_time + 1.0 / info.fps
            index = int(round(time * info.fps)) if index_by_time else count
            yield _RawFrame(index=index, time=time, to_rgb=_converter(frame, info.rotation))
            count += 1
            last_time = time


def _converter(frame: Any, rotation: int) -> Callable[[], np.ndarray]:
    return lambda: frame_to_rgb(frame, rotation)


def _iter_sequence_raw(info: VideoInfo, first: int) -> Generator[_RawFrame, None, None]:
    files = sequence_files(info.path)
    for index in range(first, len(files)):
        file = files[index]
        yield _RawFrame(index=index, time=index / info.fps, to_rgb=partial(read_image, file))


def iter_frames(
    path: PathLike, source: SourceSpec, info: VideoInfo | None = None
) -> Generator[SelectedFrame, None, None]:
    """Stream the frames a SourceSpec selects, as RGB arrays with rotation applied."""
    if info is None or Path(info.path).resolve() != Path(path).resolve():
        info = probe(path, source.sequence_fps)
    selection = plan_selection(info, source)
    if selection.resample:
        return _select_by_time(_raw_frames(info, selection, selection.start_time), selection)
    return _select_by_index(_raw_frames(info, selection, selection.start_frame / info.fps), selection)


def _raw_frames(info: VideoInfo, selection: Selection, seek_time: float) -> Generator[_RawFrame, None, None]:
    if info.is_image_sequence:
        first = selection.start_frame if not selection.resample else max(0, int(seek_time * info.fps) - 1)
        return _iter_sequence_raw(info, first)
    # Seek a little early so the latest frame at or before the start is decoded too.
    return _iter_video_raw(info, seek_to=max(0.0, seek_time - 1.0 / info.fps), frame_threads=True)


def _in_index_range(raw: Iterator[_RawFrame], sel: Selection) -> Iterator[_RawFrame]:
    for frame in raw:
        if frame.index < sel.start_frame:
            continue
        if sel.end_frame is not None and frame.index >= sel.end_frame:
            return
        yield frame


def _select_by_index(raw: Generator[_RawFrame, None, None], sel: Selection) -> Generator[SelectedFrame, None, None]:
    out = 0
    with closing(raw):  # closes the container when selection stops early
        for frame in _in_index_range(raw, sel):
            if (frame.index - sel.start_frame) % sel.every_nth:
                continue
            yield SelectedFrame(index=out, source_index=frame.index, time=frame.time, image=frame.to_rgb())
            out += 1


def _select_by_time(raw: Generator[_RawFrame, None, None], sel: Selection) -> Generator[SelectedFrame, None, None]:
    """Tick k shows the latest frame with time <= tick; ticks before the first frame show the first."""
    step = 1.0 / float(sel.rate)
    held: _RawFrame | None = None
    held_rgb: np.ndarray | None = None
    tick = 0
    with closing(raw):  # closes the container when selection stops early
        for frame in _in_index_range(raw, sel):
            while held is not None and tick < sel.frame_count and sel.start_time + tick * step < frame.time - TICK_EPS:
                held_rgb = held_rgb.copy() if held_rgb is not None else held.to_rgb()
                yield SelectedFrame(index=tick, source_index=held.index, time=held.time, image=held_rgb)
                tick += 1
            if tick >= sel.frame_count:
                return
            held, held_rgb = frame, None
        while held is not None and tick < sel.frame_count:  # the last frame holds until the end
            held_rgb = held_rgb.copy() if held_rgb is not None else held.to_rgb()
            yield SelectedFrame(index=tick, source_index=held.index, time=held.time, image=held_rgb)
            tick += 1


def read_frame_at_time(
    path: PathLike, seconds: float, info: VideoInfo | None = None, sequence_fps: float = 30.0
) -> np.ndarray:
    """The frame shown at `seconds` on the video timeline (latest frame with pts <= seconds)."""
    info = info or probe(path, sequence_fps)
    if info.is_image_sequence:
        return read_frame_at(path, int(seconds * info.fps + 1e-6), info)
    chosen: _RawFrame | None = None
    raw = _iter_video_raw(info, seek_to=max(0.0, seconds - 1.0 / info.fps), frame_threads=False)
    with closing(raw):  # closes the container when selection stops early
        for frame in raw:
            if frame.time > seconds + TICK_EPS and chosen is not None:
                break
            chosen = frame
            if frame.time > seconds + TICK_EPS:
                break
    if chosen is None:
        raise MediaError(f"{path} has no frame at {seconds:.3f} s; choose a time within {info.duration:.2f} s.")
    return chosen.to_rgb()


def read_frame_at(path: PathLike, index: int, info: VideoInfo | None = None, sequence_fps: float = 30.0) -> np.ndarray:
    """One source frame by index, RGB with rotation applied (for previews).

    Exact for constant-fps videos and frame folders; for a variable-fps video the index is
    mapped to time at the average fps, so it may land a frame or two away.
    """
    info = info or probe(path, sequence_fps)
    if not 0 <= index < info.frame_count:
        raise MediaError(
            f"Frame {index} is outside {path}, which has {info.frame_count} frames (0-{info.frame_count - 1})."
        )
    if info.is_image_sequence:
        return read_image(sequence_files(info.path)[index])
    return read_frame_at_time(path, index / info.fps, info)
