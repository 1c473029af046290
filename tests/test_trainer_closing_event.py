"""A launched training run ends with one closing ProgressEvent: "done" when the LoRA is saved,
"failed" (events.py has no "cancelled" kind) when sd-scripts fails, a bad loss stops it, or the
user stops it; the "failed" message is the raised exception's sentence. Runs use
tests/doubles/sd_scripts_double."""

from __future__ import annotations

import io
from pathlib import Path

import pytest
import train_helpers as th  # tests/train_helpers.py

from trainer import commands
from trainer.launch import LaunchOptions, Trainer, TrainingError, train
from vidstyle.errors import Cancelled, VidstyleError
from vidstyle.events import ProgressEvent

QUIET = dict(show_bar=False, stop_grace=10.0)
CLOSING = ("done", "failed")


@pytest.fixture(scope="module")
def inputs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    return th.run_inputs(tmp_path_factory.mktemp("closing"))


@pytest.fixture()
def double_env(monkeypatch: pytest.MonkeyPatch) -> None:
    th.use_sd_scripts_double(monkeypatch)


def _run_dir(inputs: dict[str, Path], out: Path, epochs: int) -> Path:
    extra = ["--set", f"max_train_epochs={epochs}", "--set", "dataset.batch_size=2"]
    assert commands.main(th.config_argv(inputs["dataset"], inputs["sd15"], out, "sd15-character", extra=extra)) == 0
    return out


def _train_failing(run_dir: Path, expected: type[VidstyleError]) -> tuple[list[ProgressEvent], VidstyleError]:
    events: list[ProgressEvent] = []
    with pytest.raises(expected) as err:
        train(run_dir, LaunchOptions(**QUIET), out=io.StringIO(), on_event=events.append)  # type: ignore[arg-type]
    return events, err.value


def _assert_closed_by_failed(events: list[ProgressEvent], error: VidstyleError) -> None:
    assert events[0].kind == "stage" and all(e.stage == "train" for e in events)
    closing = [e for e in events if e.kind in CLOSING]
    assert [e.kind for e in closing] == ["failed"]  # exactly one closing event, and no "done"
    assert events[-1] is closing[0]  # ... and it is the last one
    assert events[-1].message == str(error) and events[-1].message  # the exception's sentence
    assert events[-1].total > 0 and events[-1].done < events[-1].total  # where the run stopped


def test_a_crashed_run_closes_with_failed(
    inputs: dict[str, Path], tmp_path: Path, double_env: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    run_dir = _run_dir(inputs, tmp_path / "crash", epochs=3)
    monkeypatch.setenv("SD_DOUBLE_CRASH_AT_STEP", "6")
    events, error = _train_failing(run_dir, TrainingError)
    assert str(error).startswith("sd-scripts failed (exit code 1).")
    _assert_closed_by_failed(events, error)


def test_a_nan_loss_stop_closes_with_failed(
    inputs: dict[str, Path], tmp_path: Path, double_env: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    run_dir = _run_dir(inputs, tmp_path / "nan", epochs=4)
    th.bad_loss(monkeypatch, "nan", step_seconds=0.02)
    events, error = _train_failing(run_dir, TrainingError)
    assert "the loss became nan" in str(error)
    _assert_closed_by_failed(events, error)


def test_a_user_stop_closes_with_failed(
    inputs: dict[str, Path], tmp_path: Path, double_env: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    run_dir = _run_dir(inputs, tmp_path / "stop", epochs=50)
    monkeypatch.setenv("SD_DOUBLE_STEP_SECONDS", "0.05")
    real_read = Trainer.read
    seen, stopped = bytearray(), list[bool]()

    def ctrl_c_in_epoch_2(self: Trainer) -> bytes:
        # Ctrl-C in a terminal reaches the launcher as KeyboardInterrupt while it waits for output
        if b"epoch 2/50" in seen and not stopped:
            stopped.append(True)  # once: a second Ctrl-C would kill the trainer
            raise KeyboardInterrupt
        chunk = real_read(self)
        seen.extend(chunk)
        return chunk

    monkeypatch.setattr(Trainer, "read", ctrl_c_in_epoch_2)
    events, error = _train_failing(run_dir, Cancelled)
    assert stopped and str(error).startswith("Training stopped; continue with")
    _assert_closed_by_failed(events, error)


def test_a_finished_run_closes_with_done_only(inputs: dict[str, Path], tmp_path: Path, double_env: None) -> None:
    run_dir = _run_dir(inputs, tmp_path / "ok", epochs=1)
    events: list[ProgressEvent] = []
    train(run_dir, LaunchOptions(**QUIET), out=io.StringIO(), on_event=events.append)  # type: ignore[arg-type]
    assert [e.kind for e in events if e.kind in CLOSING] == ["done"] and events[-1].kind == "done"


def test_a_run_refused_before_launch_emits_no_closing_event(
    inputs: dict[str, Path], tmp_path: Path, double_env: None
) -> None:
    run_dir = _run_dir(inputs, tmp_path / "refused", epochs=1)
    events: list[ProgressEvent] = []
    with pytest.raises(VidstyleError, match="Nothing to resume"):
        train(run_dir, LaunchOptions(resume=True, **QUIET), out=io.StringIO(), on_event=events.append)  # type: ignore[arg-type]
    assert not [e for e in events if e.kind in ("stage", *CLOSING)]  # never launched, so nothing to close
