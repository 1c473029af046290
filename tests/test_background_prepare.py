"""Frames render while later ones are still being decoded (independent mode), and every way a
run can end leaves the job as a plain prepare would: resumable, same pixels, no stray threads."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from test_scores_repair import _spec

from vidstyle import background_prepare, render
from vidstyle import job as job_module
from vidstyle.backends.base import Img2ImgRequest, Img2ImgResult
from vidstyle.backends.simulated import SimulatedImg2ImgBackend
from vidstyle.errors import Cancelled, MediaError
from vidstyle.imageio import read_png
from vidstyle.job import create_job, drop_intermediates
from vidstyle.render import CancelToken, run_job, schedule_redo

FRAMES = 24  # the clip below: 1 s at 24 fps


@pytest.fixture(scope="module")
def clip(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from vidstyle.synthetic import make_clip

    return make_clip(tmp_path_factory.mktemp("media") / "clip.mp4", seconds=1.0, fps=24, size=(128, 128))


def _outputs(job: Any) -> list[np.ndarray]:
    return [read_png(job.out_path(i)) for i in range(job.ledger.frame_count())]


def _threads_left() -> list[str]:
    prefixes = ("vidstyle-prepare", "vidstyle-encode", "vidstyle-scores", "vidstyle-frame")
    return [t.name for t in threading.enumerate() if t.name.startswith(prefixes)]


class FirstFrameSignalDouble(SimulatedImg2ImgBackend):
    """The simulation, announcing its first call."""

    def __init__(self, spec: Any) -> None:
        super().__init__(spec)
        self.first_call = threading.Event()

    def img2img(self, request: Img2ImgRequest) -> Img2ImgResult:
        self.first_call.set()
        return super().img2img(request)


def test_the_first_frame_renders_before_the_clip_is_decoded_to_its_end(
    tmp_path: Path, clip: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    spec = _spec(clip)
    backend = FirstFrameSignalDouble(spec)
    waited: list[bool] = []
    real_iter = job_module.iter_frames

    def held_back(*args: Any, **kwargs: Any) -> Iterator[Any]:
        """Decoding stops after frame 5 until the backend has been called (or 30 s passed)."""
        for frame in real_iter(*args, **kwargs):
            if frame.index == 6:
                waited.append(backend.first_call.wait(timeout=30))
            yield frame

    monkeypatch.setattr(job_module, "iter_frames", held_back)
    assert background_prepare.prepares_while_rendering(spec)
    with create_job(spec, tmp_path / "job") as job:
        run_job(job, backend)
        assert waited == [True]  # rendering had started while frames 6.. were not decoded yet
        assert job.prepared and job.ledger.frame_count() == FRAMES
        assert job.ledger.counts()["done"] == FRAMES
        assert job.result_path.exists()
    assert _threads_left() == []


def test_background_and_plain_preparation_give_the_same_frames(
    tmp_path: Path, clip: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    spec = _spec(clip)
    with create_job(spec, tmp_path / "streamed") as job:
        run_job(job, SimulatedImg2ImgBackend(spec))
        streamed = _outputs(job)
    monkeypatch.setattr(render, "prepares_while_rendering", lambda spec: False)
    with create_job(spec, tmp_path / "plain") as job:
        run_job(job, SimulatedImg2ImgBackend(spec))
        plain = _outputs(job)
    assert len(streamed) == len(plain) == FRAMES
    assert all(np.array_equal(a, b) for a, b in zip(streamed, plain, strict=True))


class CancelAtFrameDouble(SimulatedImg2ImgBackend):
    def __init__(self, spec: Any, token: CancelToken, at: int) -> None:
        super().__init__(spec)
        self.token, self.at = token, at

    def img2img(self, request: Img2ImgRequest) -> Img2ImgResult:
        if request.frame_index == self.at:
            self.token.cancel()
        return super().img2img(request)


def test_a_cancel_while_frames_are_still_prepared_resumes_to_the_same_job(
    tmp_path: Path, clip: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    spec = _spec(clip)
    with create_job(spec, tmp_path / "whole") as job:
        run_job(job, SimulatedImg2ImgBackend(spec))
        expected = _outputs(job)
    token = CancelToken()
    real_iter = job_module.iter_frames

    def held_until_cancelled(*args: Any, **kwargs: Any) -> Iterator[Any]:
        """Frames 8.. are decoded only once the run is cancelled (at most 30 s later)."""
        for frame in real_iter(*args, **kwargs):
            for _ in range(3000 if frame.index >= 8 else 0):
                if token.cancelled:
                    break
                time.sleep(0.01)
            yield frame

    monkeypatch.setattr(job_module, "iter_frames", held_until_cancelled)
    with create_job(spec, tmp_path / "job") as job:
        backend = CancelAtFrameDouble(spec, token, at=1)
        with pytest.raises(Cancelled):
            run_job(job, backend, cancel=token)
        assert not job.prepared
        assert _threads_left() == []
        assert not job.result_path.exists()
        monkeypatch.setattr(job_module, "iter_frames", real_iter)
        run_job(job, SimulatedImg2ImgBackend(spec))
        assert job.prepared and job.ledger.frame_count() == FRAMES
        assert all(np.array_equal(a, b) for a, b in zip(_outputs(job), expected, strict=True))


def test_a_redo_after_dropped_intermediates_waits_for_its_frame_to_be_prepared_again(
    tmp_path: Path, clip: Path
) -> None:
    spec = _spec(clip)
    with create_job(spec, tmp_path / "job") as job:
        run_job(job, SimulatedImg2ImgBackend(spec))
        drop_intermediates(job)
        assert not job.src_path(20).exists()
        schedule_redo(job, [20], {"sampling.seed": 77})
        run_job(job, SimulatedImg2ImgBackend(spec))
        assert job.prepared and job.src_path(20).exists()
        row = job.ledger.frame(20)
        assert row.status == "done" and row.attempt == 1 and row.seed == 77


def test_a_decode_failure_part_way_stops_the_run_with_its_sentence(
    tmp_path: Path, clip: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    real_iter = job_module.iter_frames

    def damaged(*args: Any, **kwargs: Any) -> Iterator[Any]:
        for frame in real_iter(*args, **kwargs):
            if frame.index == 10:
                raise MediaError("The test's damaged video cannot be decoded past frame 9.")
            yield frame

    monkeypatch.setattr(job_module, "iter_frames", damaged)
    spec = _spec(clip)
    with create_job(spec, tmp_path / "job") as job:
        with pytest.raises(MediaError, match="past frame 9"):
            run_job(job, SimulatedImg2ImgBackend(spec))
        assert not job.prepared and not job.result_path.exists()
    assert _threads_left() == []
