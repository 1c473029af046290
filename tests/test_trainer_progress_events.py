"""The trainer reports through vidstyle.events (issue 11): dataset prep as ProgressEvents of stage
"dataset", an sd-scripts run as ProgressEvents of stage "train", parsed from sd-scripts' real
console format and from whole runs of tests/doubles/sd_scripts_double (which prints that format)."""

from __future__ import annotations

import io
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import train_helpers as th  # tests/train_helpers.py
import trainer_media as tm  # tests/trainer_media.py

from trainer import commands
from trainer import dataset as dataset_module
from trainer.dataset import prepare
from trainer.launch import LaunchOptions, TrainingError, train
from trainer.prep_options import build_options
from trainer.progress import LogParser
from trainer.run import load_run
from vidstyle.events import ProgressEvent

# sd-scripts v0.10.1 (train_network.py, library/train_util.py) for 2 epochs of 2 steps; tqdm
# redraws with \r and prints each step twice (update(1) keeps the last postfix, then set_postfix)
HEADER = (
    "running training / 学習開始\n"
    "  num train images * repeats / 学習画像の数×繰り返し回数: 4\n"
    "  num validation images * repeats / 学習画像の数×繰り返し回数: 0\n"
    "  num batches per epoch / 1epochのバッチ数: 2\n"
    "  num epochs / epoch数: 2\n"
    "  total optimization steps / 学習ステップ数: 4\n"
)
LOG = (
    HEADER
    + "\rsteps:   0%|          | 0/4 [00:00<?, ?it/s]\nepoch 1/2\n"
    + "\rsteps:  25%|##5       | 1/4 [00:01<00:03,  1.02s/it]"
    + "\rsteps:  25%|##5       | 1/4 [00:01<00:03,  1.02s/it, avr_loss=0.2]"
    + "\rsteps:  50%|#####     | 2/4 [00:02<00:02,  1.01s/it, avr_loss=0.2]"
    + "\rsteps:  50%|#####     | 2/4 [00:02<00:02,  1.01s/it, avr_loss=0.18]\n"
    + "saving checkpoint: /run/output/lora-000001.safetensors\n"
    + "generating sample images at step / サンプル画像生成 ステップ: 2\n"
    + "NaN found in latents, replacing with zeros\n"
    + "epoch 2/2\n"
    + "\rsteps:  75%|#######5  | 3/4 [00:03<00:01,  1.01s/it, avr_loss=0.17]"
    + "\rsteps: 100%|##########| 4/4 [00:04<00:00,  1.00s/it, avr_loss=0.16]\n"
    + "saving checkpoint: /run/output/lora.safetensors\n"
    + "model saved.\n"
)


def _of(events: Sequence[ProgressEvent], kind: str) -> list[ProgressEvent]:
    return [e for e in events if e.kind == kind]


# --------------------------------------------------------------------------- the parser


def test_parser_reports_steps_epochs_saves_and_warnings_as_train_events() -> None:
    events: list[ProgressEvent] = []
    parser = LogParser(on_event=events.append)
    for start in range(0, len(LOG), 29):  # arbitrary chunk boundaries, as a pipe delivers them
        parser.feed(LOG[start : start + 29])
    parser.flush()
    assert events and all(isinstance(e, ProgressEvent) and e.stage == "train" for e in events)
    progress = _of(events, "progress")
    assert (progress[0].done, progress[0].total) == (0, 4)  # the header already tells the step count
    assert [e.done for e in progress] == sorted(e.done for e in progress) and progress[-1].done == 4
    assert all(e.total == 4 for e in progress)
    assert progress[-1].loss == pytest.approx(0.16) and progress[-1].eta_seconds == 0
    assert (progress[-1].epoch, progress[-1].total_epochs) == (2, 2)
    assert [e.message for e in _of(events, "status")] == [
        "epoch 1/2",
        "saved lora-000001.safetensors (epoch 1)",
        "generating sample images at step 2",
        "epoch 2/2",
        "saved lora.safetensors (epoch 2)",  # the final save is named without a number
    ]
    assert [e.message for e in _of(events, "warning")] == [
        "sd-scripts found NaN in latents (SDXL VAE in fp16? set no_half_vae = true)"
    ]
    assert not _of(events, "done")  # "model saved." is not the end: the launcher says when the run finished


# --------------------------------------------------------------------------- whole runs against the double


@pytest.fixture(scope="module")
def inputs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    return th.run_inputs(tmp_path_factory.mktemp("events"))


@pytest.fixture()
def double_env(monkeypatch: pytest.MonkeyPatch) -> None:
    th.use_sd_scripts_double(monkeypatch)


def _run(inputs: dict[str, Path], out: Path, epochs: int) -> Path:
    extra = ["--set", f"max_train_epochs={epochs}", "--set", "dataset.batch_size=2"]
    assert commands.main(th.config_argv(inputs["dataset"], inputs["sd15"], out, "sd15-character", extra=extra)) == 0
    return out


def test_a_training_run_emits_stage_progress_status_and_done(
    inputs: dict[str, Path], tmp_path: Path, double_env: None
) -> None:
    run_dir = _run(inputs, tmp_path / "run", epochs=3)
    events: list[ProgressEvent] = []
    result = train(run_dir, LaunchOptions(show_bar=False, stop_grace=10.0), out=io.StringIO(), on_event=events.append)
    assert result.state == "finished" and all(e.stage == "train" for e in events)
    assert events[0].kind == "stage" and events[0].message.startswith("launching sd-scripts")
    progress = _of(events, "progress")
    assert [e.done for e in progress] == sorted(e.done for e in progress)  # steps only move forward
    assert progress[-1].done == 12 and {e.total for e in progress} == {12}  # 4 images x 2 repeats / batch 2 x 3
    assert any(e.loss is not None for e in progress)
    assert all(e.eta_seconds is not None for e in progress if e.done)  # tqdm shows "?" before the first step
    statuses = [e.message for e in _of(events, "status")]
    assert [m for m in statuses if m.startswith("epoch ")] == ["epoch 1/3", "epoch 2/3", "epoch 3/3"]
    assert "saved mikuchan-000001.safetensors (epoch 1)" in statuses
    done = events[-1]
    assert done.kind == "done" and (done.done, done.total, done.epoch, done.total_epochs) == (12, 12, 3, 3)
    assert done.message == f"3 LoRA files in {load_run(run_dir).output_dir}"
    assert len(_of(events, "done")) == 1


def test_a_run_stopped_for_nan_warns_and_never_says_done(
    inputs: dict[str, Path], tmp_path: Path, double_env: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SD_DOUBLE_NAN_AT_STEP", "3")
    run_dir = _run(inputs, tmp_path / "nan", epochs=2)
    events: list[ProgressEvent] = []
    with pytest.raises(TrainingError):
        train(run_dir, LaunchOptions(show_bar=False, stop_grace=10.0), out=io.StringIO(), on_event=events.append)
    warnings = [e.message for e in _of(events, "warning")]
    assert any(re.match(r"stopping early: the loss became nan at step \d+$", m) for m in warnings), warnings
    assert not _of(events, "done")


# --------------------------------------------------------------------------- dataset prep


class TaggerDouble:
    """Stands in for the WD14 tagger: the same tags for every picture, no model."""

    name = "tagger double"

    def tag(self, images: Sequence[np.ndarray]) -> list[list[str]]:
        return [["1girl", "solo"] for _ in images]


def _sources(folder: Path, count: int) -> Path:
    for i in range(count):
        tm.save(folder / f"pic{i}.png", tm.scene(700 + i, (320, 256)))
    return folder


def _prep_options(src: Path, out: Path, **overrides: Any):  # type: ignore[no-untyped-def]
    values: dict[str, Any] = dict(
        sources=[str(src)], out=str(out), name="zhongli", workers=1, face_detector="none", dedupe=False,
        blur_threshold=0, drop_monochrome=False, val_fraction=0,
    )  # fmt: skip
    return build_options(**{**values, **overrides})


def test_dataset_prep_emits_a_step_per_image_then_done(tmp_path: Path) -> None:
    src = _sources(tmp_path / "src", 5)
    (src / "notes.txt").write_text("not an image", encoding="utf-8")
    events: list[ProgressEvent] = []
    result = prepare(_prep_options(src, tmp_path / "ds"), on_event=events.append)
    assert all(e.stage == "dataset" for e in events)
    assert [(e.kind, e.message) for e in _of(events, "stage")] == [
        ("stage", "scanning sources"),
        ("stage", "analysing images"),
    ]
    analysing = [e for e in events if e.message == "analysing images"]
    per_image = [("progress", n, 5) for n in range(1, 6)]
    assert [(e.kind, e.done, e.total) for e in analysing] == [("stage", 0, 5), *per_image]
    assert analysing[-1].eta_seconds == 0 and all(e.eta_seconds is not None for e in analysing[1:])
    done = events[-1]
    assert done.kind == "done" and (done.done, done.total) == (result.counts["kept"], result.counts["found"]) == (5, 5)


def test_dataset_prep_reports_tagging_and_its_notes(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(dataset_module, "_load_tagger", lambda options, auth=None: TaggerDouble())
    src = _sources(tmp_path / "src", 3)
    (tmp_path / "empty").mkdir()
    events: list[ProgressEvent] = []
    sources = [str(src), str(tmp_path / "empty")]
    options = _prep_options(src, tmp_path / "ds", sources=sources, caption_source="wd14", tagger_model="unused.onnx")
    result = prepare(options, on_event=events.append)
    tagging = [(e.kind, e.done, e.total) for e in events if e.message == "tagging images"]
    assert tagging == [("stage", 0, 3), ("progress", 3, 3)]  # one batch of up to 8 images
    warnings = [e.message for e in _of(events, "warning")]
    assert warnings == result.manifest["notes"] and any("holds no supported images" in m for m in warnings)
    assert result.manifest["files"][0]["caption_from"] == "tagger double"
    assert events[-1].kind == "done"
