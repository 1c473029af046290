"""Shared helpers for the trainer tests (config, launch, report): small datasets laid out as
`python -m trainer prep` writes them, checkpoint files with SD1.5/SDXL tensor names in their
header, run folders, TensorBoard event files and sample images in sd-scripts' naming, and the
environment that runs training against the sd-scripts double."""

from __future__ import annotations

import json
import struct
import time
from collections.abc import Iterable, Sequence
from pathlib import Path

import pytest
from PIL import Image

SD_SCRIPTS_DOUBLE = Path(__file__).resolve().parent / "doubles" / "sd_scripts_double"
# The environment switches the sd-scripts double reads (its module docstring says what each does).
SD_DOUBLE_SWITCHES = (
    "SD_DOUBLE_NAN_AT_STEP",
    "SD_DOUBLE_EXPLODE_AT_STEP",
    "SD_DOUBLE_CRASH_AT_STEP",
    "SD_DOUBLE_CRASH_KIND",
    "SD_DOUBLE_STEP_SECONDS",
    "SD_DOUBLE_TQDM_MININTERVAL",
    "SD_DOUBLE_BEST_EPOCH",
    "SD_DOUBLE_PAUSE_AFTER_STEP",
)

SD15_KEYS = (
    "cond_stage_model.transformer.text_model.embeddings.position_ids",
    "model.diffusion_model.input_blocks.0.0.weight",
)
SDXL_KEYS = ("conditioner.embedders.1.model.ln_final.weight", "model.diffusion_model.input_blocks.0.0.weight")


def write_safetensors_header(path: Path, names: Iterable[str], metadata: dict[str, str] | None = None) -> Path:
    """A file with a valid .safetensors header (2-byte tensors): enough for family detection."""
    header: dict[str, object] = {}
    offset = 0
    for name in names:
        header[name] = {"dtype": "F16", "shape": [1], "data_offsets": [offset, offset + 2]}
        offset += 2
    header["__metadata__"] = metadata or {"format": "pt"}
    raw = json.dumps(header).encode("utf-8")
    path.write_bytes(struct.pack("<Q", len(raw)) + raw + b"\0" * offset)
    return path


def make_checkpoint(folder: Path, family: str = "sd15") -> Path:
    return write_safetensors_header(folder / f"{family}-base.safetensors", SDXL_KEYS if family == "sdxl" else SD15_KEYS)


def make_dataset(
    folder: Path,
    name: str = "mikuchan",
    repeats: int = 5,
    train: int = 4,
    val: int = 2,
    prep: dict | None = None,
    captions: bool = True,
) -> Path:
    """DATASET/img/N_name/*.png+.txt, DATASET/val/*.png+.txt, DATASET/prep.json (prep's layout)."""
    images = folder / "img" / f"{repeats}_{name}"
    images.mkdir(parents=True)
    for i in range(train):
        Image.new("RGB", (64, 80), (40 * i % 255, 120, 200)).save(images / f"train_{i:02d}.png")
        if captions:
            (images / f"train_{i:02d}.txt").write_text(f"{name}, 1girl, twintails, pose {i}", encoding="utf-8")
    if val:
        (folder / "val").mkdir()
        for i in range(val):
            Image.new("RGB", (64, 80), (200, 60 * i % 255, 30)).save(folder / "val" / f"val_{i:02d}.png")
            (folder / "val" / f"val_{i:02d}.txt").write_text(
                f"{name}, 1girl, sitting, chair --oops, held {i}", encoding="utf-8"
            )
    if prep is not False:
        data = (
            prep if prep is not None else {"options": {"name": name}, "dataset": {"trigger": name, "resolution": 512}}
        )
        (folder / "prep.json").write_text(json.dumps(data), encoding="utf-8")
    return folder


def run_inputs(root: Path, families: Sequence[str] = ("sd15",)) -> dict[str, Path]:
    """What a training run against the double starts from: a small dataset (2 repeats, 4 train and
    2 validation images) under "dataset" and a checkpoint per model family under its name."""
    inputs = {"dataset": make_dataset(root / "ds", repeats=2, train=4, val=2)}
    for family in families:
        inputs[family] = make_checkpoint(root, family)
    return inputs


def use_sd_scripts_double(monkeypatch: pytest.MonkeyPatch) -> None:
    """Train with the sd-scripts double, started by plain python (accelerate's CLI is not part of
    the tests), with none of its switches left set from outside the test."""
    # The double writes real .safetensors checkpoints, as sd-scripts does.
    pytest.importorskip("safetensors", reason="the sd-scripts double needs safetensors (vidstyle[diffusers])")
    for name in SD_DOUBLE_SWITCHES:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("VIDSTYLE_SD_SCRIPTS", str(SD_SCRIPTS_DOUBLE))
    monkeypatch.setenv("VIDSTYLE_TRAIN_LAUNCHER", "python")


# Where the double's loss turns bad, and the global step the launcher's guard stops it at.
BAD_LOSS = {
    "nan": ("SD_DOUBLE_NAN_AT_STEP", "5", 6),  # nan from the 6th step on
    "explode": ("SD_DOUBLE_EXPLODE_AT_STEP", "24", 28),  # after the guard's 20-step warm-up; 6.4x its best at 28
}


def bad_loss(monkeypatch: pytest.MonkeyPatch, kind: str, step_seconds: float = 0.03) -> None:
    """The double's loss goes bad (`kind` "nan" or "explode") and the double then waits at the step
    the guard acts on, so the stop is seen however slowly the test reads the trainer's output (CI
    once read it only after the double had finished)."""
    switch, at, stop_step = BAD_LOSS[kind]
    monkeypatch.setenv(switch, at)
    monkeypatch.setenv("SD_DOUBLE_STEP_SECONDS", str(step_seconds))
    monkeypatch.setenv("SD_DOUBLE_TQDM_MININTERVAL", "0")  # every step printed, the guard's one too
    monkeypatch.setenv("SD_DOUBLE_PAUSE_AFTER_STEP", f"{stop_step}:60")


def config_argv(dataset: Path, model: Path, out: Path, *presets: str, extra: Sequence[str] = ()) -> list[str]:
    argv = ["config", "--dataset", str(dataset), "--model", str(model), "--out", str(out)]
    for preset in presets or ("sd15-character",):
        argv += ["--preset", preset]
    return argv + list(extra)


def write_events(folder: Path, steps: dict[str, Sequence[tuple[int, float]]], wall_time: float | None = None) -> Path:
    """TensorBoard scalar events as accelerate's tracker writes them (Summary.Value simple_value)."""
    import pytest

    pytest.importorskip("tensorboard", reason="writing TensorBoard event files needs tensorboard (vidstyle[test])")
    from tensorboard.compat.proto import event_pb2, summary_pb2
    from tensorboard.summary.writer.event_file_writer import EventFileWriter

    folder.mkdir(parents=True, exist_ok=True)
    writer = EventFileWriter(str(folder))
    stamp = wall_time if wall_time is not None else time.time()
    for tag, series in steps.items():
        for step, value in series:
            summary = summary_pb2.Summary(value=[summary_pb2.Summary.Value(tag=tag, simple_value=float(value))])
            writer.add_event(event_pb2.Event(wall_time=stamp, step=int(step), summary=summary))
    writer.close()
    return folder


def sample_name(
    output_name: str, epoch: int, index: int, stamp: str = "20260101120000", seed: int | None = 1234
) -> str:
    """sd-scripts' sample file name: {name}_e{epoch:06d}_{index:02d}_{YYYYmmddHHMMSS}_{seed}.png"""
    return f"{output_name}_e{epoch:06d}_{index:02d}_{stamp}" + (f"_{seed}" if seed is not None else "") + ".png"


def write_sample(folder: Path, name: str, color: tuple[int, int, int], size: int = 48) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", (size, size), color).save(folder / name)
    return folder / name
