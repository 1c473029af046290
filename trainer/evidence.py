"""Gather the evidence for picking an epoch: losses, LoRA files and sample images per epoch.

Sources, best first:
* TensorBoard event files in logging_dir (what sd-scripts logs through accelerate):
  loss/epoch_average and loss/validation/epoch_average at step = epoch number,
  loss/current and loss/average at step = global step;
* RUN/progress.json, parsed from the console log, when tensorboard is not installed or
  logging was off.
Files: {output_name}-{epoch:06d}.safetensors, the final {output_name}.safetensors (its
ss_epoch metadata says which epoch), and sample/{output_name}_e{epoch:06d}_{index:02d}_{time}[_{seed}].png.

The recommendation is the epoch with the lowest validation loss; it is evidence to weigh
beside the sample grid, never a replacement for looking at it, and there is none without
validation data (the lowest training loss is not the best LoRA).
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from vidstyle.errors import UserInputError, VidstyleError
from vidstyle.safetensors_header import read_metadata

from .run import Run, read_sample_prompts

Series = list[tuple[int, float]]
SAMPLE_NAME = (
    r"^{name}_(?:e(?P<epoch>\d{{6}})|(?P<step>\d{{6}}))_(?P<index>\d{{2}})_(?P<time>\d{{14}})(?:_(?P<seed>\d+))?\.png$"
)


@dataclass
class EpochRow:
    epoch: int
    train_loss: float | None = None
    val_loss: float | None = None
    file: Path | None = None
    samples: dict[int, Path] = field(default_factory=dict)


@dataclass
class Evidence:
    run: Run
    rows: list[EpochRow]
    prompts: list[dict[str, Any]]
    step_losses: dict[str, Series]
    source: str
    recommended: int | None
    notes: list[str]

    def row(self, epoch: int) -> EpochRow | None:
        return next((r for r in self.rows if r.epoch == epoch), None)

    @property
    def last_epoch(self) -> int | None:
        with_files = [r.epoch for r in self.rows if r.file]
        return max(with_files) if with_files else None


# --------------------------------------------------------------------------- TensorBoard


def event_dirs(logging_dir: Path | None) -> list[Path]:
    """One folder per launch ({logging_dir}/{prefix}{timestamp}/network_train), oldest first."""
    if not logging_dir or not logging_dir.is_dir():
        return []
    return sorted({p.parent for p in logging_dir.rglob("events.out.tfevents.*")})


def read_scalars(logging_dir: Path | None, since: float | None = None) -> list[dict[str, Series]] | None:
    """Scalars per launch, or None when tensorboard is not installed. Launches that began
    before `since` belong to an earlier training of this run (before a --restart) and are skipped."""
    try:
        from tensorboard.backend.event_processing.event_accumulator import SCALARS, EventAccumulator
    except ImportError:
        return None
    runs = []
    for folder in event_dirs(logging_dir):
        accumulator = EventAccumulator(str(folder), size_guidance={SCALARS: 0})
        accumulator.Reload()
        try:
            if since is not None and accumulator.FirstEventTimestamp() < since - 1:
                continue
        except ValueError:  # no events at all
            continue
        tags = [t for t in accumulator.Tags()["scalars"] if t.startswith(("loss/", "lr/"))]
        if tags:  # add_hparams (log_config) writes a sub-folder without losses
            runs.append({tag: [(e.step, e.value) for e in accumulator.Scalars(tag)] for tag in tags})
    return runs


def per_epoch(runs: list[dict[str, Series]], tag: str) -> dict[int, float]:
    """Epoch-indexed values; a later launch (--resume) overrides an earlier one's epoch."""
    values: dict[int, float] = {}
    for scalars in runs:
        for step, value in scalars.get(tag, []):
            values[int(step)] = float(value)
    return values


# --------------------------------------------------------------------------- files


def checkpoint_files(run: Run) -> dict[int, Path]:
    folder, name = run.output_dir, run.output_name
    if not folder.is_dir():
        return {}
    files: dict[int, Path] = {}
    pattern = re.compile(rf"^{re.escape(name)}-(\d{{6}})\.safetensors$")
    for path in folder.glob("*.safetensors"):
        match = pattern.match(path.name)
        if match:
            files[int(match.group(1))] = path
    final = folder / f"{name}.safetensors"
    if final.is_file():
        epoch = _final_epoch(final, run)
        if epoch is not None:
            files[epoch] = final
    return files


def _final_epoch(path: Path, run: Run) -> int | None:
    """The last save has no number in its name; sd-scripts records the epoch in ss_epoch."""
    try:
        value = read_metadata(path).get("ss_epoch")
        if value is not None:
            return int(value)
    except (ValueError, VidstyleError):  # a damaged file must not break the report
        pass
    return run.train.max_train_epochs


def sample_files(run: Run) -> tuple[dict[int, dict[int, Path]], int]:
    """{epoch: {prompt index: newest file}} and how many step-numbered samples were left out."""
    folder = run.output_dir / "sample"
    pattern = re.compile(SAMPLE_NAME.format(name=re.escape(run.output_name)))
    grid: dict[int, dict[int, tuple[str, Path]]] = {}
    step_samples = 0
    try:
        names = sorted(folder.iterdir()) if folder.is_dir() else []
    except OSError as exc:
        raise UserInputError(
            f"Cannot read the sample folder {folder}: {exc.strerror or exc}; check its permissions."
        ) from None
    if names:
        for path in names:
            match = pattern.match(path.name)
            if not match:
                continue
            if match.group("epoch") is None:
                step_samples += 1
                continue
            epoch, index, stamp = int(match.group("epoch")), int(match.group("index")), match.group("time")
            current = grid.setdefault(epoch, {}).get(index)
            if current is None or stamp >= current[0]:  # a resumed run may draw an epoch twice: keep the newest
                grid[epoch][index] = (stamp, path)
    return {e: {i: p for i, (_, p) in cells.items()} for e, cells in grid.items()}, step_samples


# --------------------------------------------------------------------------- progress.json fallback


def read_progress_json(run_dir: Path) -> dict[str, Any]:
    try:
        data = json.loads((run_dir / "progress.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def _number(value: Any) -> float | None:
    try:
        return float(value) if value is not None else None
    except (TypeError, ValueError):
        return None


def log_losses(progress: dict[str, Any]) -> tuple[dict[int, float], dict[int, float], Series]:
    train: dict[int, float] = {}
    val: dict[int, float] = {}
    for key, record in (progress.get("epochs") or {}).items():
        if not isinstance(record, dict):
            continue
        for target, name in ((train, "train_loss"), (val, "val_loss")):
            value = _number(record.get(name))
            if value is not None:
                target[int(key)] = value
    history = [(int(s), float(v)) for s, v in progress.get("loss_history") or [] if _number(v) is not None]
    return train, val, history


# --------------------------------------------------------------------------- assembly


def recommend(rows: list[EpochRow]) -> int | None:
    candidates = [r for r in rows if r.file and r.val_loss is not None and math.isfinite(r.val_loss)]
    return min(candidates, key=lambda r: (r.val_loss, r.epoch)).epoch if candidates else None


def gather(run: Run) -> Evidence:
    notes: list[str] = []
    progress = read_progress_json(run.dir)
    runs = read_scalars(run.logging_dir, _number(progress.get("run_started_at")))
    log_train, log_val, history = log_losses(progress)
    if runs:
        source = "tensorboard"
        train, val = per_epoch(runs, "loss/epoch_average"), per_epoch(runs, "loss/validation/epoch_average")
        step_losses = _step_losses(runs, history)
    else:
        source = "log"
        train, val, step_losses = log_train, log_val, {"loss/average": history}
        notes.append(
            "losses come from the console log (tensorboard is not installed or wrote no events); values are rounded to "
            "3 digits."
            if runs is None
            else "no TensorBoard events found; losses come from the console log (rounded to 3 digits)."
        )
    files = checkpoint_files(run)
    samples, step_samples = sample_files(run)
    if step_samples:
        notes.append(f"{step_samples} step-numbered samples (sample_every_n_steps) are not in the epoch grid.")
    epochs = sorted(set(files) | set(samples) | set(train) | set(val))
    rows = [EpochRow(e, train.get(e), val.get(e), files.get(e), samples.get(e, {})) for e in epochs]
    recommended = recommend(rows)
    if recommended is None:
        notes.append(
            "no validation loss: choose the epoch from the sample grid (the lowest training loss is not the best LoRA)."
        )
    prompts = read_sample_prompts(run.sample_prompts_path) if run.sample_prompts_path else []
    return Evidence(run, rows, prompts, step_losses, source, recommended, notes)


def _step_losses(runs: list[dict[str, Series]], history: Series) -> dict[str, Series]:
    """Per-step curves. sd-scripts restarts its step count on --resume, so several launches are
    drawn from progress.json, where the launcher kept the global step."""
    if len(runs) > 1 and history:
        return {"loss/average": history}
    merged: dict[str, Series] = {}
    for scalars in runs:
        for tag in ("loss/current", "loss/average"):
            merged.setdefault(tag, []).extend(scalars.get(tag, []))
    return merged
