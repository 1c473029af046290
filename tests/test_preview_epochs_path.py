"""`vidstyle preview VIDEO --lora-epochs PATH` with a PATH that is not a readable training run folder.

Every such PATH (missing, a file, a path through a file, a folder without run.json, a run whose
run.json cannot be read, a run with no saved epoch .safetensors) must give one sentence of ours
that names the path, a non-zero exit, and neither a traceback nor Python's "[Errno N] ..." text.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from vidstyle.cli import main as vidstyle_main

COMMON = ["--backend", "passthrough", "--width", "64", "--height", "64", "--seed", "3", "-q"]


@pytest.fixture()
def clip(tmp_path: Path) -> Path:
    folder = tmp_path / "clip"
    folder.mkdir()
    for index in range(4):
        Image.fromarray(np.full((48, 64, 3), 40 * index, np.uint8)).save(folder / f"{index:04d}.png")
    return folder


def preview_error(clip: Path, path: Path, capsys: pytest.CaptureFixture[str]) -> str:
    """Run the preview with --lora-epochs PATH; return its one error line after checking the rules."""
    code = vidstyle_main(["preview", str(clip), "--lora-epochs", str(path), *COMMON])
    captured = capsys.readouterr()
    text = captured.out + captured.err
    assert code != 0, text
    assert "Errno" not in text and "Traceback" not in text, text
    lines = [line for line in captured.err.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), text
    return lines[0]


def test_a_missing_path_is_one_sentence(clip: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "no-such-run"
    line = preview_error(clip, path, capsys)
    assert str(path) in line and "does not exist" in line and "training run folder" in line


def test_a_file_is_one_sentence(clip: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "mikuchan-000001.safetensors"
    path.write_bytes(b"not a run folder")
    line = preview_error(clip, path, capsys)
    assert str(path) in line and "is a file, not a training run folder" in line


def test_a_path_through_a_file_is_one_sentence(clip: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "notes.txt").write_text("x", encoding="utf-8")
    path = tmp_path / "notes.txt" / "run"
    line = preview_error(clip, path, capsys)
    assert str(path) in line and "does not exist" in line


def test_a_folder_without_epochs_or_run_json_is_one_sentence(
    clip: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "loras"
    path.mkdir()
    (path / "readme.txt").write_text("no epochs here", encoding="utf-8")
    line = preview_error(clip, path, capsys)
    assert str(path) in line and "is not a training run folder (no run.json)" in line


def test_a_run_json_that_is_a_folder_is_one_sentence(
    clip: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "odd-run"
    (path / "run.json").mkdir(parents=True)
    line = preview_error(clip, path, capsys)
    assert str(path / "run.json") in line


def test_an_unreadable_run_is_one_sentence(
    clip: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    # Tests may run as root, which chmod cannot lock out: a double of read_text refuses run.json
    # the way the OS does (PermissionError carries "[Errno 13] Permission denied: '...'" as its str).
    path = tmp_path / "locked-run"
    path.mkdir()
    (path / "run.json").write_text("{}", encoding="utf-8")
    real_read_text = Path.read_text

    def read_text_double(self: Path, *args: object, **kwargs: object) -> str:
        if self.name == "run.json":
            raise PermissionError(13, "Permission denied", str(self))
        return real_read_text(self, *args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(Path, "read_text", read_text_double)
    line = preview_error(clip, path, capsys)
    assert str(path / "run.json") in line and "permission denied" in line


def test_a_run_with_no_saved_epochs_is_one_sentence(
    clip: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    import train_helpers as th  # tests/train_helpers.py

    from trainer import commands

    run = tmp_path / "run"
    argv = th.config_argv(th.make_dataset(tmp_path / "ds"), th.make_checkpoint(tmp_path), run)
    assert commands.main(argv) == 0
    capsys.readouterr()
    line = preview_error(clip, run, capsys)
    assert f"{run.resolve()} has no saved epochs yet" in line
