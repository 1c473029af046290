"""A redo keeps the current output under history/ whole or not at all.

`history.exists()` is what decides whether a later redo copies the attempt again, so a copy
cut short must not leave a partial PNG under the history name.
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import pytest

from vidstyle.errors import OutputError
from vidstyle.job import create_job
from vidstyle.render import run_job, schedule_redo
from vidstyle.spec import load_spec


def test_a_failed_copy_leaves_no_partial_history_file(
    tmp_path: Path, demo_clip: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    spec = load_spec(
        "anime-canny-sd15",
        {
            "source.path": str(demo_clip),
            "size.width": 64,
            "size.height": 64,
            "backend.kind": "passthrough",
            "source.end_frame": 2,
            "coherence.mode": "independent",
        },
    )

    def copy_half_then_fail(src: Any, dst: Any, *args: Any, **kwargs: Any) -> None:
        Path(dst).write_bytes(Path(src).read_bytes()[:10])
        raise OSError(28, "No space left on device")

    with create_job(spec, tmp_path / "job") as job:
        run_job(job, finish=False)
        finished = job.out_path(1).read_bytes()
        history = job.history_path(1, job.ledger.frame(1).attempt)
        monkeypatch.setattr(shutil, "copy2", copy_half_then_fail)
        with pytest.raises((OSError, OutputError)):
            schedule_redo(job, [1], {})
        assert not history.exists()
        assert job.out_path(1).read_bytes() == finished
