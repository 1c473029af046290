"""Opening media with PyAV, and the rule that keeps PyAV from freezing the WebUI ("Decoder threads").

Every container this package reads is opened here (`open_input`) and every video decoder comes
from `decoding`, so the one place that decides FFmpeg's decoder threads is this module.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import av

from ..errors import MediaError

# The name users, docs (docs/webui-compat.md) and log filters know from before the split.
log = logging.getLogger("vidstyle.video")

PathLike = str | os.PathLike[str]

# Consecutive undecodable packets tolerated (skipped) before a file counts as corrupt.
MAX_BAD_PACKETS = 8


def check_exists(path: Path) -> None:
    if not path.exists():
        raise MediaError(f"{path} does not exist; check the path.")


def open_input(path: Path) -> av.container.InputContainer:
    try:
        return av.open(str(path), mode="r", metadata_errors="ignore")
    except (FileNotFoundError, IsADirectoryError):
        raise MediaError(f"{path} does not exist; check the path.") from None
    except PermissionError:
        raise MediaError(f"Cannot read {path}: permission denied.") from None
    except (av.error.FFmpegError, OSError, ValueError):
        raise MediaError(
            f"{path} cannot be read as a video (not a video, or corrupt/truncated); "
            "check the file or re-export it as MP4."
        ) from None


def _video_stream(container: Any, path: Path, frame_threads: bool = False) -> Any:
    streams = real_video_streams(container)
    if not streams:
        raise MediaError(f"{path} has no video stream; choose a video file or a folder of frames.")
    stream = streams[0]
    if frame_threads and _CAN_PARK_THREADS:
        stream.codec_context.thread_type = "AUTO"  # frame + slice threads: decoding is the engine's main CPU cost
    else:
        stream.codec_context.thread_count = 1  # no FFmpeg worker threads: see "Decoder threads" below
    return stream


# --------------------------------------------------------------------------- decoder threads
#
# Decoder threads and PyAV's log callback (issue 9; docs/webui-compat.md). PyAV frees a codec
# context (avcodec_free_context) while holding the GIL, and freeing a frame-threaded decoder waits
# for its FFmpeg worker threads to finish their packets. Once anything in the process has called
# `av.logging.set_level(<int>)` -- torchvision does at import, so inside the WebUI it is always on --
# every FFmpeg log call runs PyAV's callback, which takes the GIL, also on those worker threads
# (H.264 logs each NAL unit at debug level; PyAV 12 takes the GIL even for messages it then drops).
# Free a decoder while a worker still works and the free waits for the worker, the worker for the
# GIL: the whole process stops. Switching PyAV's logging off would change state that torchvision
# and other extensions share (and silence their errors), so instead no decoder of ours is ever
# freed while a worker of it can still run:
# * one-frame reads (probe's first frame, preview frames by index or time) decode on the calling
#   thread alone (thread_count=1): no worker exists, so every log call runs on a thread that holds
#   or can take the GIL, whenever the context is freed (even late, by the cyclic GC on any thread).
#   A single frame near a keyframe gains little from frame threads, which first fill a pipeline.
# * streamed decoding (iter_frames) keeps frame threads, most of the engine's decode speed, and
#   parks them before the container is let go, on every exit path: the end of the video, an
#   exception, and a generator closed early (`decoding`). Parking is avcodec_flush_buffers, which
#   PyAV runs without the GIL, so workers blocked in the log callback get the GIL and finish.
#   PyAV < 12.1 has no CodecContext.flush_buffers; there, streamed decoding uses one thread too.
# Audio decoders get thread_count=1 as well, and encoders are drained before an early close.
_CAN_PARK_THREADS = hasattr(av.codec.context.CodecContext, "flush_buffers")


@contextmanager
def decoding(path: Path, frame_threads: bool = False) -> Iterator[tuple[Any, Any]]:
    """(container, video stream) of `path`; on exit no FFmpeg thread of its decoder is still busy."""
    container = open_input(path)
    try:
        stream = _video_stream(container, path, frame_threads)
        try:
            yield container, stream
        finally:
            _park_decoder_threads(stream)
    finally:
        container.close()


def _park_decoder_threads(stream: Any) -> None:
    """Wait, with the GIL released, until the decoder's worker threads are idle."""
    context = stream.codec_context
    if context.is_open and context.thread_count != 1:
        context.flush_buffers()


def real_video_streams(container: Any) -> list[Any]:
    """Video streams that are not cover art (an MP3/M4A's picture is a one-frame 'video')."""
    real = []
    for stream in container.streams.video:
        disposition = getattr(stream, "disposition", None)  # av >= 13
        cover = getattr(type(disposition), "attached_pic", None) if disposition is not None else None
        if not (cover is not None and disposition & cover):
            real.append(stream)
    return real


def stream_origin(stream: Any) -> float:
    """Container time of the stream's first frame; our timeline starts there."""
    if stream.start_time is None or stream.time_base is None:
        return 0.0
    return float(stream.start_time * stream.time_base)


def channel_count(stream: Any) -> int:
    layout = getattr(stream, "layout", None) or getattr(stream.codec_context, "layout", None)
    if layout is not None and getattr(layout, "channels", None):
        return len(layout.channels)
    return int(getattr(stream.codec_context, "channels", 0) or 0)


def decode_packets(container: Any, stream: Any, path: Path) -> Iterator[Any]:
    """Decoded frames of one stream; a few damaged packets are skipped, many mean a corrupt file."""
    bad = 0
    for packet in container.demux(stream):
        try:
            frames = packet.decode()
        except av.error.FFmpegError as exc:
            bad += 1
            # FFmpeg's reason goes to our log whether or not PyAV's log callback is on.
            log.warning("%s: skipped a packet that does not decode (%s)", path, short_error(exc))
            if bad > MAX_BAD_PACKETS:
                raise MediaError(f"{path} is corrupt: too many frames fail to decode; re-export it.") from None
            continue
        bad = 0
        yield from frames


def short_error(exc: BaseException) -> str:
    text = str(exc).strip().rstrip(".")
    return text if len(text) <= 120 else text[:117] + "..."
