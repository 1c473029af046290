"""A run's saved epochs rendered on the user's own video (`vidstyle preview VIDEO --lora-epochs RUN`,
`python -m trainer report RUN --video VIDEO`, the tab's epoch preview).

This module joins the two halves: it reads the run folder (epoch files, validation losses,
trigger word, preferred weight) and hands the epochs to `vidstyle.epoch_preview`, which
renders and draws. Output: RUN/report/video-<video name>.png and .html.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from vidstyle.epoch_preview import EpochLora, EpochPreview, render_epoch_preview
from vidstyle.errors import UserInputError, VidstyleError
from vidstyle.filenames import safe_name
from vidstyle.safetensors_header import read_header
from vidstyle.spec import JobSpec

from .evidence import gather
from .run import Run, load_run


def lora_family(path: Path) -> str | None:
    """'sd15', 'sd2' or 'sdxl' from a LoRA's header: sd-scripts' metadata, else its tensor names.

    sd-scripts writes ss_base_model_version (sd_v1, sd_v2, sdxl_base_v1-0) and modelspec.architecture;
    without them, SDXL LoRAs have two text encoders (lora_te1_/lora_te2_) and the LDM UNet names
    (lora_unet_input_blocks_...), SD1.x/2.x ones lora_te_ and diffusers names (lora_unet_down_blocks_...).
    """
    names, metadata = read_header(path)
    version = metadata.get("ss_base_model_version", "") + " " + metadata.get("modelspec.architecture", "")
    if "sdxl" in version or "stable-diffusion-xl" in version:
        return "sdxl"
    if "sd_v2" in version or "stable-diffusion-v2" in version:
        return "sd2"
    if "sd_v1" in version or "stable-diffusion-v1" in version:
        return "sd15"
    if any(
        n.startswith(("lora_te1_", "lora_te2_", "lora_unet_input_blocks_", "lora_unet_output_blocks_")) for n in names
    ):
        return "sdxl"
    if any(n.startswith(("lora_te_", "lora_unet_down_blocks_", "lora_unet_up_blocks_")) for n in names):
        return "sd2" if metadata.get("ss_v2") == "True" else "sd15"
    return None


def run_epochs(run_dir: Path) -> tuple[Run, list[EpochLora]]:
    """The run and its saved epochs (file, losses, base family, the command that installs it)."""
    run = load_run(Path(run_dir))
    evidence = gather(run)
    epochs = []
    for row in evidence.rows:
        if row.file is None:
            continue
        try:
            family = lora_family(row.file)
        except VidstyleError:  # a damaged file: the backend names it when it tries to load it
            family = None
        note = f"python -m trainer install {run.dir} --epoch {row.epoch} --webui WEBUI"
        epochs.append(EpochLora(row.epoch, row.file, row.val_loss, row.train_loss, family, note))
    if not epochs:
        raise UserInputError(
            f"{run.dir} has no saved epochs yet; train it first with `python -m trainer train {run.dir}`."
        )
    return run, epochs


def with_trigger(prompt: str, trigger: str) -> str:
    """The trigger word first in the prompt (a character LoRA is trained to answer to it)."""
    if not trigger or re.search(rf"(^|[\s,(]){re.escape(trigger)}($|[\s,:)])", prompt):
        return prompt
    return f"{trigger}, {prompt}" if prompt else trigger


def preview_run_on_video(
    run_dir: Path, spec: JobSpec, out_dir: Path | None = None, weight: float | None = None, **options: Any
) -> EpochPreview:
    """Render every saved epoch of RUN on frames of spec.source.path; see `render_epoch_preview` for options."""
    run, epochs = run_epochs(run_dir)
    if weight is None:
        weight = float(run.meta.get("preferred_weight", 0.8))
    spec = spec.with_overrides({"prompt": with_trigger(spec.prompt, run.trigger)})
    video = Path(spec.source.path)
    name = "video-" + safe_name(video.stem, fallback="clip")
    return render_epoch_preview(
        spec,
        epochs,
        Path(out_dir) if out_dir else run.dir / "report",
        name,
        lora_weight=weight,
        run_label=run.output_name,
        title=run.output_name,
        **options,
    )
