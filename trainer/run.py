"""The run folder: plan it from presets + a prepared dataset, write it, load it back.

    RUN/run.json            what we know that sd-scripts' files cannot hold (family, trigger, presets...)
    RUN/dataset.toml        --dataset_config
    RUN/config.toml         --config_file
    RUN/sample_prompts.txt  fixed-seed prompts drawn after every epoch
    RUN/command.txt         the launcher argv, shell-quoted for reading (we never run it through a shell)
    RUN/output/             LoRAs per epoch, state folders, sample/ images (sd-scripts writes these)
    RUN/logs/               TensorBoard event files (sd-scripts writes these)

The dataset folder comes from `python -m trainer prep`: DATASET/img/N_name/ (kohya's folder
convention, N = repeats), DATASET/val/ (held-out images + captions) and DATASET/prep.json.
"""

from __future__ import annotations

import json
import math
import os
import re
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from vidstyle.atomic import write_text
from vidstyle.compat import BaseModel, Extra, Field, ValidationError
from vidstyle.errors import JobStateError, ModelNotFoundError, OutputError, SpecError, UserInputError
from vidstyle.filenames import safe_name
from vidstyle.overrides import describe_validation_error
from vidstyle.sd_architectures import checkpoint_family

from .captions import parse_caption
from .config import load_dataset_config, load_train_args, write_dataset_config, write_train_args
from .config_checks import check_run
from .config_errors import parse_dataset_config, parse_train_args
from .config_schema import DatasetConfig, Family, TrainArgs, get_family
from .presets import PresetStack
from .sample_tags import CaptionStats, caption_stats, describe_fill, fill_prompt

# sd-scripts' IMAGE_EXTENSIONS (without the optional avif/jxl plugins)
IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".webp", ".bmp")
CONCEPT_DIR = re.compile(r"^(\d+)_(.+)$")
RUN_FILE = "run.json"
VALIDATION_MODES = ("auto", "heldout", "split", "off")
# Keys that point into the run folder; `trainer config` owns them.
MANAGED_KEYS = ("pretrained_model_name_or_path", "dataset_config", "output_dir", "logging_dir", "sample_prompts")


# --------------------------------------------------------------------------- dataset folder


@dataclass
class Concept:
    image_dir: Path
    repeats: int
    name: str
    images: int


@dataclass
class DatasetInfo:
    root: Path
    concepts: list[Concept]
    val_dir: Path | None
    val_images: int
    trigger: str
    prep: dict[str, Any] = field(default_factory=dict)


def list_images(folder: Path) -> list[Path]:
    if not folder.is_dir():
        return []
    return sorted(p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS)


def _read_prep(root: Path) -> dict[str, Any]:
    """prep.json is optional and read defensively: a broken one is ignored, not fatal."""
    path = root / "prep.json"
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def _prep_text(prep: dict[str, Any], section: str, key: str) -> str | None:
    table = prep.get(section)
    value = table.get(key) if isinstance(table, dict) else None
    return value.strip() if isinstance(value, str) and value.strip() else None


def _prep_trigger(prep: dict[str, Any]) -> str | None:
    """prep writes dataset.trigger; older or hand-made files may only have options.trigger/name."""
    return (
        _prep_text(prep, "dataset", "trigger")
        or _prep_text(prep, "options", "trigger")
        or _prep_text(prep, "options", "name")
    )


def prep_resolution(info: DatasetInfo) -> int | None:
    for section, key in (("dataset", "resolution"), ("options", "size")):
        table = info.prep.get(section)
        value = table.get(key) if isinstance(table, dict) else None
        if isinstance(value, int) and not isinstance(value, bool):
            return value
    return None


def inspect_dataset(dataset_dir: Path) -> DatasetInfo:
    root = dataset_dir.resolve()
    if not root.is_dir():
        raise UserInputError(f"Dataset folder {dataset_dir} does not exist; run `python -m trainer prep` first.")
    image_root = root / "img" if (root / "img").is_dir() else root
    concepts = []
    for folder in sorted(p for p in image_root.iterdir() if p.is_dir()):
        match = CONCEPT_DIR.match(folder.name)
        if not match:
            continue
        images = len(list_images(folder))
        if images and int(match.group(1)) >= 1:
            concepts.append(Concept(folder, int(match.group(1)), match.group(2), images))
    if not concepts:
        raise UserInputError(
            f"No image folder named like '10_name' with images in {image_root}; prepare the dataset with `python -m "
            "trainer prep`."
        )
    prep = _read_prep(root)
    trigger = _prep_trigger(prep) or concepts[0].name
    val_dir = root / "val"
    val_images = len(list_images(val_dir))
    return DatasetInfo(root, concepts, val_dir if val_images else None, val_images, trigger.strip(), prep)


def read_caption(image: Path, extension: str = ".txt") -> str | None:
    path = image.with_suffix(extension)
    try:
        return " ".join(path.read_text(encoding="utf-8").split())
    except (OSError, UnicodeDecodeError):
        return None


# --------------------------------------------------------------------------- model


def resolve_model(model: str, family: Family) -> str:
    """A local checkpoint becomes an absolute path (checked against the family); a Hugging Face
    repo id (`org/name`) is passed through, as sd-scripts downloads those itself."""
    path = Path(model).expanduser()
    if path.exists():
        detected = checkpoint_family(path)
        if detected and detected != family.name:
            names = {"sd15": "SD1.5", "sdxl": "SDXL", "sd2": "SD2"}
            raise SpecError(
                f"{path.name} looks like an {names[detected]} checkpoint but the preset trains {names[family.name]}; "
                + (
                    f"use a {detected}-* preset or another checkpoint."
                    if detected != "sd2"
                    else "no preset trains SD2 LoRAs yet, so pick an SD1.5 or SDXL checkpoint."
                )
            )
        return str(path.resolve())
    if is_hub_id(model):
        return model
    raise ModelNotFoundError(
        f"Checkpoint {model} does not exist; give the path of a .safetensors/.ckpt file or a diffusers folder."
    )


def is_hub_id(model: str) -> bool:
    """`org/name` without a file extension: a Hugging Face repo id sd-scripts downloads itself."""
    file_like = Path(model).suffix.lower() in (".safetensors", ".ckpt", ".pt", ".pth", ".bin")
    return bool(re.match(r"^[\w.\-]+/[\w.\-]+$", model)) and not file_like and not Path(model).exists()


# --------------------------------------------------------------------------- samples


class SamplesSpec(BaseModel):
    """[samples] of a preset: prompts drawn after every epoch with fixed seeds, so that the
    same cell of the epoch x prompt grid differs only by what the LoRA learned."""

    class Config:
        extra = Extra.forbid

    prompts: list[str] = Field(default_factory=lambda: ["{trigger}"], min_items=1)
    negative: str = ""
    width: int | None = Field(default=None, ge=64, le=4096)
    height: int | None = Field(default=None, ge=64, le=4096)
    steps: int = Field(default=28, ge=1, le=150)
    cfg: float = Field(default=7.0, ge=1, le=30)
    seed: int = Field(default=1234, ge=0)
    sampler: str | None = None
    heldout: int = Field(
        default=2, ge=0, le=16, description="Prompts taken from held-out captions (images the LoRA never saw)."
    )


class InstallSpec(BaseModel):
    class Config:
        extra = Extra.forbid

    preferred_weight: float = Field(default=0.8, ge=0, le=2)


@dataclass
class SamplePrompt:
    prompt: str
    negative: str
    width: int
    height: int
    seed: int
    steps: int
    cfg: float
    sampler: str | None = None
    source: str = "preset"
    note: str = ""  # where the prompt came from: the comment above its line

    def line(self) -> str:
        parts = [self.prompt]
        if self.negative:
            parts.append(f"--n {self.negative}")
        parts += [
            f"--w {self.width}",
            f"--h {self.height}",
            f"--d {self.seed}",
            f"--l {self.cfg:g}",
            f"--s {self.steps}",
        ]
        if self.sampler:
            parts.append(f"--ss {self.sampler}")
        return " ".join(parts)


def _prompt_text(text: str) -> str:
    """One line of prompt text that sd-scripts reads as prompt only (train_util.line_to_prompt_dict
    splits a line at " --"; load_prompts skips lines starting with "#"). Whitespace is normalised
    first, since a tab or newline before "--" becomes a space; then every run of dashes after a
    space is cut to one, so no " --" remains."""
    flat = " ".join(text.split())
    return re.sub(r" -{2,}", " -", flat).lstrip("#").strip()


def _with_trigger(caption: str, trigger: str) -> str:
    tags = [t.strip() for t in caption.split(",")]
    return caption if trigger in tags else f"{trigger}, {caption}" if caption else trigger


def training_caption_stats(info: DatasetInfo) -> CaptionStats:
    """Subject and frequent tags of the training captions (prep's prune suggestions count as features)."""
    captions = [
        parse_caption(text)
        for c in info.concepts
        for text in (read_caption(img) for img in list_images(c.image_dir))
        if text
    ]
    tags = info.prep.get("tags")
    suggested = tags.get("suggested_prune") if isinstance(tags, dict) else None
    features = (
        [s["tag"] for s in suggested if isinstance(s, dict) and isinstance(s.get("tag"), str)]
        if isinstance(suggested, list)
        else []
    )
    return caption_stats(captions, info.trigger, features)


def build_sample_prompts(spec: SamplesSpec, family: Family, info: DatasetInfo) -> list[SamplePrompt]:
    width = spec.width or family.default_resolution
    height = spec.height or family.default_resolution
    common = dict(
        negative=_prompt_text(spec.negative),
        width=width,
        height=height,
        steps=spec.steps,
        cfg=spec.cfg,
        sampler=spec.sampler,
    )
    stats = training_caption_stats(info)
    prompts = []
    for i, text in enumerate(spec.prompts):
        filled = describe_fill(text, stats)
        note = f"preset prompt {i + 1}: {_prompt_text(text)}" + (f"; {filled}" if filled else "")
        prompt = _prompt_text(fill_prompt(text, info.trigger, stats))
        prompts.append(SamplePrompt(prompt=prompt, seed=spec.seed + i, note=note, **common))  # type: ignore[arg-type]
    held = [(img, read_caption(img)) for img in list_images(info.val_dir)] if info.val_dir else []
    for i, (image, caption) in enumerate([(img, c) for img, c in held if c][: spec.heldout]):
        prompts.append(
            SamplePrompt(
                prompt=_prompt_text(_with_trigger(caption or "", info.trigger)),
                seed=spec.seed + len(spec.prompts) + i,
                source="heldout",
                note=f"held-out caption of val/{image.name}: a pose or outfit the LoRA never saw in training",
                **common,  # type: ignore[arg-type]
            )
        )
    return prompts


def sample_prompts_text(prompts: Sequence[SamplePrompt], trigger: str) -> str:
    lines = [
        "# Sample prompts drawn by sd-scripts after each epoch (one per line; options after ' --').",
        f"# Fixed seeds (--d) keep each grid cell comparable across epochs. Trigger word: {trigger}",
        "# Edit freely; lines starting with '#' are ignored. Keep the order if a report already exists.",
    ]
    for prompt in [p for p in prompts if p.source == "preset"] + [p for p in prompts if p.source == "heldout"]:
        if prompt.note:
            lines.append("# " + " ".join(prompt.note.split()))  # one comment line, never a prompt line
        lines.append(prompt.line())
    return "\n".join(lines) + "\n"


def parse_prompt_line(line: str) -> dict[str, Any]:
    """What sd-scripts reads from one prompt line (train_util.line_to_prompt_dict)."""
    parts = line.split(" --")
    result: dict[str, Any] = {"prompt": parts[0].strip()}
    patterns = {
        "w": ("width", int), "h": ("height", int), "d": ("seed", int), "s": ("steps", int),
        "l": ("scale", float), "n": ("negative", str), "ss": ("sampler", str),
    }  # fmt: skip
    for part in parts[1:]:
        match = re.match(r"^(ss|[whdsln]) (.+)$", part.strip(), re.IGNORECASE)
        if match and match.group(1).lower() in patterns:
            name, kind = patterns[match.group(1).lower()]
            try:
                result[name] = kind(match.group(2).strip())
            except ValueError:
                pass
    return result


def read_sample_prompts(path: Path) -> list[dict[str, Any]]:
    """Prompt lines in the order sd-scripts numbers them (the _NN_ in sample file names); lines
    after our "held-out captions" comment are marked source = "heldout"."""
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except OSError:
        return []
    prompts, source = [], "preset"
    for line in lines:
        if line.startswith("#"):
            source = "heldout" if "held-out" in line else "preset" if "preset prompt" in line else source
        elif line.strip():
            prompts.append({**parse_prompt_line(line.strip()), "source": source})
    return prompts


# --------------------------------------------------------------------------- planning


@dataclass
class RunPlan:
    family: Family
    dataset: DatasetConfig
    train: TrainArgs
    prompts: list[SamplePrompt]
    info: DatasetInfo
    presets: list[str]
    validation: str
    preferred_weight: float
    warnings: list[str]


def _validated(model: Any, data: Any, what: str) -> Any:
    try:
        return model.parse_obj(data)
    except ValidationError as exc:
        raise SpecError(describe_validation_error(exc, what)) from None


def _dataset_dict(stack: PresetStack, info: DatasetInfo, validation: str, split: float, seed: int) -> dict[str, Any]:
    general = {"caption_extension": ".txt", **stack.table("dataset")}
    if "validation_split" in general:
        raise UserInputError(
            "Set validation with --validation split --validation-split F, not dataset.validation_split."
        )
    subsets = [
        {"image_dir": str(c.image_dir), "num_repeats": c.repeats, "class_tokens": info.trigger, **stack.table("subset")}
        for c in info.concepts
    ]
    datasets: list[dict[str, Any]] = [{"subsets": subsets}]
    if validation == "split":
        datasets[0].update(validation_split=float(split), validation_seed=seed)
    elif validation == "heldout":
        datasets.append(_heldout_dataset(general, stack.table("subset"), info))
    return {"general": general, "datasets": datasets}


def _heldout_dataset(general: dict[str, Any], subset: dict[str, Any], info: DatasetInfo) -> dict[str, Any]:
    """DATASET/val as validation data. sd-scripts only knows validation_split; with 1.0 its
    split_train_val() gives this dataset no training images and all of them to validation.
    Random augmentations are switched off there so the validation loss stays comparable."""
    randomness = {
        "shuffle_caption": False, "flip_aug": False, "color_aug": False, "random_crop": False,
        "caption_dropout_rate": 0.0, "caption_tag_dropout_rate": 0.0, "caption_dropout_every_n_epochs": 0,
        "token_warmup_step": 0.0,
    }  # fmt: skip
    fixed = {k: v for k, v in randomness.items() if general.get(k) or subset.get(k)}
    sub = {"image_dir": str(info.val_dir), "num_repeats": 1, "class_tokens": info.trigger, **fixed}
    return {"validation_split": 1.0, "subsets": [sub]}


def _train_dict(stack: PresetStack, run_dir: Path, model: str, info: DatasetInfo, name: str | None) -> dict[str, Any]:
    train = dict(stack.table("train"))
    for key in MANAGED_KEYS:
        if key in train:
            raise UserInputError(
                f"'{key}' is set by `trainer config` (use --model, --dataset and --out), not by a preset or --set."
            )
    output_name = (
        name or train.pop("output_name", None) or safe_name(info.trigger, sep="_", keep_dots=False, fallback="lora")
    )
    run = run_dir.resolve()
    train.update(
        pretrained_model_name_or_path=model,
        dataset_config=str(run / "dataset.toml"),
        output_dir=str(run / "output"),
        output_name=output_name,
        logging_dir=str(run / "logs"),
        sample_prompts=str(run / "sample_prompts.txt"),
    )
    train.setdefault("log_with", "tensorboard")
    train.setdefault("console_log_simple", True)  # plain log lines: rich wraps them at 80 columns in a pipe
    train.setdefault("metadata_trigger_phrase", info.trigger)
    train.setdefault("metadata_title", output_name)
    return train


def _caption_warnings(dataset: DatasetConfig, info: DatasetInfo) -> list[str]:
    keep = dataset.general.keep_tokens or 0
    if not keep or not dataset.general.shuffle_caption:
        return []
    misplaced = 0
    for concept in info.concepts:
        for image in list_images(concept.image_dir):
            caption = read_caption(image)
            if caption and caption.split(",")[0].strip() != info.trigger:
                misplaced += 1
    if not misplaced:
        return []
    return [
        f"{misplaced} captions do not start with the trigger word '{info.trigger}', so keep_tokens = {keep} keeps "
        "another tag in place."
    ]


def _size_warnings(dataset: DatasetConfig, info: DatasetInfo) -> list[str]:
    prepared = prep_resolution(info)
    res = dataset.general.resolution
    side = max(res) if isinstance(res, (list, tuple)) else res
    if prepared and side and prepared < side:
        return [
            f"the dataset was prepared at {prepared} px but training runs at {side} px, so images are upscaled; "
            f"re-run prep with --size {side}."
        ]
    return []


def _split_overlap(info: DatasetInfo, split: float) -> list[str]:
    """sd-scripts' split_train_val() rounds the training part up and the validation part
    separately: small folders get no validation image, or images in both parts."""
    warnings = []
    for c in info.concepts:
        val = round(c.images * split)
        if val == 0:
            warnings.append(
                f"a validation split of {split:g} leaves {c.image_dir.name} ({c.images} images) no validation image."
            )
        elif math.ceil(c.images * (1 - split)) + val > c.images:
            warnings.append(
                f"with {c.images} images, sd-scripts' validation split also trains on the validation images of "
                f"{c.image_dir.name}; "
                "the validation loss will look too good (a DATASET/val folder avoids this)."
            )
    return warnings


def plan_run(
    stack: PresetStack,
    dataset_dir: Path,
    model: str,
    run_dir: Path,
    validation: str = "auto",
    validation_split: float = 0.1,
    name: str | None = None,
) -> RunPlan:
    family = get_family(stack.family)
    info = inspect_dataset(dataset_dir)
    if validation not in VALIDATION_MODES:
        raise UserInputError(f"Unknown validation mode '{validation}'; use one of {', '.join(VALIDATION_MODES)}.")
    if validation == "auto":
        validation = "heldout" if info.val_dir else "off"
    if validation == "heldout" and not info.val_dir:
        raise UserInputError(f"{info.root} has no val/ folder with images; use --validation split or off.")
    if not 0 < validation_split < 1:
        raise UserInputError(f"--validation-split must be between 0 and 1, not {validation_split}.")
    model_ref = resolve_model(model, family)
    train_data = _train_dict(stack, run_dir, model_ref, info, name)
    seed = train_data.get("seed", 42) if isinstance(train_data.get("seed", 42), int) else 42
    dataset = parse_dataset_config(
        _dataset_dict(stack, info, validation, validation_split, seed), what="dataset settings"
    )
    train = parse_train_args(train_data, what="training settings")
    samples = _validated(SamplesSpec, stack.table("samples"), "[samples] settings")
    install = _validated(InstallSpec, stack.table("install"), "[install] settings")
    warnings = check_run(family, dataset, train) + _caption_warnings(dataset, info) + _size_warnings(dataset, info)
    if validation == "split":
        warnings += _split_overlap(info, validation_split)
    if validation == "off":
        warnings.append(
            "no validation loss (validation is off or DATASET/val has no images): pick the epoch from the sample grid "
            "alone."
        )
    prompts = build_sample_prompts(samples, family, info)
    return RunPlan(family, dataset, train, prompts, info, stack.names, validation, install.preferred_weight, warnings)


def header_text(plan: RunPlan, what: str) -> str:
    return (
        f"{what} written by `python -m trainer config` ({time.strftime('%Y-%m-%d %H:%M')}).\n"
        f"Presets: {', '.join(plan.presets)}; family {plan.family.name} ({plan.family.script}).\n"
        "Edit freely: `python -m trainer train` validates this file again before launching\n"
        "(sd-scripts itself would silently ignore a misspelled key here)."
    )


def write_run(plan: RunPlan, run_dir: Path, command: str, argv: Sequence[str]) -> None:
    try:
        _write_run_files(plan, run_dir, command, argv)
    except OSError as exc:
        raise OutputError(
            f"Cannot write the run folder {run_dir} ({exc.strerror or exc}); choose another --out or free disk space."
        ) from None


def _write_run_files(plan: RunPlan, run_dir: Path, command: str, argv: Sequence[str]) -> None:
    """Each file is written atomically; run.json, last, marks the folder complete."""
    run_dir.mkdir(parents=True, exist_ok=True)
    # A rewrite (--force) that fails half-way must not leave new configs under an old marker.
    (run_dir / RUN_FILE).unlink(missing_ok=True)
    dataset_header = header_text(plan, "Dataset config (--dataset_config)")
    if plan.validation == "heldout":
        dataset_header += (
            "\nThe last dataset is DATASET/val, held out for validation loss (validation_split = 1.0).\n"
            'sd-scripts gives every dataset a training copy too, so it logs "ignore subset with\n'
            "image_dir='.../val': no images found\" and an empty Dataset 1: expected, not an error."
        )
    write_dataset_config(run_dir / "dataset.toml", plan.dataset, dataset_header)
    write_train_args(run_dir / "config.toml", plan.train, header_text(plan, "Training config (--config_file)"))
    write_text(run_dir / "sample_prompts.txt", sample_prompts_text(plan.prompts, plan.info.trigger))
    write_text(run_dir / "command.txt", command + "\n")
    meta = {
        "version": 1,
        "family": plan.family.name,
        "script": plan.family.script,
        "trigger": plan.info.trigger,
        "presets": plan.presets,
        "dataset": str(plan.info.root),
        "model": plan.train.pretrained_model_name_or_path,
        "output_name": plan.train.output_name,
        "validation": plan.validation,
        "preferred_weight": plan.preferred_weight,
        "created_at": time.strftime("%Y-%m-%dT%H:%M:%S"),
        "warnings": plan.warnings,
        "argv": list(argv),
    }
    write_text(run_dir / RUN_FILE, json.dumps(meta, indent=2, ensure_ascii=False) + "\n")


def update_meta(run_dir: Path, **fields: Any) -> None:
    """Rewrite some run.json fields in place (atomically), keeping the others."""
    meta = read_meta(run_dir)
    meta.update(fields)
    write_text(run_dir / RUN_FILE, json.dumps(meta, indent=2, ensure_ascii=False) + "\n")


# --------------------------------------------------------------------------- loading


@dataclass
class Run:
    """A run folder as the launcher, report and installer see it (files re-validated)."""

    dir: Path
    meta: dict[str, Any]
    family: Family
    train: TrainArgs
    dataset: DatasetConfig
    warnings: list[str]

    @property
    def output_dir(self) -> Path:
        return Path(self.train.output_dir)

    @property
    def output_name(self) -> str:
        return self.train.output_name

    @property
    def logging_dir(self) -> Path | None:
        return Path(self.train.logging_dir) if self.train.logging_dir else None

    @property
    def trigger(self) -> str:
        return str(self.meta.get("trigger") or self.output_name)

    @property
    def sample_prompts_path(self) -> Path | None:
        return Path(self.train.sample_prompts) if self.train.sample_prompts else None

    @property
    def validation_only_dirs(self) -> list[Path]:
        """image_dirs of datasets held out whole for validation (validation_split = 1.0)."""
        return [Path(sub.image_dir) for ds in self.dataset.datasets if ds.validation_split == 1.0 for sub in ds.subsets]

    @property
    def uses_validation(self) -> bool:
        return any((ds.validation_split or 0) > 0 for ds in self.dataset.datasets) or bool(
            self.dataset.general.validation_split
        )


def _run_folder_problem(run_dir: Path, exc: OSError) -> str:
    """One sentence for a run folder whose run.json cannot be opened. str(OSError) is Python's
    "[Errno 20] Not a directory: '...'", so say what the path is instead (os.path checks, unlike
    Path.exists, never raise)."""
    path = run_dir / RUN_FILE
    create = "create one with `python -m trainer config`"
    if isinstance(exc, (FileNotFoundError, NotADirectoryError)):
        if os.path.isdir(run_dir):
            return f"{run_dir} is not a training run folder (no {RUN_FILE}); {create}."
        if os.path.lexists(run_dir):
            return f"{run_dir} is a file, not a training run folder; give the folder holding {RUN_FILE}, or {create}."
        return f"{run_dir} does not exist; give a training run folder (the one holding {RUN_FILE}), or {create}."
    if isinstance(exc, PermissionError):
        return f"Cannot read {path} (permission denied); give a training run folder you can read."
    if isinstance(exc, IsADirectoryError):
        return f"{path} is a folder, not a run file; re-create the run with `python -m trainer config`."
    reason = exc.strerror or type(exc).__name__
    return f"Cannot read {path}: {reason}; re-create the run with `python -m trainer config`."


def read_meta(run_dir: Path) -> dict[str, Any]:
    path = run_dir / RUN_FILE
    try:
        meta = json.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise JobStateError(_run_folder_problem(run_dir, exc)) from None
    except ValueError as exc:
        raise JobStateError(f"Cannot read {path}: {exc}; re-create the run with `python -m trainer config`.") from None
    if not isinstance(meta, dict):
        raise JobStateError(f"{path} is damaged; re-create the run with `python -m trainer config`.")
    return meta


def load_run(run_dir: Path) -> Run:
    run_dir = run_dir.resolve()
    meta = read_meta(run_dir)
    family = get_family(str(meta.get("family", "")))
    train = load_train_args(run_dir / "config.toml")
    dataset_path = Path(train.dataset_config)
    if not dataset_path.is_absolute():
        dataset_path = run_dir / dataset_path
    dataset = load_dataset_config(dataset_path)
    warnings = check_run(family, dataset, train)
    return Run(run_dir, meta, family, train, dataset, warnings)
