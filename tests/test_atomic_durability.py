"""vidstyle.atomic keeps what its docstring promises: a durable write flushes the file before
the rename and the folder entry after it; a working-frame write flushes neither."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from vidstyle import atomic


def test_durable_writes_fsync_the_file_then_its_folder(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    if os.name != "posix":
        pytest.skip("folders can be fsynced on POSIX only")
    synced: list[str] = []
    real_fsync = os.fsync

    def recording_fsync(fd: int) -> None:
        mode = os.fstat(fd).st_mode
        synced.append("folder" if stat.S_ISDIR(mode) else "file:" + Path(f"/proc/self/fd/{fd}").resolve().name)
        real_fsync(fd)

    monkeypatch.setattr(os, "fsync", recording_fsync)
    final = tmp_path / "report.json"
    atomic.write_text(final, "{}")
    assert final.read_text() == "{}"
    assert len(synced) == 2 and synced[0].startswith("file:.report.") and synced[1] == "folder"
    synced.clear()
    atomic.write_bytes(tmp_path / "000001.png", b"frame", durable=False)
    assert synced == []
