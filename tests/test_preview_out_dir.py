"""A preview whose output path is a file is refused in one sentence, before any frame renders."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from vidstyle.cli import main
from vidstyle.errors import UserInputError
from vidstyle.settings_preview import render_settings_preview
from vidstyle.spec import load_spec

SIZE = 64


def _no_backend(*_: Any) -> Any:
    raise AssertionError("the preview built a backend before checking its output folder")


def test_engine_refuses_a_file_as_output_folder(tmp_path: Path, demo_clip: Path) -> None:
    taken = tmp_path / "notes.txt"
    taken.write_text("user data")
    spec = load_spec(
        "anime-canny-sd15",
        {"source.path": str(demo_clip), "size.width": SIZE, "size.height": SIZE, "backend.kind": "simulated"},
    )
    with pytest.raises(UserInputError, match="is a file, not a folder"):
        render_settings_preview(spec, taken, frames="0", backend_factory=_no_backend)
    assert taken.read_text() == "user data"


def test_cli_says_one_sentence_for_a_file_as_output(
    tmp_path: Path, demo_clip: Path, capsys: pytest.CaptureFixture
) -> None:
    taken = tmp_path / "notes.txt"
    taken.write_text("user data")
    args = ["preview", str(demo_clip), "-o", str(taken), "--backend", "simulated", "--width", "64", "--height", "64"]
    code = main(args)
    stderr = capsys.readouterr().err
    assert code != 0 and "is a file, not a folder" in stderr and "Traceback" not in stderr
    assert taken.read_text() == "user data"
