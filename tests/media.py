"""Small test media made in code (no downloads), shared by every test that needs a video.

Each frame shows a textured background that pans and zooms a little (camera-like motion),
a stick figure walking across, and a 10-bit barcode strip along the bottom that encodes the
frame's index, so tests can tell exactly which source frame ended up where (`read_marker`).
"Flash" frames are drawn bright and carry a 1 kHz beep in the audio at the same moment, so
A/V sync survives a round trip only if both land together (`flash_times_in`, `beep_times_in`).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path

import av
import cv2
import numpy as np

MARKER_BITS = 10  # frame indices 0..1023
BEEP_HZ = 1000.0
HUM_HZ = 220.0
BEEP_SECONDS = 0.05


@dataclass
class MadeVideo:
    path: Path
    frame_times: list[float]  # video-timeline pts of every frame (seconds)
    fps: float  # nominal rate (VFR: the rate of the base grid)
    size: tuple[int, int]  # coded (width, height)
    seconds: float
    audio: bool
    beep_times: list[float] = field(default_factory=list)

    @property
    def frame_count(self) -> int:
        return len(self.frame_times)

    # Usable wherever a path is expected: Path(made), open(made), av.open(str(made)).
    def __fspath__(self) -> str:
        return str(self.path)

    def __str__(self) -> str:
        return str(self.path)


def marker_height(height: int) -> int:
    return max(6, height // 8)


def draw_frame(index: int, t: float, size: tuple[int, int], flash: bool = False) -> np.ndarray:
    """One RGB frame: panning texture, a walking figure, and the index barcode at the bottom."""
    width, height = size
    ys, xs = np.mgrid[0:height, 0:width].astype(np.float32)
    zoom = 1.0 + 0.05 * t
    pan = 12.0 * t
    u, v = (xs - width / 2) / zoom + pan, (ys - height / 2) / zoom
    texture = 0.5 + 0.25 * np.sin(u / 5.0) + 0.25 * np.cos(v / 7.0 + u / 11.0)
    image = np.stack([texture * 90 + 40, texture * 60 + 70, texture * 110 + 60], axis=-1).astype(np.uint8)
    x = int((0.15 + 0.7 * ((t * 0.4) % 1.0)) * width)
    y = height // 2 - 4
    scale = max(2, height // 16)
    cv2.circle(image, (x, y - 3 * scale), scale + 1, (250, 220, 200), -1)
    cv2.line(image, (x, y - 2 * scale), (x, y + 2 * scale), (220, 40, 40), max(1, scale // 2))
    swing = int(2 * scale * np.sin(t * 9.0))
    cv2.line(image, (x, y + 2 * scale), (x + swing, y + 4 * scale), (30, 30, 200), max(1, scale // 2))
    cv2.line(image, (x, y + 2 * scale), (x - swing, y + 4 * scale), (30, 30, 200), max(1, scale // 2))
    if flash:
        image[:] = 235
    _draw_marker(image, index)
    return image


def _draw_marker(image: np.ndarray, index: int) -> None:
    height, width = image.shape[:2]
    strip = marker_height(height)
    cell = width // MARKER_BITS
    image[height - strip :, :] = 0
    for bit in range(MARKER_BITS):
        if (index >> bit) & 1:
            image[height - strip :, bit * cell : (bit + 1) * cell] = 255


def read_marker(image: np.ndarray) -> int:
    """The frame index drawn by `draw_frame` (image as coded, i.e. before display rotation)."""
    height, width = image.shape[:2]
    strip = marker_height(height)
    cell = width // MARKER_BITS
    band = image[height - strip + strip // 3 : height - strip // 3].astype(np.float32).mean(axis=(0, 2))
    value = 0
    for bit in range(MARKER_BITS):
        lo, hi = bit * cell + cell // 4, (bit + 1) * cell - cell // 4
        if band[lo:hi].mean() > 128:
            value |= 1 << bit
    return value


def is_flash(image: np.ndarray) -> bool:
    body = image[: image.shape[0] - marker_height(image.shape[0])]
    return float(body.mean()) > 200


def vfr_times(seconds: float, fps: float) -> list[float]:
    """Irregular frame times: steps of 1, 1, 2, 1, 3 frame periods, repeating (like a game capture)."""
    pattern = (1, 1, 2, 1, 3)
    times, t, k = [], 0.0, 0
    while t < seconds - 1e-9:
        times.append(round(t, 6))
        t += pattern[k % len(pattern)] / fps
        k += 1
    return times


def audio_track(seconds: float, sample_rate: int, beep_times: Sequence[float]) -> np.ndarray:
    """Mono float32 samples: a quiet hum throughout, loud 1 kHz beeps at beep_times."""
    t = np.arange(int(round(seconds * sample_rate))) / sample_rate
    samples = 0.05 * np.sin(2 * np.pi * HUM_HZ * t)
    for start in beep_times:
        inside = (t >= start) & (t < start + BEEP_SECONDS)
        samples[inside] = 0.8 * np.sin(2 * np.pi * BEEP_HZ * (t[inside] - start))
    return samples.astype(np.float32)


def make_video(
    path: str | Path,
    seconds: float = 1.0,
    fps: float = 30,
    size: tuple[int, int] = (96, 64),
    audio: bool = True,
    vfr: bool = False,
    rotation: int = 0,
    flash_times: Sequence[float] = (),
    frame_times: Sequence[float] | None = None,
    sample_rate: int = 44100,
    channels: int = 2,
    crf: int = 12,
    audio_delay: float = 0.0,
) -> MadeVideo:
    """Write a small H.264/AAC MP4 (or .mkv by suffix) and describe what is in it.

    rotation: counter-clockwise display rotation stored as display-matrix side data
    (PyAV >= 18 `VideoStream.set_display_rotation`; players and `vidstyle.video` turn the
    frames for display). Frames at flash_times are bright and the audio beeps there.
    audio_delay: the audio track starts this many seconds after the first frame (beeps still
    sound at flash_times), as in captures whose sound device started late.
    """
    path = Path(path)
    times = (
        list(frame_times)
        if frame_times is not None
        else (vfr_times(seconds, fps) if vfr else [i / fps for i in range(int(round(seconds * fps)))])
    )
    container = av.open(str(path), mode="w")
    video = container.add_stream(
        "libx264", rate=Fraction(fps).limit_denominator(1001), options={"crf": str(crf), "preset": "veryfast"}
    )
    video.width, video.height = size
    video.pix_fmt = "yuv420p"
    time_base = Fraction(1, 90000) if (vfr or frame_times is not None) else Fraction(1) / video.codec_context.framerate
    if vfr or frame_times is not None:
        video.codec_context.time_base = time_base
    if rotation:
        if not hasattr(video, "set_display_rotation"):
            raise RuntimeError("this PyAV cannot write a display rotation (needs PyAV >= 18)")
        video.set_display_rotation(rotation)
    sound = None
    if audio:
        sound = container.add_stream("aac", rate=sample_rate)
        sound.codec_context.layout = "mono" if channels == 1 else "stereo"
    samples = audio_track(seconds, sample_rate, flash_times) if audio else None
    written = int(round(audio_delay * sample_rate))
    flash_frames = {min(range(len(times)), key=lambda i: abs(times[i] - f)) for f in flash_times}
    for index, t in enumerate(times):
        frame = av.VideoFrame.from_ndarray(draw_frame(index, t, size, flash=index in flash_frames), format="rgb24")
        frame.pts = int(round(t / time_base))
        frame.time_base = time_base
        container.mux(video.encode(frame))
        if sound is not None and samples is not None:
            upto = min(
                len(samples), int(round((times[index + 1] if index + 1 < len(times) else seconds) * sample_rate))
            )
            written = _write_audio(container, sound, samples, written, upto, sample_rate, channels)
    container.mux(video.encode(None))
    if sound is not None and samples is not None:
        _write_audio(container, sound, samples, written, len(samples), sample_rate, channels)
        container.mux(sound.encode(None))
    container.close()
    return MadeVideo(
        path=path,
        frame_times=times,
        fps=float(fps),
        size=size,
        seconds=seconds,
        audio=audio,
        beep_times=list(flash_times) if audio else [],
    )


def _write_audio(
    container: av.container.OutputContainer,
    stream: av.audio.stream.AudioStream,
    samples: np.ndarray,
    start: int,
    end: int,
    sample_rate: int,
    channels: int,
) -> int:
    if end <= start:
        return start
    chunk = samples[start:end]
    planes = np.stack([chunk] * channels) if channels > 1 else chunk[None, :]
    frame = av.AudioFrame.from_ndarray(
        np.ascontiguousarray(planes), format="fltp", layout="mono" if channels == 1 else "stereo"
    )
    frame.sample_rate = sample_rate
    frame.pts = start
    frame.time_base = Fraction(1, sample_rate)
    container.mux(stream.encode(frame))
    return end


def make_image_folder(
    folder: str | Path, count: int = 12, size: tuple[int, int] = (96, 64), ext: str = "png", prefix: str = "frame_"
) -> list[Path]:
    """frame_1.png ... frame_N.png (unpadded numbers, so plain string sorting would be wrong)."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for index in range(count):
        path = folder / f"{prefix}{index + 1}.{ext}"
        bgr = cv2.cvtColor(draw_frame(index, index / 30.0, size), cv2.COLOR_RGB2BGR)
        cv2.imwrite(str(path), bgr, [cv2.IMWRITE_JPEG_QUALITY, 98] if ext in ("jpg", "jpeg") else [])
        paths.append(path)
    return paths


# --------------------------------------------------------------------------- reading back


def decode_video(path: str | Path) -> list[tuple[float, np.ndarray]]:
    """(pts seconds from the first frame, coded RGB image) of every frame; for small test files."""
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        origin = float(stream.start_time * stream.time_base) if stream.start_time is not None else 0.0
        return [
            (float(f.pts * stream.time_base) - origin, f.to_ndarray(format="rgb24")) for f in container.decode(stream)
        ]


def decode_audio(path: str | Path) -> tuple[np.ndarray, int, float]:
    """(mono float samples, sample rate, container time of the first sample relative to the video start)."""
    with av.open(str(path)) as container:
        video = container.streams.video[0] if container.streams.video else None
        origin = (
            float(video.start_time * video.time_base) if video is not None and video.start_time is not None else 0.0
        )
        stream = container.streams.audio[0]
        chunks, first = [], None
        for frame in container.decode(stream):
            if first is None:
                first = float(frame.pts * frame.time_base)
            data = frame.to_ndarray().astype(np.float32)
            chunks.append(data.reshape(-1, frame.samples).mean(axis=0))
        samples = np.concatenate(chunks) if chunks else np.zeros(0, np.float32)
        return samples, int(stream.codec_context.sample_rate), (first or 0.0) - origin


def beep_times_in(path: str | Path, threshold: float = 0.4) -> list[float]:
    """Onset times (video timeline) of the loud beeps in a file's audio."""
    samples, rate, offset = decode_audio(path)
    loud = np.abs(samples) > threshold
    onsets, last = [], -1.0
    for i in np.flatnonzero(loud):
        t = i / rate + offset
        if t - last > 0.2:
            onsets.append(t)
        last = t
    return onsets


def flash_times_in(path: str | Path) -> list[float]:
    """pts times (video timeline) of the bright flash frames in a file's video."""
    return [t for t, image in decode_video(path) if is_flash(image)]


def audio_duration(path: str | Path) -> float:
    """Audio length as the container states it (encoder padding excluded)."""
    with av.open(str(path)) as container:
        stream = container.streams.audio[0]
        return float(stream.duration * stream.time_base)
