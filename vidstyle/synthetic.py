"""A small synthetic MMD-like clip: a moving figure, a panning camera, and a sound track.

Used by `vidstyle demo` (so a fresh machine can show the whole loop without any media)
and by the tests and benchmarks, which make their own media.
"""

from __future__ import annotations

import math
from fractions import Fraction
from pathlib import Path

import av
import cv2
import numpy as np

from .atomic import atomic_path


def draw_scene(t: float, width: int, height: int) -> np.ndarray:
    """One RGB frame at time t: a striped floor that pans, and a dancing stick figure."""
    frame = np.zeros((height, width, 3), np.uint8)
    frame[:] = (40, 50, 90)
    pan = int(t * width * 0.25)
    for x in range(-width, 2 * width, max(8, width // 8)):
        xx = x - pan % max(8, width // 8)
        cv2.line(frame, (xx, height // 2), (xx - width // 3, height), (200, 180, 120), 2)
    cv2.rectangle(frame, (0, height * 2 // 3), (width, height), (70, 90, 60), -1)
    cx = int(width / 2 + math.sin(t * 2.1) * width * 0.2)
    cy = int(height * 0.55)
    s = height / 5
    sway = math.sin(t * 6.0)
    head = (cx, int(cy - 1.6 * s))
    hip = (cx, int(cy + 0.4 * s))
    cv2.circle(frame, head, int(0.35 * s), (240, 210, 190), -1)
    cv2.line(frame, (cx, int(cy - 1.2 * s)), hip, (220, 60, 60), max(2, int(s / 5)))
    for side in (-1, 1):
        hand = (int(cx + side * s * (0.9 + 0.3 * sway)), int(cy - s * (0.2 + 0.6 * side * sway)))
        foot = (int(cx + side * s * 0.5), int(cy + 1.5 * s))
        cv2.line(frame, (cx, int(cy - 0.8 * s)), hand, (240, 210, 190), max(2, int(s / 8)))
        cv2.line(frame, hip, foot, (40, 40, 160), max(2, int(s / 6)))
    return frame


def make_clip(
    path: Path,
    seconds: float = 2.0,
    fps: int = 30,
    size: tuple[int, int] = (320, 240),
    audio: bool = True,
    sample_rate: int = 44100,
) -> Path:
    """Write an H.264 + AAC mp4; a 440 Hz tone with a beat every half second."""
    width, height = size
    frames = int(round(seconds * fps))
    with atomic_path(path) as tmp:
        with av.open(str(tmp), mode="w") as container:
            video = container.add_stream("libx264", rate=fps)
            video.width, video.height, video.pix_fmt = width, height, "yuv420p"
            video.options = {"crf": "23", "preset": "veryfast"}
            astream = container.add_stream("aac", rate=sample_rate) if audio else None
            for i in range(frames):
                image = av.VideoFrame.from_ndarray(draw_scene(i / fps, width, height), format="rgb24")
                for packet in video.encode(image):
                    container.mux(packet)
            for packet in video.encode():
                container.mux(packet)
            if astream is not None:
                _write_tone(container, astream, seconds, sample_rate)
    return Path(path)


def _write_tone(
    container: av.container.OutputContainer, stream: av.audio.stream.AudioStream, seconds: float, rate: int
) -> None:
    total = int(seconds * rate)
    t = np.arange(total) / rate
    beat = (np.mod(t, 0.5) < 0.05).astype(np.float32)
    wave = (0.2 * np.sin(2 * np.pi * 440 * t) * (0.3 + beat)).astype(np.float32)
    chunk = 1024
    for start in range(0, total, chunk):
        block = wave[start : start + chunk]
        frame = av.AudioFrame.from_ndarray(block.reshape(1, -1), format="fltp", layout="mono")
        frame.sample_rate = rate
        frame.pts = start
        frame.time_base = Fraction(1, rate)
        for packet in stream.encode(frame):
            container.mux(packet)
    for packet in stream.encode():
        container.mux(packet)
