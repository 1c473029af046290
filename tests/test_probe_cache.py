"""The engine's one probe cache (vidstyle/media/probe.py), shared by video I/O and the job manager."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import media  # tests/media.py (pytest puts tests/ on sys.path)
import pytest

from vidstyle import video
from vidstyle.manager import JobManager
from vidstyle.media import probe as probe_module
from vidstyle.spec import JobSpec, SourceSpec


@pytest.fixture
def reads(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Names of the files probe really read (a cache hit reads nothing)."""
    seen: list[str] = []
    real = probe_module._probe_video

    def counting(path: Path, scan_limit: int) -> Any:
        seen.append(path.name)
        return real(path, scan_limit)

    monkeypatch.setattr(probe_module, "_probe_video", counting)
    return seen


def _clip(folder: Path, name: str, seconds: float = 0.5) -> Path:
    return media.make_video(folder / name, seconds=seconds, fps=30, audio=False).path


def test_second_probe_reads_nothing_and_returns_a_private_copy(tmp_path: Path, reads: list[str]) -> None:
    clip = _clip(tmp_path, "a.mp4")
    first = video.probe(clip)
    first.audio.append(None)  # type: ignore[arg-type]  # a caller's change must not reach the cache
    second = video.probe(clip)
    assert reads == ["a.mp4"]
    assert second.audio == [] and second.frame_count == 15


def test_same_file_by_another_path_shares_the_entry_but_keeps_the_callers_path(
    tmp_path: Path, reads: list[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    clip = _clip(tmp_path, "a.mp4")
    video.probe(clip)
    monkeypatch.chdir(tmp_path)
    info = video.probe("a.mp4")
    assert reads == ["a.mp4"]
    assert info.path == "a.mp4"


def test_manager_uses_the_same_cache(tmp_path: Path, reads: list[str]) -> None:
    clip = _clip(tmp_path, "a.mp4")
    video.probe(clip)
    manager = JobManager(tmp_path / "jobs")
    assert manager.source_info(str(clip))["frame_count"] == 15
    spec = JobSpec(source=SourceSpec(path=str(clip), every_nth=3))
    assert manager.selection_frames(spec) == 5
    assert reads == ["a.mp4"]


def test_a_replaced_file_is_probed_again(tmp_path: Path, reads: list[str]) -> None:
    clip = _clip(tmp_path, "a.mp4")
    assert JobManager(tmp_path / "jobs").source_info(str(clip))["frame_count"] == 15
    _clip(tmp_path, "a.mp4", seconds=1.0)  # replaced in place: new size and mtime
    assert JobManager(tmp_path / "jobs").source_info(str(clip))["frame_count"] == 30
    assert reads == ["a.mp4", "a.mp4"]


def test_least_recently_used_entry_goes_first(
    tmp_path: Path, reads: list[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    clips = {name: _clip(tmp_path, name) for name in ("a.mp4", "b.mp4", "c.mp4")}
    monkeypatch.setattr(probe_module, "PROBE_CACHE_SIZE", 2)
    for name in ("a.mp4", "b.mp4", "a.mp4", "c.mp4"):  # a was used after b, so c evicts b
        video.probe(clips[name])
    assert reads == ["a.mp4", "b.mp4", "c.mp4"]
    video.probe(clips["a.mp4"])
    video.probe(clips["b.mp4"])
    assert reads == ["a.mp4", "b.mp4", "c.mp4", "b.mp4"]
