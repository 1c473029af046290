"""The one progress event every long task reports through (render loop, encoding, previews,
dataset prep and LoRA training).

A task takes an `EventCallback` and calls it with ProgressEvents; the CLI prints them, the
tab and the API status read them through the job manager. Nothing here prints or blocks.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal

# "stage": a new phase starts; "frame": a frame finished; "progress": inside a frame, or
# frames of an encode; "failed": a frame failed for good; "status": a passing note;
# "warning": something the user should know that did not stop the task (audio dropped);
# "done": the task finished.
EventKind = Literal["stage", "frame", "progress", "failed", "status", "warning", "done"]
# Stages of a video job: "prepare", "preflight", "render", "finish". Stages of the trainer:
# "dataset" is dataset prep (trainer.dataset.prepare; done/total count images, the message
# names the step: analysing, tagging), "train" is one sd-scripts run (trainer.launch.train;
# done/total count optimization steps, with epoch / total_epochs / loss).
Stage = Literal["prepare", "preflight", "render", "finish", "dataset", "train"]


@dataclass
class ProgressEvent:
    kind: EventKind
    stage: Stage
    done: int = 0
    total: int = 0
    frame_index: int | None = None
    fps: float | None = None
    eta_seconds: float | None = None
    message: str = ""
    image_path: str | None = None
    frame_fraction: float | None = None  # with "progress" in "render": how far the current frame is
    # with "frame": per-worker progress of a backend that has workers (Ray), as plain dicts
    workers: list[dict[str, Any]] | None = None
    # with "train": the epoch running and of how many, and sd-scripts' average loss (avr_loss)
    epoch: int | None = None
    total_epochs: int | None = None
    loss: float | None = None


EventCallback = Callable[[ProgressEvent], None]


def ignore_event(event: ProgressEvent) -> None:
    """The default callback: a task run without a listener reports to nobody."""
    return None


def status_reporter(on_event: EventCallback, stage: Stage = "render") -> Callable[[str], None]:
    """A backend's `on_status(message)` as "status" events of `stage`."""
    return lambda message: on_event(ProgressEvent("status", stage, message=message))
