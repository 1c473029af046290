"""`python -m trainer install RUN --epoch E --webui DIR`: put a chosen LoRA into the WebUI.

Writes, in WEBUI/models/Lora (or --lora-dir):
    NAME.safetensors    the LoRA of epoch E
    NAME.preview.png    that epoch's first sample image (the card's picture)
    NAME.json           the card's user metadata, with the keys the WebUI's Lora editor saves
                        (extensions-builtin/Lora/ui_edit_user_metadata.py): "description",
                        "sd version", "activation text", "preferred weight", "negative text", "notes"

The WebUI adds "activation text" to the prompt with the LoRA and uses "preferred weight" in
`<lora:NAME:weight>`. Existing files are never replaced without --force.
"""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path
from typing import Any

from PIL import Image

from vidstyle.atomic import atomic_path
from vidstyle.errors import OutputError, UserInputError

from .evidence import Evidence, gather
from .run import Run, load_run


def resolve_epoch(text: str, evidence: Evidence) -> int:
    saved = [r.epoch for r in evidence.rows if r.file]
    if not saved:
        raise UserInputError(f"{evidence.run.dir} has no saved LoRA yet; train it first.")
    if text == "last":
        return max(saved)
    if text == "best":
        if evidence.recommended is None:
            raise UserInputError(
                "There is no validation loss to pick 'best' by; look at the report's grid and give --epoch N."
            )
        return evidence.recommended
    try:
        epoch = int(text)
    except ValueError:
        raise UserInputError(f"--epoch must be a number, 'last' or 'best', not {text!r}.") from None
    if epoch not in saved:
        raise UserInputError(f"Epoch {epoch} has no saved LoRA; saved epochs: {', '.join(map(str, saved))}.")
    return epoch


def lora_folder(webui: Path | None, lora_dir: Path | None) -> Path:
    if lora_dir is not None:
        if not lora_dir.is_dir():
            raise UserInputError(
                f"Lora folder {lora_dir} does not exist; give the folder the WebUI's --lora-dir points at."
            )
        return lora_dir
    if webui is None:
        raise UserInputError("Give the WebUI folder with --webui DIR (or its Lora folder with --lora-dir).")
    markers = ("webui.py", "launch.py", "models")
    if not webui.is_dir() or not any((webui / m).exists() for m in markers):
        raise UserInputError(
            f"{webui} does not look like a Stable Diffusion WebUI folder (no webui.py, launch.py or models/)."
        )
    return webui / "models" / "Lora"


def safe_file_name(name: str) -> str:
    if not name or name in (".", "..") or re.search(r"[\\/:*?\"<>|]", name):
        raise UserInputError(f"'{name}' cannot be a file name; use letters, digits, '-' and '_'.")
    return name


def card_metadata(run: Run, evidence: Evidence, epoch: int, weight: float) -> dict[str, Any]:
    row = evidence.row(epoch)
    assert row is not None and row.file is not None
    val = f", validation loss {row.val_loss:.4f}" if row.val_loss is not None else ""
    total = run.train.max_train_epochs
    return {
        "description": f"{run.trigger}: LoRA trained with Vidstyle from presets "
        f"{', '.join(run.meta.get('presets', []))}.",
        "sd version": run.family.webui_sd_version,
        "activation text": run.trigger,
        "preferred weight": weight,
        "negative text": "",
        "notes": (
            f"Epoch {epoch}{f' of {total}' if total else ''} ({row.file.name}){val}. "
            f"Base model: {Path(run.train.pretrained_model_name_or_path).name}. Run folder: {run.dir}."
        ),
    }


def _copy(source: Path, target: Path) -> None:
    # atomic_path gives its temp file the mode a plain open() would (0666 minus the umask), and
    # copyfile/save/write_text keep it: a WebUI running as another user can read what we install
    with atomic_path(target) as tmp:
        shutil.copyfile(source, tmp)


def install_lora(
    run_dir: Path,
    epoch: str,
    webui: Path | None = None,
    lora_dir: Path | None = None,
    name: str | None = None,
    weight: float | None = None,
    force: bool = False,
) -> list[Path]:
    run = load_run(run_dir)
    evidence = gather(run)
    epoch_no = resolve_epoch(str(epoch), evidence)
    row = evidence.row(epoch_no)
    assert row is not None and row.file is not None
    folder = lora_folder(webui, lora_dir)
    stem = safe_file_name(name or run.output_name)
    weight = float(run.meta.get("preferred_weight", 0.8)) if weight is None else weight
    if not 0 <= weight <= 2:
        raise UserInputError(f"--weight must be between 0 and 2 (the card's slider range), not {weight}.")
    targets = [folder / f"{stem}.safetensors", folder / f"{stem}.preview.png", folder / f"{stem}.json"]
    existing = [p.name for p in targets if p.exists()]
    if existing and not force:
        raise UserInputError(
            f"{', '.join(existing)} already exist in {folder}; add --force to replace them or choose --name."
        )
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise OutputError(f"Cannot create {folder}: {exc.strerror}.") from None
    _copy(row.file, targets[0])
    written = [targets[0]]
    preview = row.samples[min(row.samples)] if row.samples else None
    if preview is not None:
        with Image.open(preview) as image, atomic_path(targets[1]) as tmp:
            image.convert("RGB").save(tmp, format="PNG")
        written.append(targets[1])
    with atomic_path(targets[2]) as tmp:
        tmp.write_text(
            json.dumps(card_metadata(run, evidence, epoch_no, weight), indent=4, ensure_ascii=False) + "\n",
            encoding="utf-8",
        )
    written.append(targets[2])
    return written
