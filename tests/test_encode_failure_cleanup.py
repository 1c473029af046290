"""An encode that fails part-way lets go of the audio source it opened (review of media/encode.py).

Inside the WebUI a failed job's exception (and so its traceback) stays referenced for the
job's report; the source video must not stay open through it (on Windows an open file can
be neither moved nor deleted).
"""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator
from pathlib import Path

import media  # tests/media.py (pytest puts tests/ on sys.path)
import numpy as np
import pytest

from vidstyle import video

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc/self/fd")


def _open_paths() -> set[str]:
    fds = Path("/proc/self/fd")
    found = set()
    for fd in fds.iterdir():
        try:
            found.add(os.readlink(fd))
        except OSError:
            pass
    return found


def _frames_then_failure() -> Iterator[np.ndarray]:
    for value in (40, 120):
        yield np.full((64, 96, 3), value, np.uint8)
    raise RuntimeError("the third frame is missing")


def test_failed_encode_closes_the_audio_source(tmp_path: Path) -> None:
    source = media.make_video(tmp_path / "with_audio.mp4", seconds=1.0, fps=25, audio=True)
    out = tmp_path / "out.mp4"
    with pytest.raises(RuntimeError, match="third frame") as caught:
        video.encode_video(_frames_then_failure(), out, 25, audio_from=source)
    assert caught.value.__traceback__ is not None  # the traceback (and its frames) is still alive here
    assert str(Path(source).resolve()) not in _open_paths()
    assert not out.exists()
