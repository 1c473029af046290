"""Probe, decode and encode video with PyAV: rotation applied, variable frame rate handled, audio kept.

This module is the public face of video I/O; the code lives in `vidstyle.media` (one module per
concern: probe, selection, decode, fit, encode, audio, and `media/container.py`, which holds the
"Decoder threads" rule that keeps PyAV from freezing the WebUI). Callers import from here.

Times are seconds on the *video timeline*: 0 is the first video frame of the source (its
container start offset removed), so a selection's [start, end) can be handed straight to
`encode_video(audio_start=..., audio_end=...)` and audio stays in sync.

Decoding is streamed (one frame held at a time), so memory does not grow with video length.
"""

from __future__ import annotations

from .media.audio import WarningCallback
from .media.container import PathLike
from .media.decode import SelectedFrame, iter_frames, read_frame_at, read_frame_at_time
from .media.encode import EncodeReport, FrameInput, encode_video
from .media.fit import fit_frame
from .media.probe import SCAN_LIMIT, AudioInfo, VideoInfo, probe, sequence_files
from .media.rotation import display_matrix_rotation
from .media.selection import STANDARD_RATES, Selection, count_selected, plan_selection

__all__ = [
    "SCAN_LIMIT",
    "STANDARD_RATES",
    "AudioInfo",
    "EncodeReport",
    "FrameInput",
    "PathLike",
    "SelectedFrame",
    "Selection",
    "VideoInfo",
    "WarningCallback",
    "count_selected",
    "display_matrix_rotation",
    "encode_video",
    "fit_frame",
    "iter_frames",
    "plan_selection",
    "probe",
    "read_frame_at",
    "read_frame_at_time",
    "sequence_files",
]
