"""The source's audio track, cut to a video-timeline range and re-encoded as AAC into the result."""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator
from fractions import Fraction
from pathlib import Path
from typing import Any

import av
import numpy as np

from ..errors import MediaError
from .container import PathLike, channel_count, decode_packets, open_input, real_video_streams, stream_origin

WarningCallback = Callable[[str], None]
AAC_RATES = (96000, 88200, 64000, 48000, 44100, 32000, 24000, 22050, 16000, 12000, 11025, 8000)


class AudioCopier:
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
    def open(
        cls, container: Any, source: PathLike | None, start: float, end: float | None, warn: WarningCallback
    ) -> AudioCopier:
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
            copier.close_source()
            copier.note = str(reason)
        except (av.error.FFmpegError, MediaError, OSError, ValueError, RuntimeError):
            copier.close_source()
            copier.note = f"The audio track of {source} is damaged or unreadable, so the result has no audio."
            warn(copier.note)
        return copier

    def _start(self, container: Any, source: Path, start: float, end: float | None) -> None:
        self.source = open_input(source)
        if not self.source.streams.audio:
            raise _NoAudio(f"{source} has no audio track; the result is silent.")
        stream = self.source.streams.audio[0]
        stream.codec_context.thread_count = 1  # closed early by design: no worker threads ("Decoder threads")
        video_streams = real_video_streams(self.source)
        origin = stream_origin(video_streams[0]) if video_streams else stream_origin(stream)
        self.abs_start = origin + start
        if self.abs_start > 0.5:
            # Audio packets are all key frames; the backward seek lands just before the start.
            self.source.seek(int((self.abs_start - 0.25) / stream.time_base), stream=stream, backward=True)
        sample_rate = int(stream.codec_context.sample_rate or 0)
        self.rate = sample_rate if sample_rate in AAC_RATES else 48000
        self.layout = "mono" if channel_count(stream) == 1 else "stereo"
        self.limit: float = math.inf if end is None else max(0, round((end - start) * self.rate))
        if self.limit == 0:
            raise _NoAudio("The audio range is empty, so the result is silent.")
        self.resampler = av.AudioResampler(format="fltp", layout=self.layout, rate=self.rate)
        self.position = 0
        self.chunks = self._chunks(decode_packets(self.source, stream, source))
        self.pending = [self._first_chunk(source)]
        self.output = container.add_stream("aac", rate=self.rate)
        self.output.codec_context.layout = self.layout
        self.output.codec_context.bit_rate = 192_000 if self.layout == "stereo" else 128_000
        self.container, self.written = container, 0
        self.kept = True

    def _first_chunk(self, source: Path) -> tuple[int, np.ndarray]:
        """Decode up to the first audio that reaches the start: proves the track decodes."""
        for position, samples in self.chunks:
            if position + samples.shape[1] > 0:
                return position, samples
        raise _NoAudio(f"The audio of {source} ends before the selection starts; the result is silent.")

    def _chunks(self, decoded: Iterator[Any]) -> Iterator[tuple[int, np.ndarray]]:
        """(first sample's position on the output timeline, fltp samples) per resampled chunk."""
        for frame in decoded:
            yield from self._place(self.resampler.resample(frame))
        yield from self._place(self.resampler.resample(None))

    def _place(self, frames: list[Any]) -> Iterator[tuple[int, np.ndarray]]:
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
            self._stop(
                f"The source audio is damaged after {self.written / self.rate:.2f} s of the result, "
                "so the rest is silent."
            )

    def _write_chunk(self, chunk: tuple[int, np.ndarray], target: int) -> None:
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
            self.close_source()

    def _stop(self, note: str) -> None:
        self.kept = self.written > 0
        self.note = note
        self.warn(note)
        self.close_source()

    def close_source(self) -> None:
        if self.source is not None:
            self.source.close()
            self.source = None


class _NoAudio(Exception):
    """The source has no usable audio for the range: not an error, just a silent result."""
