"""Probe, decode and encode video with PyAV: rotation applied, variable frame rate handled, audio kept.

Times in this module are seconds on the *video timeline*: 0 is the first video frame of the
source (its container start offset removed), so a selection's [start, end) can be handed
straight to `encode_video(audio_start=..., audio_end=...)` and audio stays in sync.

Frame selection (SourceSpec): a frame-accurate mode for constant-fps sources (index ranges,
every Nth frame) and a by-time mode (`target_fps`, and every variable-fps source): output tick
k at `start + k / fps` shows the latest source frame whose pts <= tick, which is how a VFR
source becomes the constant-fps sequence the encoder and audio need.

Decoding is streamed (one frame held at a time), so memory does not grow with video length.
"""

from __future__ import annotations

import copy
import math
import os
import re
import threading
from collections import OrderedDict
from contextlib import closing
from dataclasses import asdict, dataclass, field
from fractions import Fraction
from pathlib import Path
from typing import Any, Callable, Dict, Generator, Iterable, Iterator, List, Optional, Tuple, Union

import av
import cv2
import numpy as np

from .atomic import atomic_path
from .errors import MediaError, OutputError, SpecError
from .imageio import IMAGE_EXTENSIONS, as_rgb, read_image
from .spec import SourceSpec

PathLike = Union[str, "os.PathLike[str]"]
FrameInput = Union[PathLike, np.ndarray, Any]  # Any: a PIL.Image
WarningCallback = Callable[[str], None]

# Packets scanned by probe for exact frame count, duration and VFR detection (demux only, no
# decode); ~28 minutes at 30 fps. Longer videos fall back to container metadata (estimated).
SCAN_LIMIT = 50_000
# A frame within this many seconds after an output tick still counts as "at" the tick:
# absorbs pts rounding of millisecond time bases (mkv, webm).
TICK_EPS = 1e-4
# Seek instead of decoding from the start when the selection starts this late (seconds).
SEEK_AFTER = 2.0
# Consecutive undecodable packets tolerated (skipped) before a file counts as corrupt.
MAX_BAD_PACKETS = 8
STANDARD_RATES = (
    Fraction(24000, 1001), Fraction(24), Fraction(25), Fraction(30000, 1001), Fraction(30),
    Fraction(48), Fraction(50), Fraction(60000, 1001), Fraction(60), Fraction(120),
)
AAC_RATES = (96000, 88200, 64000, 48000, 44100, 32000, 24000, 22050, 16000, 12000, 11025, 8000)


# --------------------------------------------------------------------------- data


@dataclass
class AudioInfo:
    index: int  # stream index in the container
    codec: str
    sample_rate: int
    channels: int
    duration: Optional[float]  # seconds, None when the container does not say


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
    audio: List[AudioInfo] = field(default_factory=list)
    is_image_sequence: bool = False
    rate: Fraction = Fraction(30)  # fps as an exact fraction (e.g. 30000/1001)
    start_time: float = 0.0  # container time of the first video frame (s); our times subtract it
    stream_index: int = 0

    def as_dict(self) -> Dict[str, Any]:
        """JSON-friendly dict (for the UI and the HTTP API)."""
        data = asdict(self)
        data["rate"] = f"{self.rate.numerator}/{self.rate.denominator}"
        return data


@dataclass
class Selection:
    """What a SourceSpec selects from a video, in output terms."""

    fps: float  # output frame rate
    rate: Fraction  # the same, exact, for encode_video
    resample: bool  # True: by time (target_fps or a VFR source); False: frame-accurate indices
    start_time: float  # video-timeline seconds where output frame 0 begins (audio_start)
    end_time: float  # start_time + frame_count / fps (audio_end)
    start_frame: int  # first source index considered
    end_frame: Optional[int]  # source index to stop before (None: to the end)
    every_nth: int
    frame_count: int
    frame_count_exact: bool

    @property
    def duration(self) -> float:
        return self.end_time - self.start_time


@dataclass
class SelectedFrame:
    index: int  # 0..N-1 in the output sequence
    source_index: int  # decode-order index in the source
    time: float  # the source frame's pts in video-timeline seconds
    image: np.ndarray  # RGB uint8 HxWx3, rotation applied


@dataclass
class EncodeReport:
    path: str
    frames: int
    fps: float
    width: int
    height: int
    duration: float
    audio_kept: bool
    audio_note: str  # one sentence for the user when audio was dropped or shortened, else ""


@dataclass
class _RawFrame:
    index: int
    time: float
    to_rgb: Callable[[], np.ndarray]


# --------------------------------------------------------------------------- opening


def _natural_key(name: str) -> List[Any]:
    return [int(part) if part.isdigit() else part for part in re.split(r"(\d+)", name.lower())]


def sequence_files(folder: PathLike) -> List[Path]:
    """Image files of a frame folder, in natural name order (frame2 before frame10)."""
    folder = Path(folder)
    files = [p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS]
    return sorted(files, key=lambda p: _natural_key(p.name))


def _check_exists(path: Path) -> None:
    if not path.exists():
        raise MediaError(f"{path} does not exist; check the path.")


def _open(path: Path) -> "av.container.InputContainer":
    try:
        return av.open(str(path), mode="r", metadata_errors="ignore")
    except (FileNotFoundError, IsADirectoryError):
        raise MediaError(f"{path} does not exist; check the path.") from None
    except PermissionError:
        raise MediaError(f"Cannot read {path}: permission denied.") from None
    except (av.error.FFmpegError, OSError, ValueError):
        raise MediaError(
            f"{path} cannot be read as a video (not a video, or corrupt/truncated); check the file or re-export it as MP4."
        ) from None


def _video_stream(container: Any, path: Path) -> Any:
    streams = _real_video_streams(container)
    if not streams:
        raise MediaError(f"{path} has no video stream; choose a video file or a folder of frames.")
    stream = streams[0]
    stream.thread_type = "AUTO"  # frame + slice threads: decoding is the engine's main CPU cost
    return stream


def _real_video_streams(container: Any) -> List[Any]:
    """Video streams that are not cover art (an MP3/M4A's picture is a one-frame 'video')."""
    real = []
    for stream in container.streams.video:
        disposition = getattr(stream, "disposition", None)  # av >= 13
        cover = getattr(type(disposition), "attached_pic", None) if disposition is not None else None
        if not (cover is not None and disposition & cover):
            real.append(stream)
    return real


def _origin(stream: Any) -> float:
    """Container time of the stream's first frame; our timeline starts there."""
    if stream.start_time is None or stream.time_base is None:
        return 0.0
    return float(stream.start_time * stream.time_base)


def _channels(stream: Any) -> int:
    layout = getattr(stream, "layout", None) or getattr(stream.codec_context, "layout", None)
    if layout is not None and getattr(layout, "channels", None):
        return len(layout.channels)
    return int(getattr(stream.codec_context, "channels", 0) or 0)


def _frame_rotation(frame: Any, stream: Any) -> int:
    """Display rotation, counter-clockwise degrees in {0, 90, 180, 270}.

    Read the way each PyAV generation exposes FFmpeg's display matrix: VideoFrame.rotation
    (recent), Stream.side_data["DISPLAYMATRIX"] (av 12), the frame's raw matrix, and last the
    legacy `rotate` tag (clockwise degrees) that old FFmpeg versions exported.
    """
    degrees: Optional[float] = getattr(frame, "rotation", None)
    if degrees is None:
        side = getattr(stream, "side_data", None)
        degrees = side.get("DISPLAYMATRIX") if isinstance(side, dict) else None
    if degrees is None:
        degrees = _frame_matrix_rotation(frame)
    if degrees is None:
        tag = stream.metadata.get("rotate")
        degrees = -float(tag) if tag else 0.0
    if math.isnan(float(degrees)):
        return 0
    return int(round(float(degrees) / 90.0)) % 4 * 90


def _frame_matrix_rotation(frame: Any) -> Optional[float]:
    for item in getattr(frame, "side_data", None) or ():
        if "DISPLAYMATRIX" in str(getattr(item, "type", "")).upper():
            return display_matrix_rotation(bytes(item))
    return None


def display_matrix_rotation(matrix: bytes) -> float:
    """Counter-clockwise degrees of an FFmpeg display matrix (9 little-endian int32, 16.16 fixed point).

    Same result as libavutil's av_display_rotation_get; NaN for a degenerate matrix.
    """
    m = np.frombuffer(matrix[:36], dtype="<i4").astype(np.float64)
    scale0, scale1 = math.hypot(m[0], m[3]), math.hypot(m[1], m[4])
    if scale0 == 0 or scale1 == 0:
        return math.nan
    return -math.degrees(math.atan2(m[1] / scale1, m[0] / scale0))


def _rotate(rgb: np.ndarray, rotation: int) -> np.ndarray:
    if rotation == 90:
        return cv2.rotate(rgb, cv2.ROTATE_90_COUNTERCLOCKWISE)
    if rotation == 180:
        return cv2.rotate(rgb, cv2.ROTATE_180)
    if rotation == 270:
        return cv2.rotate(rgb, cv2.ROTATE_90_CLOCKWISE)
    return rgb


def _frame_to_rgb(frame: Any, rotation: int) -> np.ndarray:
    return _rotate(frame.to_ndarray(format="rgb24"), rotation)


# --------------------------------------------------------------------------- probe

_PROBE_CACHE: "OrderedDict[Tuple[Any, ...], VideoInfo]" = OrderedDict()
_CACHE_LOCK = threading.Lock()


def probe(path: PathLike, sequence_fps: float = 30.0, scan_limit: int = SCAN_LIMIT) -> VideoInfo:
    """Facts about a video file or a folder of frames; MediaError with one sentence if unusable.

    Results are cached per (path, size, mtime): the job, the tab's previews and the API
    probe the same file many times, and a full probe reads every packet of the file.
    """
    path = Path(path)
    _check_exists(path)
    try:
        stat = path.stat()
    except OSError as exc:
        raise MediaError(f"Cannot read {path}: {exc.strerror or exc}.") from None
    key = (str(path.resolve()), stat.st_size, stat.st_mtime_ns, float(sequence_fps), scan_limit)
    with _CACHE_LOCK:
        cached = _PROBE_CACHE.get(key)
    if cached is None:
        cached = _probe_sequence(path, sequence_fps) if path.is_dir() else _probe_video(path, scan_limit)
        with _CACHE_LOCK:
            _PROBE_CACHE[key] = cached
            while len(_PROBE_CACHE) > 32:
                _PROBE_CACHE.popitem(last=False)
    info = copy.deepcopy(cached)
    info.path = str(path)
    return info


def _probe_sequence(folder: Path, fps: float) -> VideoInfo:
    files = sequence_files(folder)
    if not files:
        raise MediaError(f"Folder {folder} has no PNG/JPG images; point to a video or a folder of frames.")
    height, width = read_image(files[0]).shape[:2]
    rate = Fraction(fps).limit_denominator(1001)
    return VideoInfo(
        path=str(folder), width=width, height=height, coded_width=width, coded_height=height, rotation=0,
        fps=float(rate), is_vfr=False, frame_count=len(files), frame_count_exact=True,
        duration=len(files) / float(rate), codec=files[0].suffix.lower().lstrip("."), audio=[],
        is_image_sequence=True, rate=rate, start_time=0.0, stream_index=0,
    )


def _first_frame(path: Path) -> Tuple[Any, int, int, str]:
    """Decode frame 0: proves the stream decodes and gives coded size and rotation."""
    container = _open(path)
    try:
        stream = _video_stream(container, path)
        frame = next(_decode_packets(container, stream, path), None)
        if frame is None:
            raise MediaError(f"{path} has no video frames; re-export it.")
        return frame, _frame_rotation(frame, stream), stream.index, stream.codec_context.name
    finally:
        container.close()


@dataclass
class _Scan:
    pts: List[int]  # sorted presentation timestamps (stream time base)
    last_duration: int  # duration of the last-presented packet (0 if unknown)
    packets: int  # packets with data (= frames)
    complete: bool  # reached the end of the stream


def _scan_packets(container: Any, stream: Any, path: Path, limit: int) -> _Scan:
    pts: List[int] = []
    durations: Dict[int, int] = {}
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
        raise MediaError(f"{path} is corrupt or truncated (reading failed after {packets} frames); re-export it.") from None
    pts.sort()
    if not complete and len(pts) > 32:
        pts = pts[:-16]  # B-frame reordering: the unread tail may still hold smaller pts
    return _Scan(pts=pts, last_duration=durations.get(pts[-1], 0) if pts else 0, packets=packets, complete=complete)


def _is_vfr(pts: List[int]) -> bool:
    diffs = np.diff(np.asarray(pts, dtype=np.int64))
    diffs = diffs[diffs > 0]
    if diffs.size < 2:
        return False
    median = float(np.median(diffs))
    # 1.5 ticks absorbs millisecond rounding (33/34 ms at 30 fps); 1% absorbs fine time bases.
    tolerance = max(1.5, 0.01 * median)
    return bool(np.any(np.abs(diffs - median) > tolerance))


def _nice_rate(fps: float) -> Fraction:
    """A standard rate within 2% of a VFR source's average, else the nearest whole fps."""
    best = min(STANDARD_RATES, key=lambda r: abs(float(r) - fps))
    if abs(float(best) - fps) <= 0.02 * fps:
        return best
    return Fraction(max(1, round(fps))) if fps >= 1 else Fraction(fps).limit_denominator(1000)


def _probe_video(path: Path, scan_limit: int) -> VideoInfo:
    first, rotation, stream_index, codec = _first_frame(path)
    container = _open(path)
    try:
        stream = _video_stream(container, path)
        tb = stream.time_base or Fraction(1, 90000)
        scan = _scan_packets(container, stream, path, scan_limit)
        if scan.complete and stream.frames and scan.packets < stream.frames:
            raise MediaError(
                f"{path} is truncated: it declares {stream.frames} frames but only {scan.packets} can be read; "
                "re-export or re-copy it."
            )
        timing = _timing(stream, container, scan, tb)
        audio = [_audio_info(s, container) for s in container.streams.audio]
    finally:
        container.close()
    coded_w, coded_h = first.width, first.height
    width, height = (coded_h, coded_w) if rotation in (90, 270) else (coded_w, coded_h)
    return VideoInfo(
        path=str(path), width=width, height=height, coded_width=coded_w, coded_height=coded_h,
        rotation=rotation, codec=codec, audio=audio, is_image_sequence=False, stream_index=stream_index,
        **timing,
    )


def _timing(stream: Any, container: Any, scan: _Scan, tb: Fraction) -> Dict[str, Any]:
    """fps, VFR flag, frame count and duration: from packet pts when the scan saw everything."""
    declared = stream.average_rate or stream.guessed_rate
    start = _origin(stream) if stream.start_time is not None else float(scan.pts[0] * tb) if scan.pts else 0.0
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
    return dict(fps=float(rate), rate=rate, is_vfr=is_vfr, frame_count=frame_count, frame_count_exact=exact,
                duration=duration, start_time=start)


def _median_step(pts: List[int]) -> int:
    diffs = np.diff(np.asarray(pts, dtype=np.int64))
    diffs = diffs[diffs > 0]
    return int(np.median(diffs)) if diffs.size else 0


def _pick_rate(declared: Optional[Fraction], measured: Optional[Fraction], is_vfr: bool) -> Fraction:
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
        return container.duration / 1_000_000
    return 0.0


def _audio_info(stream: Any, container: Any) -> AudioInfo:
    duration: Optional[float] = None
    if stream.duration and stream.time_base:
        duration = float(stream.duration * stream.time_base)
    elif container.duration:
        duration = container.duration / 1_000_000
    return AudioInfo(
        index=stream.index, codec=stream.codec_context.name, sample_rate=int(stream.codec_context.sample_rate or 0),
        channels=_channels(stream), duration=duration,
    )


# --------------------------------------------------------------------------- selection


def _rate_of(fps: Union[float, Fraction]) -> Fraction:
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
        fps=float(rate), rate=rate, resample=False, start_time=start, end_time=start + count / float(rate),
        # An estimated frame count must not cut the video short: then decode to the real end.
        start_frame=first, end_frame=stop if bounded else None, every_nth=source.every_nth, frame_count=count,
        frame_count_exact=bounded,
    )


def _plan_by_time(info: VideoInfo, source: SourceSpec) -> Selection:
    if source.target_fps is not None:
        rate = _rate_of(source.target_fps)
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
        fps=float(rate), rate=rate, resample=True, start_time=start, end_time=start + count / float(rate),
        start_frame=first, end_frame=source.end_frame, every_nth=source.every_nth, frame_count=count,
        frame_count_exact=True,
    )


def _check_not_empty(count: int, info: VideoInfo, source: SourceSpec) -> None:
    if count <= 0:
        raise SpecError(
            f"The selected range holds no frames: the source has {info.frame_count} frames over "
            f"{info.duration:.2f} s; adjust start/end time or frame."
        )


def _frame_times(info: VideoInfo) -> List[float]:
    """Video-timeline time of every source frame, by index (for index limits on VFR sources)."""
    if info.is_image_sequence or not info.is_vfr:
        return [i / info.fps for i in range(info.frame_count)]
    path = Path(info.path)
    container = _open(path)
    try:
        stream = _video_stream(container, path)
        scan = _scan_packets(container, stream, path, SCAN_LIMIT)
        return [float(p * stream.time_base) - info.start_time for p in scan.pts]
    finally:
        container.close()


# --------------------------------------------------------------------------- decoding


def _decode_packets(container: Any, stream: Any, path: Path) -> Iterator[Any]:
    """Decoded frames of one stream; a few damaged packets are skipped, many mean a corrupt file."""
    bad = 0
    for packet in container.demux(stream):
        try:
            frames = packet.decode()
        except av.error.FFmpegError:
            bad += 1
            if bad > MAX_BAD_PACKETS:
                raise MediaError(f"{path} is corrupt: too many frames fail to decode; re-export it.") from None
            continue
        bad = 0
        yield from frames


def _iter_video_raw(info: VideoInfo, seek_to: Optional[float]) -> Generator[_RawFrame, None, None]:
    """Source frames with index and video-timeline time; images are converted only on demand."""
    path = Path(info.path)
    container = _open(path)
    try:
        stream = _video_stream(container, path)
        tb = stream.time_base
        index_by_time = False
        if seek_to is not None and seek_to > SEEK_AFTER and not info.is_vfr:
            container.seek(int((info.start_time + seek_to) / tb), stream=stream, backward=True)
            index_by_time = True  # after a seek, counting is lost: CFR index = time x fps
        count = 0
        last_time = -1.0 / info.fps
        for frame in _decode_packets(container, stream, path):
            if frame.pts is not None:
                time = float(frame.pts * tb) - info.start_time
            else:
                time = last_time + 1.0 / info.fps
            index = int(round(time * info.fps)) if index_by_time else count
            yield _RawFrame(index=index, time=time, to_rgb=_converter(frame, info.rotation))
            count += 1
            last_time = time
    finally:
        container.close()


def _converter(frame: Any, rotation: int) -> Callable[[], np.ndarray]:
    return lambda: _frame_to_rgb(frame, rotation)


def _iter_sequence_raw(info: VideoInfo, first: int) -> Generator[_RawFrame, None, None]:
    files = sequence_files(info.path)
    for index in range(first, len(files)):
        file = files[index]
        yield _RawFrame(index=index, time=index / info.fps, to_rgb=lambda f=file: read_image(f))


def iter_frames(path: PathLike, source: SourceSpec, info: Optional[VideoInfo] = None) -> Iterator[SelectedFrame]:
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
    return _iter_video_raw(info, seek_to=max(0.0, seek_time - 1.0 / info.fps))


def _in_index_range(raw: Iterator[_RawFrame], sel: Selection) -> Iterator[_RawFrame]:
    for frame in raw:
        if frame.index < sel.start_frame:
            continue
        if sel.end_frame is not None and frame.index >= sel.end_frame:
            return
        yield frame


def _select_by_index(raw: Generator[_RawFrame, None, None], sel: Selection) -> Iterator[SelectedFrame]:
    out = 0
    with closing(raw):  # closes the container when selection stops early
        for frame in _in_index_range(raw, sel):
            if (frame.index - sel.start_frame) % sel.every_nth:
                continue
            yield SelectedFrame(index=out, source_index=frame.index, time=frame.time, image=frame.to_rgb())
            out += 1


def _select_by_time(raw: Generator[_RawFrame, None, None], sel: Selection) -> Iterator[SelectedFrame]:
    """Tick k shows the latest frame with time <= tick; ticks before the first frame show the first."""
    step = 1.0 / float(sel.rate)
    held: Optional[_RawFrame] = None
    held_rgb: Optional[np.ndarray] = None
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


def read_frame_at_time(path: PathLike, seconds: float, info: Optional[VideoInfo] = None, sequence_fps: float = 30.0) -> np.ndarray:
    """The frame shown at `seconds` on the video timeline (latest frame with pts <= seconds)."""
    info = info or probe(path, sequence_fps)
    if info.is_image_sequence:
        return read_frame_at(path, int(seconds * info.fps + 1e-6), info)
    chosen: Optional[_RawFrame] = None
    raw = _iter_video_raw(info, seek_to=max(0.0, seconds - 1.0 / info.fps))
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


def read_frame_at(path: PathLike, index: int, info: Optional[VideoInfo] = None, sequence_fps: float = 30.0) -> np.ndarray:
    """One source frame by index, RGB with rotation applied (for previews).

    Exact for constant-fps videos and frame folders; for a variable-fps video the index is
    mapped to time at the average fps, so it may land a frame or two away.
    """
    info = info or probe(path, sequence_fps)
    if not 0 <= index < info.frame_count:
        raise MediaError(f"Frame {index} is outside {path}, which has {info.frame_count} frames (0-{info.frame_count - 1}).")
    if info.is_image_sequence:
        return read_image(sequence_files(info.path)[index])
    return read_frame_at_time(path, index / info.fps, info)


# --------------------------------------------------------------------------- fitting


def fit_frame(image: np.ndarray, width: int, height: int, mode: str = "crop") -> np.ndarray:
    """Resize to width x height: 'crop' (center crop to the aspect), 'pad' (black bars), 'stretch'."""
    if mode not in ("crop", "pad", "stretch"):
        raise SpecError(f"Unknown fit mode '{mode}'; choose crop, pad or stretch.")
    src_h, src_w = image.shape[:2]
    if (src_w, src_h) == (width, height):
        return image
    if mode == "stretch":
        return _resize(image, width, height)
    if mode == "crop":
        scale = max(width / src_w, height / src_h)
        crop_w, crop_h = min(src_w, round(width / scale)), min(src_h, round(height / scale))
        x, y = (src_w - crop_w) // 2, (src_h - crop_h) // 2
        return _resize(image[y : y + crop_h, x : x + crop_w], width, height)
    scale = min(width / src_w, height / src_h)
    new_w, new_h = max(1, min(width, round(src_w * scale))), max(1, min(height, round(src_h * scale)))
    canvas = np.zeros((height, width) + image.shape[2:], dtype=image.dtype)
    x, y = (width - new_w) // 2, (height - new_h) // 2
    canvas[y : y + new_h, x : x + new_w] = _resize(image, new_w, new_h)
    return canvas


def _resize(image: np.ndarray, width: int, height: int) -> np.ndarray:
    src_h, src_w = image.shape[:2]
    if (src_w, src_h) == (width, height):
        return np.ascontiguousarray(image)
    # INTER_AREA averages when shrinking (no aliasing); cubic keeps edges crisp when enlarging.
    shrinking = width * height < src_w * src_h
    return cv2.resize(image, (width, height), interpolation=cv2.INTER_AREA if shrinking else cv2.INTER_CUBIC)


# --------------------------------------------------------------------------- encoding


def encode_video(
    frames: Iterable[FrameInput],
    out_path: PathLike,
    fps: Union[float, Fraction],
    crf: int = 18,
    audio_from: Optional[PathLike] = None,
    audio_start: float = 0.0,
    audio_end: Optional[float] = None,
    on_warning: Optional[WarningCallback] = None,
    preset: str = "veryfast",
) -> EncodeReport:
    """Encode RGB frames (arrays, PIL images or image paths) to H.264 MP4, atomically.

    Audio from `audio_from` (a source video) is cut to [audio_start, audio_end) on its video
    timeline, re-encoded to AAC and aligned so it starts with frame 0; it never runs past the
    last frame. A damaged audio track is dropped (audio_kept=False) and explained in audio_note.
    """
    rate = _rate_of(fps)
    warn = on_warning or (lambda message: None)
    iterator = iter(frames)
    first = next(iterator, None)
    if first is None:
        raise MediaError(f"There are no frames to encode into {out_path}; render some frames first.")
    first_rgb = _load_frame(first)
    with atomic_path(out_path, suffix=".mp4") as tmp:
        # faststart puts the index first, so players (and the gradio tab) start before the end loads.
        container = av.open(str(tmp), mode="w", format="mp4", options={"movflags": "+faststart"})
        try:
            writer = _VideoWriter(container, rate, crf, preset, first_rgb.shape[1], first_rgb.shape[0], warn)
            audio = _AudioCopier.open(container, audio_from, audio_start, audio_end, warn)
            writer.write(first_rgb)
            audio.feed_until(writer.frames / rate)
            for item in iterator:
                writer.write(_load_frame(item))
                audio.feed_until(writer.frames / rate)
            writer.finish()
            audio.finish(writer.frames / rate)
        except BaseException:
            _close_quietly(container)  # the temp file is discarded by atomic_path
            raise
        container.close()
    return EncodeReport(
        path=str(out_path), frames=writer.frames, fps=float(rate), width=writer.width, height=writer.height,
        duration=float(writer.frames / rate), audio_kept=audio.kept, audio_note=audio.note,
    )


def _close_quietly(container: Any) -> None:
    try:
        container.close()
    except (av.error.FFmpegError, OSError, ValueError):
        pass


def _load_frame(item: FrameInput) -> np.ndarray:
    if isinstance(item, np.ndarray):
        return as_rgb(item)
    if isinstance(item, (str, os.PathLike)):
        return read_image(item)
    if hasattr(item, "convert"):  # PIL.Image
        return np.asarray(item.convert("RGB"))
    raise TypeError(f"cannot encode a frame of type {type(item).__name__}")


class _VideoWriter:
    """libx264 yuv420p stream; frame n has pts n in a 1/fps time base (constant frame rate)."""

    def __init__(self, container: Any, rate: Fraction, crf: int, preset: str, width: int, height: int, warn: WarningCallback) -> None:
        self.container = container
        self.source_size = (width, height)
        # yuv420p subsamples chroma 2x2, so H.264 needs even sizes: pad one edge row/column.
        self.width, self.height = width + width % 2, height + height % 2
        if (self.width, self.height) != (width, height):
            warn(f"Frames are {width}x{height}; padded to {self.width}x{self.height} because H.264 needs even sizes.")
        try:
            self.stream = container.add_stream(
                "libx264", rate=rate,
                # Tag the BT.601 matrix swscale uses for RGB->YUV, so players convert back exactly.
                options={"crf": str(crf), "preset": preset, "x264-params": "colorprim=bt709:transfer=bt709:colormatrix=smpte170m"},
            )
        except (av.error.FFmpegError, ValueError) as exc:  # e.g. a PyAV build without libx264
            raise OutputError(f"Cannot start the H.264 encoder ({_short(exc)}); install PyAV from its PyPI wheels.") from None
        self.stream.width, self.stream.height = self.width, self.height
        self.stream.pix_fmt = "yuv420p"
        self.frames = 0

    def write(self, rgb: np.ndarray) -> None:
        if (rgb.shape[1], rgb.shape[0]) != self.source_size:
            raise MediaError(
                f"Frame {self.frames} is {rgb.shape[1]}x{rgb.shape[0]} but the first frame is "
                f"{self.source_size[0]}x{self.source_size[1]}; all frames of a video must share one size."
            )
        if (self.width, self.height) != self.source_size:
            rgb = cv2.copyMakeBorder(rgb, 0, self.height - rgb.shape[0], 0, self.width - rgb.shape[1], cv2.BORDER_REPLICATE)
        frame = av.VideoFrame.from_ndarray(rgb, format="rgb24")
        frame.pts = self.frames
        self.container.mux(self.stream.encode(frame))
        self.frames += 1

    def finish(self) -> None:
        self.container.mux(self.stream.encode(None))


class _AudioCopier:
    """Copies one audio track, cut to a video-timeline range, into the output as AAC.

    Output sample 0 is at the first video frame. Source timestamps place every decoded chunk,
    so a late-starting track gets leading silence and a gap in the source stays a gap.
    """

    def __init__(self) -> None:
        self.kept = False
        self.note = ""
        self.output: Any = None
        self.source: Any = None
        self.warn: WarningCallback = lambda message: None

    @classmethod
    def open(cls, container: Any, source: Optional[PathLike], start: float, end: Optional[float], warn: WarningCallback) -> "_AudioCopier":
        copier = cls()
        copier.warn = warn
        if source is None:
            return copier
        source = Path(source)
        if source.is_dir():
            copier.note = "The source is a folder of frames, which has no audio; the result is silent."
            return copier
        try:
            copier._start(container, source, start, end)
        except _NoAudio as reason:
            copier._close_source()
            copier.note = str(reason)
        except (av.error.FFmpegError, MediaError, OSError, ValueError, RuntimeError):
            copier._close_source()
            copier.note = f"The audio track of {source} is damaged or unreadable, so the result has no audio."
            warn(copier.note)
        return copier

    def _start(self, container: Any, source: Path, start: float, end: Optional[float]) -> None:
        self.source = _open(source)
        if not self.source.streams.audio:
            raise _NoAudio(f"{source} has no audio track; the result is silent.")
        stream = self.source.streams.audio[0]
        video_streams = _real_video_streams(self.source)
        origin = _origin(video_streams[0]) if video_streams else _origin(stream)
        self.abs_start = origin + start
        if self.abs_start > 0.5:
            # Audio packets are all key frames; the backward seek lands just before the start.
            self.source.seek(int((self.abs_start - 0.25) / stream.time_base), stream=stream, backward=True)
        sample_rate = int(stream.codec_context.sample_rate or 0)
        self.rate = sample_rate if sample_rate in AAC_RATES else 48000
        self.layout = "mono" if _channels(stream) == 1 else "stereo"
        self.limit: float = math.inf if end is None else max(0, round((end - start) * self.rate))
        if self.limit == 0:
            raise _NoAudio("The audio range is empty, so the result is silent.")
        self.resampler = av.AudioResampler(format="fltp", layout=self.layout, rate=self.rate)
        self.position = 0
        self.chunks = self._chunks(_decode_packets(self.source, stream, source))
        self.pending = [self._first_chunk(source)]
        self.output = container.add_stream("aac", rate=self.rate)
        self.output.codec_context.layout = self.layout
        self.output.codec_context.bit_rate = 192_000 if self.layout == "stereo" else 128_000
        self.container, self.written = container, 0
        self.kept = True

    def _first_chunk(self, source: Path) -> Tuple[int, np.ndarray]:
        """Decode up to the first audio that reaches the start: proves the track decodes."""
        for position, samples in self.chunks:
            if position + samples.shape[1] > 0:
                return position, samples
        raise _NoAudio(f"The audio of {source} ends before the selection starts; the result is silent.")

    def _chunks(self, decoded: Iterator[Any]) -> Iterator[Tuple[int, np.ndarray]]:
        """(first sample's position on the output timeline, fltp samples) per resampled chunk."""
        for frame in decoded:
            yield from self._place(self.resampler.resample(frame))
        yield from self._place(self.resampler.resample(None))

    def _place(self, frames: List[Any]) -> Iterator[Tuple[int, np.ndarray]]:
        for frame in frames:
            samples = frame.to_ndarray().reshape(-1, frame.samples).astype(np.float32, copy=False)
            if frame.pts is not None and frame.time_base is not None:
                self.position = round((float(frame.pts * frame.time_base) - self.abs_start) * self.rate)
            yield self.position, samples
            self.position += frame.samples

    def feed_until(self, seconds: Fraction) -> None:
        """Write audio up to `seconds` of output (interleaved with video so muxing stays streamed)."""
        if not self.kept:
            return
        target = int(min(self.limit, math.ceil(seconds * self.rate)))
        try:
            while self.written < target:
                chunk = self.pending.pop() if self.pending else next(self.chunks, None)
                if chunk is None:
                    return
                self._write_chunk(chunk, target)
        except (av.error.FFmpegError, MediaError):
            self._stop(f"The source audio is damaged after {self.written / self.rate:.2f} s of the result, so the rest is silent.")

    def _write_chunk(self, chunk: Tuple[int, np.ndarray], target: int) -> None:
        position, samples = chunk
        if position > self.written:  # the track starts late or has a gap: silence keeps sync
            self._encode(np.zeros((samples.shape[0], min(position, target) - self.written), dtype=np.float32))
        skip = max(0, self.written - position)
        take = min(samples.shape[1] - skip, target - self.written)
        if take > 0:
            self._encode(samples[:, skip : skip + take])
        if skip + max(take, 0) < samples.shape[1]:
            self.pending.append(chunk)  # the rest belongs after `target`; skip is recomputed then

    def _encode(self, samples: np.ndarray) -> None:
        if samples.shape[1] <= 0:
            return
        frame = av.AudioFrame.from_ndarray(np.ascontiguousarray(samples), format="fltp", layout=self.layout)
        frame.sample_rate = self.rate
        frame.pts = self.written
        frame.time_base = Fraction(1, self.rate)
        self.container.mux(self.output.encode(frame))
        self.written += samples.shape[1]

    def finish(self, video_seconds: Fraction) -> None:
        """Write the audio that belongs to the video's length, then flush the encoder."""
        if self.output is None:
            return
        if self.kept:
            self.limit = min(self.limit, round(video_seconds * self.rate))
            self.feed_until(video_seconds)
        try:
            self.container.mux(self.output.encode(None))
        finally:
            self._close_source()

    def _stop(self, note: str) -> None:
        self.kept = self.written > 0
        self.note = note
        self.warn(note)
        self._close_source()

    def _close_source(self) -> None:
        if self.source is not None:
            self.source.close()
            self.source = None


class _NoAudio(Exception):
    """The source has no usable audio for the range: not an error, just a silent result."""


def _short(exc: BaseException) -> str:
    text = str(exc).strip().rstrip(".")
    return text if len(text) <= 120 else text[:117] + "..."
