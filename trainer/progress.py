"""Parse sd-scripts' console output into progress: steps, epochs, losses, checkpoints, errors.

Formats (kohya-ss/sd-scripts v0.10.1, train_network.py and library/train_util.py):

    running training / 学習開始
      num train images * repeats / 学習画像の数×繰り返し回数: 400
      num validation images * repeats / 学習画像の数×繰り返し回数: 5
      num batches per epoch / 1epochのバッチ数: 200
      num epochs / epoch数: 10
      total optimization steps / 学習ステップ数: 2000
    steps:  12%|█▏        | 240/2000 [01:25<10:22,  2.81it/s, avr_loss=0.0912]     (tqdm, stderr)
    epoch 2/10
    epoch validation steps: 100%|██████████| 20/20 [00:03<00:00, 6.1it/s, val_epoch_avg_loss=0.118, timestep=800]
    saving checkpoint: /run/output/name-000001.safetensors
    generating sample images at step / サンプル画像生成 ステップ: 200
    model saved.

tqdm redraws with carriage returns, so a chunk is split on both \r and \n. TensorBoard event
files hold the exact per-epoch losses; what is parsed here is the live view and the fallback.
The rich `Progress` is the trainer's own record (progress.json, the terminal bar); outside
listeners get `vidstyle.events.ProgressEvent`s of stage "train" (see `train_event`).
"""

from __future__ import annotations

import math
import re
from collections import deque
from dataclasses import asdict, dataclass, field
from typing import Any

from vidstyle.events import EventCallback, EventKind, ProgressEvent

ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")
TQDM = re.compile(
    r"(?P<desc>[A-Za-z][A-Za-z _]*?):\s+(?P<pct>\d+)%\|[^|]*\|\s*(?P<n>\d+)/(?P<total>\d+)\s*"
    r"\[(?P<elapsed>[^<\]]*)<(?P<remaining>[^,\]]*),\s*(?P<rate>[^,\]]*?)(?:,\s*(?P<postfix>[^\]]*))?\]"
)
POSTFIX_ITEM = re.compile(r"\s*([^=,]+?)=([^,]+)")
HEADER = {
    "train_images": re.compile(r"num train images \* repeats[^:]*:\s*(\d+)"),
    "val_images": re.compile(r"num validation images \* repeats[^:]*:\s*(\d+)"),
    "batches_per_epoch": re.compile(r"num batches per epoch[^:]*:\s*(\d+)"),
    "total_epochs": re.compile(r"num epochs[^:]*:\s*(\d+)"),
    "total_steps": re.compile(r"total optimization steps[^:]*:\s*(\d+)"),
}
EPOCH = re.compile(r"^epoch (\d+)/(\d+)\s*$")
CHECKPOINT = re.compile(r"saving checkpoint: (.+?)\s*$")
EPOCH_FILE = re.compile(r"-(\d{6})\.[A-Za-z]+$")
STEP_FILE = re.compile(r"-step(\d{8})\.[A-Za-z]+$")
SAMPLING = re.compile(r"generating sample images at step[^:]*:\s*(\d+)")
DONE = re.compile(r"^model saved\.\s*$")
# library/train_util.py DreamBoothDataset: a subset left without images (e.g. the training copy
# sd-scripts builds of a validation-only dataset, validation_split = 1.0)
EMPTY_SUBSET = re.compile(r"ignore subset with image_dir='(.+?)': no images found")
ERROR_LINE = re.compile(r"^(?:[A-Za-z_][\w.]*\.)?[A-Z]\w*(?:Error|Exception|Interrupt|Invalid)\b.*")
MAX_HISTORY = 2000
NAN_LATENTS_NOTE = "sd-scripts found NaN in latents (SDXL VAE in fp16? set no_half_vae = true)"


def parse_interval(text: str) -> float | None:
    """tqdm's [H:]MM:SS -> seconds; None for '?'."""
    parts = text.strip().split(":")
    try:
        values = [int(p) for p in parts]
    except ValueError:
        return None
    seconds = 0
    for value in values:
        seconds = seconds * 60 + value
    return float(seconds)


def parse_rate(text: str) -> float | None:
    """'2.81it/s' or '3.50s/it' -> iterations per second."""
    match = re.match(r"\s*([\d.]+)\s*(it/s|s/it)", text)
    if not match:
        return None
    value = float(match.group(1))
    if match.group(2) == "s/it":
        return 1.0 / value if value else None
    return value


def parse_number(text: str) -> float | None:
    try:
        return float(text.strip())
    except ValueError:
        return None


def parse_postfix(text: str | None) -> dict[str, str]:
    return {m.group(1).strip(): m.group(2).strip() for m in POSTFIX_ITEM.finditer(text or "")}


@dataclass
class Progress:
    """What progress.json holds; updated line by line by LogParser."""

    state: str = "starting"  # starting | running | finished | failed | stopped
    phase: str = "starting"  # starting | caching | training | validating | sampling | done
    step: int = 0
    total_steps: int | None = None
    epoch: int = 0
    total_epochs: int | None = None
    avr_loss: float | None = None
    best_loss: float | None = None
    it_per_s: float | None = None
    eta_seconds: float | None = None
    elapsed_seconds: float | None = None
    train_images: int | None = None
    val_images: int | None = None
    batches_per_epoch: int | None = None
    checkpoints: list[dict[str, Any]] = field(default_factory=list)
    samples: list[str] = field(default_factory=list)
    epochs: dict[str, dict[str, float | None]] = field(default_factory=dict)
    loss_history: list[tuple[int, float]] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    nan_latents: bool = False
    model_saved: bool = False
    pid: int | None = None  # the trainer process (its process group on POSIX)
    run_started_at: float | None = None  # wall time of the first launch of this training (kept on --resume)
    message: str = ""
    returncode: int | None = None

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["loss_history"] = [[s, _json_float(v)] for s, v in self.loss_history]
        for key in ("avr_loss", "best_loss"):
            data[key] = _json_float(data[key])
        data["epochs"] = {k: {n: _json_float(v) for n, v in e.items()} for k, e in self.epochs.items()}
        return data

    def epoch_record(self, epoch: int) -> dict[str, float | None]:
        return self.epochs.setdefault(str(epoch), {"train_loss": None, "val_loss": None})


def train_event(kind: EventKind, progress: Progress, message: str = "") -> ProgressEvent:
    """A ProgressEvent of stage "train" carrying where the run is: steps, ETA, epoch, loss."""
    return ProgressEvent(
        kind,
        "train",
        done=progress.step,
        total=progress.total_steps or 0,
        eta_seconds=progress.eta_seconds,
        message=message,
        epoch=progress.epoch or None,
        total_epochs=progress.total_epochs,
        loss=progress.avr_loss,
    )


def _checkpoint_note(progress: Progress) -> str:
    last = progress.checkpoints[-1]
    name = last["path"].replace("\\", "/").rsplit("/", 1)[-1]
    return f"saved {name}" + (f" (epoch {last['epoch']})" if last["epoch"] else "")


def _json_float(value: float | None) -> Any:
    """JSON has no NaN; keep it readable as a string instead of writing invalid JSON."""
    if value is None or math.isfinite(value):
        return value
    return str(value)


def _whole_bar(text: str) -> bool:
    """Is this text exactly one complete tqdm redraw (and nothing else)?"""
    line = ANSI.sub("", text).strip()
    bar = TQDM.search(line)
    return bar is not None and bar.start() == 0 and bar.end() == len(line)


class LogParser:
    """Feed it raw output; it updates `progress` and returns what happened per line."""

    def __init__(
        self,
        progress: Progress | None = None,
        keep_lines: int = 200,
        step_offset: int = 0,
        on_event: EventCallback | None = None,
    ) -> None:
        self.progress = progress or Progress()
        self.step_offset = step_offset  # global step a resumed run starts from (sd-scripts restarts its count)
        self.on_event = on_event
        self._header_total: int | None = None
        self._told_total = False
        self.lines: deque[str] = deque(maxlen=keep_lines)
        self._partial = ""
        self._peeked: str | None = None
        self.empty_subsets: list[str] = []  # image_dirs sd-scripts skipped for having no images
        self._val_epoch = 0
        self._val_last_n = -1
        self._in_traceback = False

    def feed(self, chunk: str) -> list[str]:
        """Parse complete lines of `chunk`; returns one event name per interesting line."""
        text = self._partial + chunk
        pieces = re.split(r"\r\n|\r|\n", text)
        self._partial = pieces.pop()
        events = []
        for piece in pieces:
            peeked, self._peeked = self._peeked, None
            if piece == peeked:  # already read while it was the last, unfinished line
                continue
            events += self._emit(self.parse_line(piece))
        # tqdm ends a redraw with no newline; the next \r only comes with the next redraw, which
        # after a slow step may be minutes away. A complete bar is read now, not then.
        if self._partial and self._partial != self._peeked and _whole_bar(self._partial):
            self._peeked = self._partial
            events += self._emit(self.parse_line(self._partial))
        return events

    def _emit(self, events: list[str]) -> list[str]:
        if self.on_event:
            for name in events:
                event = self.progress_event(name)
                if event is not None:
                    self.on_event(event)
        return events

    def progress_event(self, name: str) -> ProgressEvent | None:
        """What a listener hears of a parsed line: steps as "progress", epochs, saves and sampling
        as "status", NaN latents as "warning". Other names (validation, errors, an empty subset,
        the final save) are left to the launcher, which knows what they mean for the run."""
        p = self.progress
        if name == "header" and self._header_total is not None and not self._told_total:
            self._told_total = True  # the step count is known before the first step is done
            return train_event("progress", p)
        if name in ("step", "loss"):
            return train_event("progress", p)
        if name == "epoch":
            return train_event("status", p, f"epoch {p.epoch}/{p.total_epochs}")
        if name == "checkpoint" and p.checkpoints:
            return train_event("status", p, _checkpoint_note(p))
        if name == "sampling":
            return train_event("status", p, f"generating sample images at step {p.step}")
        if name == "nan_latents":
            return train_event("warning", p, NAN_LATENTS_NOTE)
        return None

    def flush(self) -> list[str]:
        rest, self._partial = self._partial, ""
        return self.feed(rest + "\n") if rest else []

    def parse_line(self, raw: str) -> list[str]:
        """Events of one line. stdout and stderr share the pipe, so text can sit right before or
        after a tqdm bar that ended without a newline (e.g. a traceback after the last redraw)."""
        line = ANSI.sub("", raw).strip()
        if not line:
            return []
        bar = TQDM.search(line)
        if not bar:
            self.lines.append(line)
            event = self._line(line)
            return [event] if event else []
        events = self.parse_line(line[: bar.start()])
        event = self._bar(bar)
        events += [event] if event else []
        return events + self.parse_line(line[bar.end() :])

    # -- tqdm bars

    def _bar(self, bar: re.Match[str]) -> str | None:
        desc = bar.group("desc").strip()
        n, total = int(bar.group("n")), int(bar.group("total"))
        postfix = parse_postfix(bar.group("postfix"))
        if desc == "steps":
            return self._train_bar(bar, n, total, postfix)
        if desc in ("epoch validation steps", "validation steps"):
            return self._val_bar(desc, n, total, postfix)
        return None

    def _train_bar(self, bar: re.Match[str], n: int, total: int, postfix: dict[str, str]) -> str:
        p = self.progress
        p.state = "running"
        if p.phase != "done":
            p.phase = "training"
        header = self._header_total or total
        # skip_until_initial_step shortens the bar to the remaining steps; a plain --resume keeps
        # the full bar but restarts its count at 0 while skipping the epochs already done
        offset = header - total if header > total else self.step_offset
        p.step = min(offset + n, header)
        p.total_steps = header
        p.it_per_s = parse_rate(bar.group("rate")) or p.it_per_s
        p.eta_seconds = parse_interval(bar.group("remaining"))
        loss = parse_number(postfix.get("avr_loss", ""))
        if loss is None:
            return "step"
        p.avr_loss = loss
        # sd-scripts draws each step twice: progress_bar.update(1) repeats the previous step's
        # postfix, then set_postfix(avr_loss=...) shows this step's; the last line of a step wins
        if p.loss_history and p.loss_history[-1][0] == p.step:
            p.loss_history[-1] = (p.step, loss)
        else:
            p.loss_history.append((p.step, loss))
            if len(p.loss_history) > MAX_HISTORY:
                p.loss_history = p.loss_history[::2]
        if not math.isfinite(loss):
            return "nan"
        return "loss"

    def _val_bar(self, desc: str, n: int, total: int, postfix: dict[str, str]) -> str | None:
        if desc != "epoch validation steps":
            return None
        p = self.progress
        if n < total and (n < self._val_last_n or self._val_last_n in (-1, total)):
            self._val_epoch = p.epoch  # a new bar; tqdm may print its last line only when it is replaced
        self._val_last_n = n
        loss = parse_number(postfix.get("val_epoch_avg_loss", ""))
        if loss is not None and self._val_epoch:
            p.epoch_record(self._val_epoch)["val_loss"] = loss
        if n < total:
            p.phase = "validating"
        return "val_loss" if loss is not None else None

    # -- plain lines

    def _line(self, line: str) -> str | None:
        p = self.progress
        for key, pattern in HEADER.items():
            match = pattern.search(line)
            if match:
                setattr(p, key, int(match.group(1)))
                if key == "total_steps":
                    self._header_total = p.total_steps
                return "header"
        if "running training" in line:
            p.state, p.phase = "running", "training"
            return "header"
        match = EPOCH.match(line)
        if match:
            self._close_epoch()
            p.epoch, p.total_epochs = int(match.group(1)), int(match.group(2))
            p.phase = "training"
            return "epoch"
        match = CHECKPOINT.search(line)
        if match:
            return self._checkpoint(match.group(1))
        if SAMPLING.search(line):
            p.phase = "sampling"
            return "sampling"
        if DONE.match(line):
            self._close_epoch()
            p.phase, p.model_saved = "done", True
            return "done"
        if "caching latents" in line.lower() or "caching text encoder outputs" in line.lower():
            p.phase = "caching"
            return None
        if "NaN found in latents" in line:
            p.nan_latents = True
            return "nan_latents"
        match = EMPTY_SUBSET.search(line)
        if match:
            self.empty_subsets.append(match.group(1))
            return "empty_subset"
        return self._error(line)

    def _close_epoch(self) -> None:
        """The average loss shown when an epoch ends is that epoch's loss (loss/epoch_average)."""
        p = self.progress
        if p.epoch and p.avr_loss is not None:
            p.epoch_record(p.epoch)["train_loss"] = p.avr_loss

    def _checkpoint(self, path: str) -> str:
        p = self.progress
        name = path.replace("\\", "/").rsplit("/", 1)[-1]
        epoch_match, step_match = EPOCH_FILE.search(name), STEP_FILE.search(name)
        if epoch_match:
            epoch: int | None = int(epoch_match.group(1))
        elif step_match:
            epoch = None
        else:
            epoch = p.total_epochs or p.epoch  # the final save is named without a number
        record = {"epoch": epoch, "step": p.step, "path": path}
        p.checkpoints = [c for c in p.checkpoints if c["path"] != path] + [record]
        if epoch:
            self._close_epoch()
        p.phase = "saving"
        return "checkpoint"

    def _error(self, line: str) -> str | None:
        p = self.progress
        if line.startswith("Traceback (most recent call last)"):
            self._in_traceback = True
            return None
        if ERROR_LINE.match(line) or "CUDA out of memory" in line or "extra keys not allowed" in line:
            p.errors = (p.errors + [line])[-20:]
            self._in_traceback = False
            return "error"
        return None


@dataclass
class LossGuard:
    """Stops a run whose loss went NaN or exploded, instead of letting it burn hours.

    The average loss shown by sd-scripts is a moving average over one epoch's steps, so it is
    smooth; a rise to `factor` times its best value after `min_steps` means divergence.
    """

    factor: float = 4.0
    min_steps: int = 20

    def check(self, progress: Progress) -> str | None:
        loss = progress.avr_loss
        if loss is None:
            return None
        if not math.isfinite(loss):
            return f"the loss became {loss} at step {progress.step}"
        warmup = max(self.min_steps, (progress.batches_per_epoch or 0) // 2)
        if progress.step < warmup:
            return None
        if progress.best_loss is None or loss < progress.best_loss:
            progress.best_loss = loss
            return None
        if self.factor and loss > self.factor * progress.best_loss:
            return (
                f"the loss exploded to {loss:.4g} at step {progress.step} ({loss / progress.best_loss:.1f}x its "
                f"best, {progress.best_loss:.4g})"
            )
        return None
