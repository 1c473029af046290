"""`trainer config` writing a run folder it cannot write: one sentence (OutputError), no traceback."""

from __future__ import annotations

from pathlib import Path

import pytest
import train_helpers as th  # tests/train_helpers.py

from trainer.presets import load_stack
from trainer.run import plan_run, write_run
from vidstyle.errors import OutputError


def test_a_run_folder_that_cannot_be_made_is_one_sentence(tmp_path: Path) -> None:
    dataset = th.make_dataset(tmp_path / "ds")
    model = th.make_checkpoint(tmp_path, "sd15")
    blocker = tmp_path / "taken"
    blocker.write_text("a file where the run folder's parent should be\n", encoding="utf-8")
    out = blocker / "run"
    plan = plan_run(load_stack(["sd15-character"]), dataset, str(model), out)
    with pytest.raises(OutputError, match=r"Cannot write the run folder .*run.*; choose another --out"):
        write_run(plan, out, "accelerate launch train_network.py", ["train_network.py"])
    assert blocker.read_text(encoding="utf-8").startswith("a file")  # left as it was


def test_a_rewrite_that_fails_half_way_leaves_no_run_marker(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import trainer.run as run

    dataset = th.make_dataset(tmp_path / "ds")
    model = th.make_checkpoint(tmp_path, "sd15")
    out = tmp_path / "run"
    plan = plan_run(load_stack(["sd15-character"]), dataset, str(model), out)
    write_run(plan, out, "accelerate launch train_network.py", ["train_network.py"])
    assert (out / run.RUN_FILE).exists()

    def disk_full(*args: object, **kwargs: object) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(run, "write_train_args", disk_full)
    with pytest.raises(OutputError, match="No space left"):
        write_run(plan, out, "accelerate launch train_network.py", ["train_network.py"])
    # The new dataset.toml may be there, but no run.json claims the folder is a complete run.
    assert not (out / run.RUN_FILE).exists()
