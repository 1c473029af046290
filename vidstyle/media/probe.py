"""Facts about a video file or a folder of frames (size, rotation, exact rate, VFR, frame count, audio).

`probe` is the one probe cache of the engine: the job, the tab's previews and the API all call it.
"""

from __future__ import annotations

import copy
import re
import threading
from collections import OrderedDict
from dataclasses import asdict, dataclass, field
from fractions import Fraction
from pathlib import Path
from typing import Any

import av
import numpy as np

from ..errors import MediaError
from ..imageio import IMAGE_EXTENSIONS, read_image
from .container import PathLike, channel_count, check_exists, decode_packets, decoding, stream_origin
from .rotation import frame_rotation

# Packets scanned by probe for exact frame count, duration and VFR detection (demux only, no
# decode); ~28 minutes at 30 fps. Longer videos fall back to container metadata (estimated).
SCAN_LIMIT = 50_000


@dataclass
class AudioInfo:
    index: int  # stream index in the container
    codec: str
    sample_rate: int
    channels: int
    duration: float | None  # seconds, None when the container does not say


@dataclass
class VideoInfo:
    path: str
    width: int  # as displayed (rotation applied)
    height: int
    coded_width: int  # as stored in the stream
    coded_height: int
    rotation: int  # 0/90/180/270: counter-clockwise turn applied for display (PyAV's VideoFrame.rotation)
    fps: float  # average frame rate
    is_vfr: bool
    frame_count: int
    frame_count_exact: bool  # False: estimated from duration x fps (very long or index-less files)
    duration: float  # seconds, first frame to the end of the last frame
    codec: str
    audio: list[AudioInfo] = field(default_factory=list)
    is_image_sequence: bool = False
    rate: Fraction = Fraction(30)  # fps as an exact fraction (e.g. 30000/1001)
    start_time: float = 0.0  # container time of the first video frame (s); our times subtract it
    stream_index: int = 0

    def as_dict(self) -> dict[str, Any]:
        """JSON-friendly dict (for the UI and the HTTP API)."""
        data = asdict(self)
        data["rate"] = f"{self.rate.numerator}/{self.rate.denominator}"
        return data


def _natural_key(name: str) -> list[Any]:
    return [int(part) if part.isdigit() else part for part in re.split(r"(\d+)", name.lower())]


def sequence_files(folder: PathLike) -> list[Path]:
    """Image files of a frame folder, in natural name order (frame2 before frame10)."""
    folder = Path(folder)
    files = [p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS]
    return sorted(files, key=lambda p: _natural_key(p.name))


# The engine's one probe cache (the job, the tab's previews and canny slider, the API). A full
# probe reads every packet of the file, so results are kept per file version: (resolved path,
# size, mtime) and the arguments; the least recently used entry goes first.
PROBE_CACHE_SIZE = 32
_PROBE_CACHE: OrderedDict[tuple[Any, ...], VideoInfo] = OrderedDict()
_CACHE_LOCK = threading.Lock()


def probe(path: PathLike, sequence_fps: float = 30.0, scan_limit: int = SCAN_LIMIT) -> VideoInfo:
    """Facts about a video file or a folder of frames; MediaError with one sentence if unusable.

    Cached per file version; every call returns its own copy, which the caller may change.
    """
    path = Path(path)
    check_exists(path)
    try:
        stat = path.stat()
    except OSError as exc:
        raise MediaError(f"Cannot read {path}: {exc.strerror or exc}.") from None
    key = (str(path.resolve()), stat.st_size, stat.st_mtime_ns, float(sequence_fps), scan_limit)
    cached = _cache_get(key)
    if cached is None:
        cached = _probe_sequence(path, sequence_fps) if path.is_dir() else _probe_video(path, scan_limit)
        _cache_put(key, cached)
    info = copy.deepcopy(cached)
    info.path = str(path)
    return info


def _cache_get(key: tuple[Any, ...]) -> VideoInfo | None:
    with _CACHE_LOCK:
        info = _PROBE_CACHE.get(key)
        if info is not None:
            _PROBE_CACHE.move_to_end(key)
        return info


def _cache_put(key: tuple[Any, ...], info: VideoInfo) -> None:
    with _CACHE_LOCK:
        _PROBE_CACHE[key] = info
        _PROBE_CACHE.move_to_end(key)
        while len(_PROBE_CACHE) > PROBE_CACHE_SIZE:
            _PROBE_CACHE.popitem(last=False)


def _probe_sequence(folder: Path, fps: float) -> VideoInfo:
    files = sequence_files(folder)
    if not files:
        raise MediaError(f"Folder {folder} has no PNG/JPG images; point to a video or a folder of frames.")
    height, width = read_image(files[0]).shape[:2]
    rate = Fraction(fps).limit_denominator(1001)
    return VideoInfo(
        path=str(folder),
        width=width,
        height=height,
        coded_width=width,
        coded_height=height,
        rotation=0,
        fps=float(rate),
        is_vfr=False,
        frame_count=len(files),
        frame_count_exact=True,
        duration=len(files) / float(rate),
        codec=files[0].suffix.lower().lstrip("."),
        audio=[],
        is_image_sequence=True,
        rate=rate,
        start_time=0.0,
        stream_index=0,
    )


def _first_frame(path: Path) -> tuple[Any, int, int, str]:
    """Decode frame 0: proves the stream decodes and gives coded size and rotation."""
    with decoding(path) as (container, stream):
        frame = next(decode_packets(container, stream, path), None)
        if frame is None:
            raise MediaError(f"{path} has no video frames; re-export it.")
        return frame, frame_rotation(frame, stream), stream.index, stream.codec_context.name


@dataclass
class PacketScan:
    pts: list[int]  # sorted presentation timestamps (stream time base)
    last_duration: int  # duration of the last-presented packet (0 if unknown)
    packets: int  # packets with data (= frames)
    complete: bool  # reached the end of the stream


def scan_packets(container: Any, stream: Any, path: Path, limit: int) -> PacketScan:
    pts: list[int] = []
    durations: dict[int, int] = {}
    packets = 0
    complete = True
    try:
        for packet in container.demux(stream):
            if packet.size == 0:  # the flush packet PyAV yields at end of stream
                continue
            packets += 1
            if packet.pts is not None:
                pts.append(packet.pts)
                durations[packet.pts] = packet.duration or 0
            if packets >= limit:
                complete = False
                break
    except av.error.FFmpegError:
        raise MediaError(
            f"{path} is corrupt or truncated (reading failed after {packets} frames); re-export it."
        ) from None
    pts.sort()
    if not complete and len(pts) > 32:
        pts = pts[:-16]  # B-frame reordering: the unread tail may still hold smaller pts
    return PacketScan(
        pts=pts, last_duration=durations.get(pts[-1], 0) if pts else 0, packets=packets, complete=complete
    )


def _is_vfr(pts: list[int]) -> bool:
    diffs = np.diff(np.asarray(pts, dtype=np.int64))
    diffs = diffs[diffs > 0]
    if diffs.size < 2:
        return False
    median = float(np.median(diffs))
    # 1.5 ticks absorbs millisecond rounding (33/34 ms at 30 fps); 1% absorbs fine time bases.
    tolerance = max(1.5, 0.01 * median)
    return bool(np.any(np.abs(diffs.astype(np.float64) - median) > tolerance))


def _probe_video(path: Path, scan_limit: int) -> VideoInfo:
    first, rotation, stream_index, codec = _first_frame(path)
    with decoding(path) as (container, stream):  # demux only: no decoder is opened
        tb = stream.time_base or Fraction(1, 90000)
        scan = scan_packets(container, stream, path, scan_limit)
        if scan.complete and stream.frames and scan.packets < stream.frames:
            raise MediaError(
                f"{path} is truncated: it declares {stream.frames} frames but only {scan.packets} can be read; "
                "re-export or re-copy it."
            )
        timing = _timing(stream, container, scan, tb)
        audio = [_audio_info(s, container) for s in container.streams.audio]
    coded_w, coded_h = first.width, first.height
    width, height = (coded_h, coded_w) if rotation in (90, 270) else (coded_w, coded_h)
    return VideoInfo(
        path=str(path),
        width=width,
        height=height,
        coded_width=coded_w,
        coded_height=coded_h,
        rotation=rotation,
        codec=codec,
        audio=audio,
        is_image_sequence=False,
        stream_index=stream_index,
        **timing,
    )


def _timing(stream: Any, container: Any, scan: PacketScan, tb: Fraction) -> dict[str, Any]:
    """fps, VFR flag, frame count and duration: from packet pts when the scan saw everything."""
    declared = stream.average_rate or stream.guessed_rate
    start = stream_origin(stream) if stream.start_time is not None else float(scan.pts[0] * tb) if scan.pts else 0.0
    is_vfr = _is_vfr(scan.pts)
    frame_step = _median_step(scan.pts)
    if scan.pts:
        last_dur = scan.last_duration or frame_step or (1 / declared / tb if declared else 0)
        span = Fraction(scan.pts[-1] - scan.pts[0] + int(last_dur)) * tb
    else:
        span = Fraction(0)
    if scan.complete:
        frame_count, exact = scan.packets, True
        duration = float(span) if span > 0 else _declared_duration(stream, container)
    else:
        duration = _declared_duration(stream, container) or float(span)
        exact = bool(stream.frames)
        frame_count = int(stream.frames) if stream.frames else 0
    measured = Fraction(len(scan.pts), 1) / span if span > 0 and len(scan.pts) > 1 else None
    rate = _pick_rate(declared, measured, is_vfr)
    if not frame_count:
        frame_count = max(1, int(round(duration * float(rate))))
    if not duration:
        duration = frame_count / float(rate)
    return dict(
        fps=float(rate),
        rate=rate,
        is_vfr=is_vfr,
        frame_count=frame_count,
        frame_count_exact=exact,
        duration=duration,
        start_time=start,
    )


def _median_step(pts: list[int]) -> int:
    diffs = np.diff(np.asarray(pts, dtype=np.int64))
    diffs = diffs[diffs > 0]
    return int(np.median(diffs)) if diffs.size else 0


def _pick_rate(declared: Fraction | None, measured: Fraction | None, is_vfr: bool) -> Fraction:
    """The container's exact rate when it agrees with the timestamps, else the measured average."""
    if measured is None:
        return Fraction(declared) if declared else Fraction(25)
    if declared and not is_vfr and abs(float(declared) - float(measured)) <= 0.02 * float(measured):
        return Fraction(declared)
    return measured.limit_denominator(1001)


def _declared_duration(stream: Any, container: Any) -> float:
    if stream.duration and stream.time_base:
        return float(stream.duration * stream.time_base)
    if container.duration:
        return float(container.duration) / 1_000_000
    return 0.0


def _audio_info(stream: Any, container: Any) -> AudioInfo:
    duration: float | None = None
    if stream.duration and stream.time_base:
        duration = float(stream.duration * stream.time_base)
    elif container.duration:
        duration = container.duration / 1_000_000
    return AudioInfo(
        index=stream.index,
        codec=stream.codec_context.name,
        sample_rate=int(stream.codec_context.sample_rate or 0),
        channels=channel_count(stream),
        duration=duration,
    )
