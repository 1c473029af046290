"""Encode RGB frames to H.264 MP4 (atomically), with the source's audio cut to the selection."""

from __future__ import annotations

import os
from collections.abc import Iterable
from dataclasses import dataclass
from fractions import Fraction
from typing import Any

import av
import cv2
import numpy as np

from ..atomic import atomic_path
from ..errors import MediaError, OutputError
from ..imageio import as_rgb, read_image
from .audio import AudioCopier, WarningCallback
from .container import PathLike, short_error
from .selection import rate_of

FrameInput = PathLike | np.ndarray | Any  # Any: a PIL.Image


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


def encode_video(
    frames: Iterable[FrameInput],
    out_path: PathLike,
    fps: float | Fraction,
    crf: int = 18,
    audio_from: PathLike | None = None,
    audio_start: float = 0.0,
    audio_end: float | None = None,
    on_warning: WarningCallback | None = None,
    preset: str = "veryfast",
) -> EncodeReport:
    """Encode RGB frames (arrays, PIL images or image paths) to H.264 MP4, atomically.

    Audio from `audio_from` (a source video) is cut to [audio_start, audio_end) on its video
    timeline, re-encoded to AAC and aligned so it starts with frame 0; it never runs past the
    last frame. A damaged audio track is dropped (audio_kept=False) and explained in audio_note.
    """
    rate = rate_of(fps)
    warn = on_warning or (lambda message: None)
    iterator = iter(frames)
    first = next(iterator, None)
    if first is None:
        raise MediaError(f"There are no frames to encode into {out_path}; render some frames first.")
    first_rgb = _load_frame(first)
    with atomic_path(out_path, suffix=".mp4") as tmp:
        # faststart puts the index first, so players (and the gradio tab) start before the end loads.
        container = av.open(str(tmp), mode="w", format="mp4", options={"movflags": "+faststart"})
        audio: AudioCopier | None = None
        try:
            writer = _VideoWriter(container, rate, crf, preset, first_rgb.shape[1], first_rgb.shape[0], warn)
            audio = AudioCopier.open(container, audio_from, audio_start, audio_end, warn)
            writer.write(first_rgb)
            audio.feed_until(writer.frames / rate)
            for item in iterator:
                writer.write(_load_frame(item))
                audio.feed_until(writer.frames / rate)
            writer.finish()
            audio.finish(writer.frames / rate)
        except BaseException:
            _drain_encoders(list(container.streams))
            _close_quietly(container)  # the temp file is discarded by atomic_path
            if audio is not None:  # not left open for as long as the error (and its traceback) is kept
                audio.close_source()
            raise
        container.close()
    return EncodeReport(
        path=str(out_path),
        frames=writer.frames,
        fps=float(rate),
        width=writer.width,
        height=writer.height,
        duration=float(writer.frames / rate),
        audio_kept=audio.kept,
        audio_note=audio.note,
    )


def _drain_encoders(streams: list[Any]) -> None:
    """Before an early close: let each encoder finish its in-flight work (the packets are dropped).

    libx264 encodes on its own threads, and freeing it waits for them with the GIL held; drained
    (PyAV sends and receives without the GIL) they are idle, so none can be caught in PyAV's log
    callback at that moment (see "Decoder threads" in container.py). The normal path drains with encode(None).
    """
    for stream in streams:
        if not stream.codec_context.is_open:
            continue
        try:
            stream.encode(None)
        except (av.error.FFmpegError, ValueError, RuntimeError):
            pass  # already failing: the error being raised is the one the user needs


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

    def __init__(
        self, container: Any, rate: Fraction, crf: int, preset: str, width: int, height: int, warn: WarningCallback
    ) -> None:
        self.container = container
        self.source_size = (width, height)
        # yuv420p subsamples chroma 2x2, so H.264 needs even sizes: pad one edge row/column.
        self.width, self.height = width + width % 2, height + height % 2
        if (self.width, self.height) != (width, height):
            warn(f"Frames are {width}x{height}; padded to {self.width}x{self.height} because H.264 needs even sizes.")
        try:
            self.stream = container.add_stream(
                "libx264",
                rate=rate,
                # Tag the BT.601 matrix swscale uses for RGB->YUV, so players convert back exactly.
                options={
                    "crf": str(crf),
                    "preset": preset,
                    "x264-params": "colorprim=bt709:transfer=bt709:colormatrix=smpte170m",
                },
            )
        except (av.error.FFmpegError, ValueError) as exc:  # e.g. a PyAV build without libx264
            raise OutputError(
                f"Cannot start the H.264 encoder ({short_error(exc)}); install PyAV from its PyPI wheels."
            ) from None
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
            rgb = cv2.copyMakeBorder(
                rgb, 0, self.height - rgb.shape[0], 0, self.width - rgb.shape[1], cv2.BORDER_REPLICATE
            )
        frame = av.VideoFrame.from_ndarray(rgb, format="rgb24")
        frame.pts = self.frames
        self.container.mux(self.stream.encode(frame))
        self.frames += 1

    def finish(self) -> None:
        self.container.mux(self.stream.encode(None))
