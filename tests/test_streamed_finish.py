"""Scores and the two videos are made behind the render loop, on their own threads, and only
published when the frames they read are final (no repair changed them, the run did not stop)."""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from media import decode_video
from test_scores_repair import BROKEN, BreakingBackendDouble, _spec

from vidstyle import outputs, scores
from vidstyle.backends.base import Img2ImgRequest, Img2ImgResult
from vidstyle.backends.simulated import SimulatedImg2ImgBackend
from vidstyle.errors import BackendError, Cancelled, JobStateError
from vidstyle.imageio import read_png
from vidstyle.job import create_job
from vidstyle.render import CancelToken, run_job


@pytest.fixture(scope="module")
def clip(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from vidstyle.synthetic import make_clip

    return make_clip(tmp_path_factory.mktemp("media") / "clip.mp4", seconds=1.0, fps=24, size=(128, 128))


@pytest.fixture
def calls(monkeypatch: pytest.MonkeyPatch) -> dict[str, list[str]]:
    """Which thread encoded each video and measured each frame pair."""
    seen: dict[str, list[str]] = {"encode": [], "pair": []}
    real_encode, real_link = outputs.encode_video, scores.link

    def encode(frames: Any, path: Any, **kwargs: Any) -> Any:
        seen["encode"].append(threading.current_thread().name)
        return real_encode(frames, path, **kwargs)

    def link(*args: Any) -> Any:
        seen["pair"].append(threading.current_thread().name)
        return real_link(*args)

    monkeypatch.setattr(outputs, "encode_video", encode)
    monkeypatch.setattr(scores, "link", link)
    return seen


def _close_to_outputs(job: Any) -> None:
    """result.mp4 shows out/ frame by frame (H.264 at crf 18 stays within a few levels)."""
    decoded = decode_video(job.result_path)
    assert len(decoded) == job.ledger.frame_count()
    for idx, (_, frame) in enumerate(decoded):
        assert np.abs(frame.astype(int) - read_png(job.out_path(idx)).astype(int)).mean() < 8.0, idx


def _no_follower_threads() -> bool:
    names = [t.name for t in threading.enumerate()]
    return not any(name.startswith(("vidstyle-encode", "vidstyle-scores")) for name in names)


def test_a_job_is_encoded_and_scored_while_it_renders(tmp_path: Path, clip: Path, calls: dict) -> None:
    spec = _spec(clip)
    with create_job(spec, tmp_path / "job") as job:
        run_job(job, SimulatedImg2ImgBackend(spec))
        frames = job.ledger.frame_count()
        assert sorted(calls["encode"]) == ["vidstyle-encode-compare", "vidstyle-encode-result"]
        assert calls["pair"] == ["vidstyle-scores"] * (frames - 1)  # none left for the finish stage
        assert len(scores.load_scores(job)) == frames
        _close_to_outputs(job)
        assert (tmp_path / "job" / "compare.mp4").exists()
    assert _no_follower_threads()


def test_repair_drops_the_streamed_videos_and_measures_only_what_changed(
    tmp_path: Path, clip: Path, calls: dict
) -> None:
    spec = _spec(clip, **{"repair.enabled": True})
    with create_job(spec, tmp_path / "job") as job:
        run_job(job, BreakingBackendDouble(spec, BROKEN))
        repaired = set(job.ledger.get_meta("repair")["repaired"])
        assert repaired == BROKEN
        # Streamed encodes were dropped (frames changed), so the finish stage encoded both again.
        assert calls["encode"].count("MainThread") == 2
        # The finish stage measured only the pairs that touch a repaired frame (before and after it).
        assert 0 < calls["pair"].count("MainThread") <= 2 * len(BROKEN) * 2
        _close_to_outputs(job)
        decoded = decode_video(job.result_path)
        for idx in BROKEN:  # the video shows the repaired frame, not the broken first attempt
            shown = decoded[idx][1].astype(int)
            repaired_gap = np.abs(shown - read_png(job.out_path(idx)).astype(int)).mean()
            broken_gap = np.abs(shown - read_png(job.history_path(idx, 0)).astype(int)).mean()
            assert repaired_gap * 3 < broken_gap, (idx, repaired_gap, broken_gap)
    assert _no_follower_threads()


class FailingBackendDouble(SimulatedImg2ImgBackend):
    """The simulation, failing one frame every time."""

    def __init__(self, spec: Any, failing: int) -> None:
        super().__init__(spec)
        self.failing = failing

    def img2img(self, request: Img2ImgRequest) -> Img2ImgResult:
        if request.frame_index == self.failing:
            raise BackendError("the test's double refuses this frame")
        return super().img2img(request)


class CancellingBackendDouble(SimulatedImg2ImgBackend):
    """The simulation, cancelling the run once it has rendered a few frames."""

    def __init__(self, spec: Any, token: CancelToken, after: int) -> None:
        super().__init__(spec)
        self.token, self.after = token, after

    def img2img(self, request: Img2ImgRequest) -> Img2ImgResult:
        if request.frame_index >= self.after:
            self.token.cancel()
        return super().img2img(request)


def _nothing_published(root: Path) -> None:
    videos = sorted(p.name for p in root.rglob("*") if p.suffix == ".mp4" or ".mp4" in p.name)
    assert videos == [], videos  # neither the videos nor a temporary file of theirs


def test_a_failed_run_publishes_no_video_and_leaves_no_threads(tmp_path: Path, clip: Path) -> None:
    spec = _spec(clip)
    with create_job(spec, tmp_path / "job") as job, pytest.raises(JobStateError, match="failed"):
        run_job(job, FailingBackendDouble(spec, failing=6))
    _nothing_published(tmp_path / "job")
    assert _no_follower_threads()


def test_a_cancelled_run_publishes_no_video_and_resumes_to_the_same_result(tmp_path: Path, clip: Path) -> None:
    spec = _spec(clip)
    token = CancelToken()
    with create_job(spec, tmp_path / "job") as job:
        with pytest.raises(Cancelled):
            run_job(job, CancellingBackendDouble(spec, token, after=5), cancel=token)
        _nothing_published(tmp_path / "job")
        assert _no_follower_threads()
        run_job(job, SimulatedImg2ImgBackend(spec))  # resume: done frames feed the encoders at once
        _close_to_outputs(job)


def test_a_deflickered_job_is_encoded_while_it_renders(tmp_path: Path, clip: Path, calls: dict) -> None:
    from vidstyle.deflicker import deflicker_frames

    spec = _spec(clip, **{"coherence.deflicker": True, "coherence.scene_cuts": False})
    with create_job(spec, tmp_path / "job") as job:
        run_job(job, SimulatedImg2ImgBackend(spec))
        assert sorted(calls["encode"]) == ["vidstyle-encode-compare", "vidstyle-encode-result"]
        outputs_ = [read_png(job.out_path(i)) for i in range(job.ledger.frame_count())]
        expected = list(deflicker_frames(iter(outputs_), spec.coherence.deflicker_window, [0]))
        decoded = decode_video(job.result_path)
        assert len(decoded) == len(expected)
        for idx, ((_, frame), want) in enumerate(zip(decoded, expected, strict=True)):
            assert np.abs(frame.astype(int) - want.astype(int)).mean() < 8.0, idx
