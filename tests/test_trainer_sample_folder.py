"""An unreadable sample folder is one sentence, not a PermissionError traceback."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import pytest

from trainer.evidence import sample_files
from vidstyle.errors import UserInputError


def test_an_unreadable_sample_folder_is_one_sentence(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "sample").mkdir()
    run = SimpleNamespace(output_dir=tmp_path, output_name="zhongli")

    def refuse(self: Path) -> None:
        raise PermissionError(13, "Permission denied")  # root ignores chmod, so the read is refused here

    monkeypatch.setattr(Path, "iterdir", refuse)
    with pytest.raises(UserInputError, match="Cannot read the sample folder .*sample: Permission denied") as info:
        sample_files(run)  # type: ignore[arg-type]
    assert "Errno" not in str(info.value)


def test_no_sample_folder_means_no_samples(tmp_path: Path) -> None:
    run = SimpleNamespace(output_dir=tmp_path, output_name="zhongli")
    assert sample_files(run) == ({}, 0)  # type: ignore[arg-type]
