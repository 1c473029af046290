"""The trainer writes the files others read (captions, prep.json, tag counts, run.json,
progress.json) through vidstyle.atomic: a write that fails half-way leaves the previous file
or dataset as it was, and no partial or temp file behind."""

from __future__ import annotations

import contextlib
import errno
import json
import os
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import trainer_media as tm  # tests/trainer_media.py

from trainer.dataset import prepare
from trainer.launch import PROGRESS_FILE, write_progress
from trainer.prep_options import build_options
from trainer.progress import Progress
from trainer.run import RUN_FILE, update_meta
from vidstyle import atomic
from vidstyle.errors import OutputError


class _AtomicRecorder:
    """Wraps vidstyle.atomic.atomic_path: records each final name written through it and, for
    the names `fail` picks, writes part of the data and then fails as a full disk would."""

    def __init__(self, fail: Callable[[Path], bool] = lambda path: False) -> None:
        self.finals: list[Path] = []
        self.temps: list[Path] = []
        self._fail = fail
        self._real = atomic.atomic_path

    @contextlib.contextmanager
    def __call__(self, final: Any, suffix: str | None = None, durable: bool = True) -> Iterator[Path]:
        final = Path(final)
        with self._real(final, suffix, durable) as tmp:
            self.temps.append(tmp)
            yield tmp
            self.finals.append(final)
            if self._fail(final):
                data = tmp.read_bytes()
                tmp.write_bytes(data[: max(1, len(data) // 2)])  # half of it reached the disk
                raise OSError(errno.ENOSPC, "No space left on device")


def _sources(folder: Path) -> Path:
    for i in range(6):
        tm.save(folder / f"char{i}.png", tm.scene(i, (320, 256)))
        (folder / f"char{i}.txt").write_text(f"solo, pose {i}, blue hair", encoding="utf-8")
    return folder


def _prep(src: Path, out: Path, trigger: str) -> None:
    options = build_options(
        sources=[str(src)], out=str(out), name="zhongli", trigger=trigger, workers=1, face_detector="none", size=256
    )
    prepare(options)


def _inside_staging(path: Path, out: Path) -> str:
    """PATH relative to the staging folder prep built next to OUT (.OUT.prep-XXXX) and swapped in."""
    for parent in path.parents:
        if parent.parent == out.parent and parent.name.startswith(f".{out.name}.prep-"):
            return path.relative_to(parent).as_posix()
    return str(path)


def _relative_files(folder: Path) -> set[str]:
    return {p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.is_file()}


def test_prep_writes_captions_manifest_and_tag_counts_atomically(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    recorder = _AtomicRecorder()
    monkeypatch.setattr(atomic, "atomic_path", recorder)
    out = tmp_path / "dataset"
    _prep(_sources(tmp_path / "src"), out, "zhongli")
    staged = {_inside_staging(p, out) for p in recorder.finals}
    written = _relative_files(out)
    texts = {f for f in written if f.endswith((".txt", ".json", ".csv"))}
    assert {"prep.json", "tag_frequency.csv"} <= texts and any(f.endswith(".txt") for f in texts)
    assert texts <= staged  # every text file of the dataset was born by an atomic rename
    assert all(not t.exists() for t in recorder.temps)


def test_a_caption_write_failing_half_way_keeps_the_previous_dataset(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    src, out = _sources(tmp_path / "src"), tmp_path / "dataset"
    _prep(src, out, "zhongli")
    before = tm.tree_hashes(out)
    # a new trigger word changes every caption; the third caption write fails half-way
    captions: list[Path] = []

    def third_caption(path: Path) -> bool:
        if path.suffix == ".txt":
            captions.append(path)
        return path.suffix == ".txt" and len(captions) == 3

    recorder = _AtomicRecorder(fail=third_caption)
    monkeypatch.setattr(atomic, "atomic_path", recorder)
    with pytest.raises(OutputError, match=r"^Cannot write the new dataset next to .*No space left on device"):
        _prep(src, out, "guizhong")
    assert len(captions) == 3  # the failure came from the atomic caption write
    assert tm.tree_hashes(out) == before  # same bytes and mtimes: the previous dataset untouched
    assert sorted(p.name for p in tmp_path.iterdir()) == ["dataset", "src"]  # no staging folder left
    assert all(not t.exists() for t in recorder.temps)  # no temp file left anywhere


def _fail_all(path: Path) -> bool:
    return True


def test_run_json_update_failing_half_way_keeps_the_previous_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    previous = json.dumps({"version": 1, "family": "sd15", "argv": ["old"]}, indent=2) + "\n"
    (tmp_path / RUN_FILE).write_text(previous, encoding="utf-8")
    recorder = _AtomicRecorder(fail=_fail_all)
    monkeypatch.setattr(atomic, "atomic_path", recorder)
    with pytest.raises(OutputError, match="disk is full"):
        update_meta(tmp_path, argv=["python", "train_network.py", "--config_file", "config.toml"])
    assert recorder.finals == [tmp_path / RUN_FILE]
    assert (tmp_path / RUN_FILE).read_text(encoding="utf-8") == previous
    assert os.listdir(tmp_path) == [RUN_FILE]


def test_progress_write_failing_half_way_keeps_the_previous_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    write_progress(tmp_path, Progress(step=3, total_steps=12))
    previous = (tmp_path / PROGRESS_FILE).read_bytes()
    recorder = _AtomicRecorder(fail=_fail_all)
    monkeypatch.setattr(atomic, "atomic_path", recorder)
    with pytest.raises(OutputError, match="disk is full"):
        write_progress(tmp_path, Progress(step=4, total_steps=12))
    assert recorder.finals == [tmp_path / PROGRESS_FILE]
    assert (tmp_path / PROGRESS_FILE).read_bytes() == previous
    assert os.listdir(tmp_path) == [PROGRESS_FILE]
