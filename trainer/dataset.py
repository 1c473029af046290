"""Dataset preparation for a character or style LoRA: one reproducible command.

Sources (read-only) -> per-file measures and filters in worker processes -> near-duplicates
-> captions (existing, a tagger's files, or a WD14 ONNX tagger), trigger word, pruning ->
seeded validation split -> a kohya folder-convention dataset built in a staging folder and
swapped in whole:

    DATASET/img/<repeats>_<name>/*.png + *.txt   training images and captions
    DATASET/val/*.png + *.txt                    held-out images (validation, sample prompts)
    DATASET/prep.json                            every source file, what happened to it, why
    DATASET/tag_frequency.csv                    tag counts, suggestions, pruned tags
    DATASET/sheets/kept_NN.png, dropped_NN.png   contact sheets

The same options always give the same files (no timestamps, seeded split, stable order).
"""

from __future__ import annotations

import contextlib
import json
import multiprocessing
import os
import random
import re
import shutil
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any, Callable, Dict, Iterator, List, Literal, Optional, Sequence, Tuple

from PIL import Image, ImageColor

from vidstyle.compat import BaseModel, Extra, Field, ValidationError, describe_validation_error, root_validator, validator
from vidstyle.errors import OutputError, UserInputError

from . import captions as cap
from . import faces as face_detection
from .dedupe import choose_keepers, near_duplicate_pairs
from .outdir import MANIFEST, check_output_folder, make_staging, replace_folder
from .prep_report import (
    MANIFEST_VERSION,
    TARGET_STEPS_PER_EPOCH,
    Entry,
    build_manifest,
    ignored_record,
    load_prep_manifest,
    write_contact_sheets,
)
from .sources import SourceFile, excluded_by, read_pattern_file, scan_sources
from .worker import FileJob, FileResult, WorkSettings, init_worker, process_file

__all__ = [
    "PrepOptions",
    "PrepResult",
    "ProgressFn",
    "build_options",
    "prepare",
    "load_prep_manifest",
    "auto_repeats",
    "validation_count",
    "MANIFEST_VERSION",
]

ProgressFn = Callable[[str, int, int], None]
MIN_IMAGES_FOR_VALIDATION = 5
TAGGER_BATCH = 8
_UNSAFE_NAME = re.compile(r'[\\/:*?"<>|\x00-\x1f]')


class PrepOptions(BaseModel):
    """Everything that decides the dataset; defaults and bounds are declared once, here."""

    class Config:
        extra = Extra.forbid

    sources: List[str] = Field(..., min_items=1, description="Folders (searched recursively) or image files to read; never modified.")
    out: str = Field(..., min_length=1, description="Dataset folder to create; a re-run replaces it as a whole.")
    name: str = Field(..., min_length=1, max_length=80, description="Dataset name: the kohya folder becomes img/<repeats>_<name>.")
    trigger: Optional[str] = Field(None, max_length=80, description="Trigger word put first in every caption (default: the name).")
    repeats: Optional[int] = Field(
        None, ge=1, le=1000, description="kohya repeats per image (default: about 300 / training images, 1-100)."
    )
    size: int = Field(512, ge=64, le=4096, multiple_of=8, description="Training resolution in pixels (512 for SD1.5, 1024 for SDXL).")
    crop: Literal["bucket", "focal", "center"] = Field(
        "bucket",
        description="bucket: keep the aspect ratio, only downscale to size*size pixels (for kohya's enable_bucket; "
        "recommended); focal: square crop around faces/detail; center: square centre crop.",
    )
    allow_upscale: bool = Field(False, description="Let focal/center crops upscale images smaller than the size (counted in the report).")
    background: str = Field("white", description="Colour transparent pixels are flattened on (name or #RRGGBB).")
    min_side: Optional[int] = Field(
        None, ge=0, le=65536, description="Drop images whose shortest side is below this (default: half the size; 0: off)."
    )
    dedupe: bool = Field(True, description="Drop near-duplicates (perceptual hash), keeping the larger, then sharper one.")
    dedupe_threshold: int = Field(8, ge=0, le=32, description="Max differing pHash bits (of 64) for two images to be duplicates.")
    drop_monochrome: bool = Field(True, description="Drop greyscale and single-tint (sepia) images.")
    blur_threshold: float = Field(
        40.0, ge=0, description="Drop images whose Laplacian variance at training scale is below this (0: off)."
    )
    face_filter: bool = Field(True, description="Drop images with more than max_faces faces (needs a face detector).")
    max_faces: int = Field(1, ge=0, le=100, description="Most faces an image may show.")
    face_detector: str = Field(
        "auto",
        description="'auto' (OpenCV's bundled frontal-face cascade), 'none', a cascade .xml "
        "(e.g. lbpcascade_animeface.xml for drawn faces) or a YuNet .onnx face detector.",
    )
    exclude: List[str] = Field(default_factory=list, description="File names or patterns to leave out (matched on name or relative path).")
    exclude_file: Optional[str] = Field(None, description="A text file of names/patterns to leave out, one per line.")
    caption_source: Literal["existing", "tags", "wd14", "none"] = Field(
        "existing",
        description="existing: caption files beside the images; tags: a tagger's output folder; "
        "wd14: run a WD14 ONNX tagger; none: trigger word only.",
    )
    caption_ext: str = Field(".txt", description="Extension of existing caption / tag files.")
    tags_dir: Optional[str] = Field(None, description="Folder with a tagger's output files (same names as the images).")
    tagger_model: Optional[str] = Field(None, description="WD14 tagger model.onnx (selected_tags.csv beside it); nothing is downloaded.")
    tagger_threshold: float = Field(0.35, gt=0, lt=1, description="WD14 general-tag threshold.")
    tagger_character_threshold: float = Field(0.85, gt=0, lt=1, description="WD14 character-tag threshold.")
    underscores_to_spaces: bool = Field(True, description="Write 'long hair', not 'long_hair' (kaomoji such as ^_^ stay).")
    prune: List[str] = Field(default_factory=list, description="Tags to delete from every caption (patterns like '* eyes' allowed).")
    prune_file: Optional[str] = Field(None, description="A text file of tags to delete (one per line or comma-separated).")
    keep_tags: List[str] = Field(default_factory=list, description="Tags never suggested or pruned.")
    suggest_threshold: float = Field(
        0.5, gt=0, le=1, description="Suggest pruning tags present in at least this fraction of the images."
    )
    prune_suggested: bool = Field(False, description="Also delete the suggested tags (the character's own features).")
    val_fraction: float = Field(0.1, ge=0, le=0.5, description="Fraction of kept images held out for validation.")
    val_count: Optional[int] = Field(None, ge=0, description="Number of images held out (overrides the fraction).")
    seed: int = Field(0, ge=0, le=2**32 - 1, description="Seed of the validation split.")
    max_pixels: int = Field(
        8192 * 8192, ge=1, le=2**31, description="Refuse images above this many pixels (decompression-bomb guard)."
    )
    workers: Optional[int] = Field(None, ge=1, le=64, description="Worker processes (default: one per CPU core).")
    contact_sheets: bool = Field(True, description="Write contact sheets of kept and dropped images.")

    @validator("name")
    def _safe_name(cls, value: str) -> str:
        value = value.strip()
        if not value or value.startswith(".") or _UNSAFE_NAME.search(value):
            raise ValueError("use letters, digits, spaces, '-' or '_' (it becomes a folder name)")
        return value

    @validator("trigger")
    def _one_tag(cls, value: Optional[str]) -> Optional[str]:
        if value is None:
            return None
        value = " ".join(value.split())
        if not value or "," in value:
            raise ValueError("the trigger word must be one tag, without commas")
        return value

    @validator("background")
    def _colour(cls, value: str) -> str:
        try:
            ImageColor.getrgb(value)
        except ValueError as exc:
            raise ValueError(f"'{value}' is not a colour; use a name like white or #RRGGBB") from exc
        return value

    @validator("caption_ext")
    def _extension(cls, value: str) -> str:
        value = value.strip()
        return value if value.startswith(".") else "." + value

    @root_validator(skip_on_failure=True)
    def _caption_inputs(cls, values: Dict[str, Any]) -> Dict[str, Any]:
        source = values.get("caption_source")
        if source == "tags" and not values.get("tags_dir"):
            raise ValueError("caption_source 'tags' needs tags_dir (--tags-dir, the tagger's output folder)")
        if source == "wd14" and not values.get("tagger_model"):
            raise ValueError("caption_source 'wd14' needs tagger_model (--tagger-model, a WD14 model.onnx)")
        if values.get("tagger_model") and source != "wd14":
            raise ValueError("tagger_model is only used with caption_source 'wd14' (--captions wd14)")
        return values

    @property
    def trigger_word(self) -> str:
        return self.trigger or self.name

    @property
    def min_side_px(self) -> int:
        return self.size // 2 if self.min_side is None else self.min_side

    @property
    def background_rgb(self) -> Tuple[int, int, int]:
        rgb = ImageColor.getrgb(self.background)
        return (rgb[0], rgb[1], rgb[2])


def build_options(**values: Any) -> PrepOptions:
    """PrepOptions from keyword values; a bad value becomes one UserInputError sentence."""
    try:
        return PrepOptions(**values)
    except ValidationError as err:
        raise UserInputError(describe_validation_error(err, "prep options")) from err


@dataclass
class PrepResult:
    out: Path
    manifest: Dict[str, Any]
    timings: Dict[str, float]

    @property
    def counts(self) -> Dict[str, Any]:
        return self.manifest["counts"]

    @property
    def train_dir(self) -> Path:
        return self.out / self.manifest["dataset"]["train_dir"]

    @property
    def val_dir(self) -> Path:
        return self.out / self.manifest["dataset"]["val_dir"]


def _emit(progress: Optional[ProgressFn], stage: str, done: int, total: int) -> None:
    if progress is not None:
        progress(stage, done, total)


# ---------------------------------------------------------------------------- the pipeline


class _Stopwatch:
    """Seconds per stage, for the benchmark and the CLI (never written into prep.json)."""

    def __init__(self) -> None:
        self.started = time.perf_counter()
        self.seconds: Dict[str, float] = {}

    @contextlib.contextmanager
    def __call__(self, stage: str) -> Iterator[None]:
        t0 = time.perf_counter()
        try:
            yield
        finally:
            self.seconds[stage] = self.seconds.get(stage, 0.0) + time.perf_counter() - t0

    def total(self) -> Dict[str, float]:
        return {**self.seconds, "total": time.perf_counter() - self.started}


def prepare(options: PrepOptions, progress: Optional[ProgressFn] = None) -> PrepResult:
    """Build the dataset described by `options`; see the module docstring for the layout.

    Raises UserInputError/OutputError (one sentence) for bad inputs or an output folder that
    holds other data. Source files are only read.
    """
    clock = _Stopwatch()
    with clock("setup"):
        out = Path(options.out).expanduser().resolve()
        roots = [Path(s).expanduser().resolve() for s in options.sources]
        check_output_folder(out, roots)
        settings = _work_settings(options)
        tagger = _load_tagger(options)
        entries, others, notes = _collect(options, roots, out, settings)
    staging = make_staging(out)
    try:
        try:
            manifest = _build(staging, entries, others, notes, options, settings, tagger, progress, clock)
        except OSError as exc:
            raise OutputError(
                f"Cannot write the new dataset next to {out} ({exc.strerror or exc}); free disk space or choose another --out."
            ) from exc
        with clock("swap"):
            check_output_folder(out, roots)  # still ours? (someone may have written into it meanwhile)
            replace_folder(staging, out)
    finally:
        if staging.exists():
            shutil.rmtree(staging, ignore_errors=True)
    if manifest["counts"]["kept"] == 0:
        sheet = " (see sheets/dropped_01.png)" if options.contact_sheets else ""
        raise UserInputError(f"No image passed the filters; {out / MANIFEST} lists why each was dropped{sheet}.")
    return PrepResult(out=out, manifest=manifest, timings=clock.total())


def _read_list(path: Optional[str], reader: Callable[[Path], List[str]], what: str) -> List[str]:
    if not path:
        return []
    try:
        return reader(Path(path).expanduser())
    except OSError as exc:
        raise UserInputError(f"Cannot read the {what} {path} ({exc.strerror}); check the path.") from exc


def _collect(
    options: PrepOptions, roots: List[Path], out: Path, settings: WorkSettings
) -> Tuple[List[Entry], List[SourceFile], List[str]]:
    """Source images as entries (exclusions already marked), other files, notes for the report."""
    patterns = list(options.exclude) + _read_list(options.exclude_file, read_pattern_file, "exclude list")
    images, others = scan_sources(roots, skip=[out], caption_ext=options.caption_ext)
    if not images:
        raise UserInputError(
            f"No png/jpg/jpeg/webp/bmp images found in {', '.join(map(str, roots))}; point prep at the folders with your images."
        )
    notes = _empty_source_notes(roots, images)
    if settings.face_detector is None and options.face_filter:
        notes.append("No face detector is available, so the too-many-faces filter was skipped.")
    entries = [Entry(source=item) for item in images]
    for entry in entries:
        pattern = excluded_by(entry.source, patterns)
        if pattern is not None:
            entry.reasons.append(("excluded", f"excluded by pattern '{pattern}'"))
    return entries, others, notes


def _build(
    staging: Path,
    entries: List[Entry],
    others: List[SourceFile],
    notes: List[str],
    options: PrepOptions,
    settings: WorkSettings,
    tagger: Any,
    progress: Optional[ProgressFn],
    clock: _Stopwatch,
) -> Dict[str, Any]:
    """Everything between scanning and the swap; returns prep.json's content (also written)."""
    work = staging / "_work"
    work.mkdir()
    with clock("analyse"):
        jobs = [FileJob(i, str(e.source.path), None if e.reasons else str(work / f"{i:06d}.png")) for i, e in enumerate(entries)]
        for entry, result in zip(entries, _run_jobs(jobs, settings, options.workers, progress)):
            _record_result(entry, result)
    with clock("dedupe"):
        _drop_duplicates(entries, options)
    kept = [e for e in entries if not e.reasons]
    for entry in entries:
        entry.status = "dropped" if entry.reasons else entry.status
    with clock("captions"):
        _name_outputs(kept)
        _read_captions(kept, options, tagger, work, progress, notes)
        prune_entries = list(options.prune) + _read_list(options.prune_file, cap.read_list_file, "prune list")
        tag_report = _finish_captions(kept, options, prune_entries)
    with clock("write"):
        val_names = _choose_validation(kept, options, notes)
        repeats, repeats_auto = _repeats(options, len(kept) - len(val_names))
        train_dir = f"img/{repeats}_{options.name}"
        outputs = _place_outputs(kept, val_names, staging, work, train_dir)
        shutil.rmtree(work)
        (staging / "tag_frequency.csv").write_text(tag_report["csv"], encoding="utf-8")
        outputs.append("tag_frequency.csv")
    with clock("sheets"):
        if options.contact_sheets:
            outputs.extend(write_contact_sheets(entries, staging, options))
    ignored = [ignored_record(item) for item in others]
    manifest = build_manifest(options, entries, ignored, tag_report, train_dir, repeats, repeats_auto, notes, sorted(outputs))
    (staging / MANIFEST).write_text(json.dumps(manifest, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    return manifest


def _work_settings(options: PrepOptions) -> WorkSettings:
    detector = None
    if options.face_filter or options.crop == "focal":
        detector = face_detection.resolve_spec(options.face_detector)
        if detector is not None:
            face_detection.load_detector(detector)  # a bad model fails here, before any work
    return WorkSettings(
        size=options.size,
        crop=options.crop,
        allow_upscale=options.allow_upscale,
        background=options.background_rgb,
        max_pixels=options.max_pixels,
        min_side=options.min_side_px,
        drop_monochrome=options.drop_monochrome,
        blur_threshold=options.blur_threshold,
        max_faces=options.max_faces if options.face_filter else None,
        face_detector=detector,
    )


def _load_tagger(options: PrepOptions):  # type: ignore[no-untyped-def]
    if options.caption_source != "wd14":
        return None
    from .tagger import WD14Tagger

    return WD14Tagger(options.tagger_model or "", options.tagger_threshold, options.tagger_character_threshold)


def _empty_source_notes(roots: Sequence[Path], images: Sequence[SourceFile]) -> List[str]:
    used = {item.root for item in images}
    return [f"{root} holds no supported images." for root in roots if root not in used]


def _run_jobs(
    jobs: Sequence[FileJob], settings: WorkSettings, workers: Optional[int], progress: Optional[ProgressFn]
) -> List[FileResult]:
    """Process every file, in worker processes when there are several cores and files."""
    count = workers or os.cpu_count() or 1
    task = partial(process_file, settings=settings)
    results: List[FileResult] = []
    if count <= 1 or len(jobs) < 4:
        for n, job in enumerate(jobs, 1):
            results.append(task(job))
            _emit(progress, "analyse", n, len(jobs))
        return results
    # spawn: the same behaviour on Linux, macOS and Windows, and safe inside a threaded host
    # process (the WebUI) where fork could copy a held lock.
    context = multiprocessing.get_context("spawn")
    chunk = max(1, min(16, len(jobs) // (count * 8)))
    pool = ProcessPoolExecutor(max_workers=min(count, len(jobs)), mp_context=context, initializer=init_worker)
    try:
        for n, result in enumerate(pool.map(task, jobs, chunksize=chunk), 1):
            results.append(result)
            _emit(progress, "analyse", n, len(jobs))
    except BaseException:
        # Ctrl-C or an error: do not wait for thousands of queued files.
        pool.shutdown(wait=False, cancel_futures=True)
        raise
    pool.shutdown()
    return results


def _record_result(entry: Entry, result: FileResult) -> None:
    entry.result = result
    if result.rejected is not None:
        entry.reasons.append(result.rejected)
    entry.reasons.extend(result.reasons)


def _drop_duplicates(entries: List[Entry], options: PrepOptions) -> None:
    if not options.dedupe:
        return
    candidates = [e for e in entries if not e.reasons and e.result is not None and e.result.phash is not None]
    pairs = near_duplicate_pairs(
        [e.result.phash for e in candidates],  # type: ignore[union-attr]
        options.dedupe_threshold,
        mirrored=[e.result.phash_mirror for e in candidates],  # type: ignore[union-attr]
    )
    rank = [
        (float(e.result.header.width * e.result.header.height), float(e.result.sharpness or 0.0))  # type: ignore[union-attr]
        for e in candidates
    ]
    for dropped, (keeper, distance) in choose_keepers(len(candidates), pairs, rank).items():
        entry, kept = candidates[dropped], candidates[keeper]
        entry.duplicate_of = kept.result.index  # type: ignore[union-attr]
        entry.duplicate_distance = distance
        entry.reasons.append(
            (
                "duplicate",
                f"near-duplicate of {kept.source.relative} (pHash distance {distance} <= {options.dedupe_threshold}); "
                "kept the larger/sharper one",
            )
        )


def _safe_stem(stem: str) -> str:
    return re.sub(r"[^\w.-]+", "_", stem).strip("._")[:60] or "image"


def _name_outputs(kept: Sequence[Entry]) -> None:
    """`<stem>_<sha8>`: traceable to the source, stable across runs, unique."""
    used: Dict[str, int] = {}
    for entry in kept:
        assert entry.result is not None and entry.result.sha256 is not None
        base = f"{_safe_stem(Path(entry.source.relative).stem)}_{entry.result.sha256[:8]}"
        used[base] = used.get(base, 0) + 1
        entry.name = base if used[base] == 1 else f"{base}_{used[base]}"


def _read_captions(
    kept: Sequence[Entry], options: PrepOptions, tagger: Any, work: Path, progress: Optional[ProgressFn], notes: List[str]
) -> None:
    """Raw tags per kept image from the chosen caption source."""
    underscores = options.underscores_to_spaces
    if options.caption_source == "wd14":
        _run_tagger(kept, tagger, work, progress, underscores)
        return
    for entry in kept:
        path = None
        if options.caption_source == "existing":
            path = cap.caption_beside(entry.source.path, options.caption_ext)
        elif options.caption_source == "tags":
            path = cap.caption_in_dir(Path(options.tags_dir or ""), Path(entry.source.relative), options.caption_ext)
        if path is None:
            continue
        try:
            entry.tags = cap.parse_caption(cap.read_caption_file(path), underscores)
            entry.caption_from = str(path)
        except OSError as exc:
            notes.append(f"Caption file {path} could not be read ({exc.strerror}); that image has the trigger word only.")


def _run_tagger(kept: Sequence[Entry], tagger: Any, work: Path, progress: Optional[ProgressFn], underscores: bool) -> None:
    import numpy as np

    for start in range(0, len(kept), TAGGER_BATCH):
        batch = kept[start : start + TAGGER_BATCH]
        pixels = []
        for entry in batch:
            with Image.open(work / f"{entry.result.index:06d}.png") as image:  # type: ignore[union-attr]
                pixels.append(np.asarray(image.convert("RGB")))
        for entry, tags in zip(batch, tagger.tag(pixels)):
            entry.tags = cap.normalise_tags(tags, underscores)
            entry.caption_from = "wd14 tagger"
        _emit(progress, "tag", min(start + TAGGER_BATCH, len(kept)), len(kept))


def _finish_captions(kept: Sequence[Entry], options: PrepOptions, prune_entries: Sequence[str]) -> Dict[str, Any]:
    """Trigger first, suggestions from tag frequency, pruning; returns the tag report."""
    trigger = options.trigger_word
    for entry in kept:
        entry.tags = [t for t in entry.tags if t.casefold() != trigger.casefold()]
    frequencies = cap.tag_frequencies([e.tags for e in kept])
    suggestions = cap.suggest_prune(frequencies, len(kept), options.suggest_threshold, protected=options.keep_tags)
    entries = list(prune_entries) + ([s.tag for s in suggestions] if options.prune_suggested else [])
    pruner = cap.Pruner(entries, protected=options.keep_tags, underscores_to_spaces=options.underscores_to_spaces)
    pruned: set = set()
    for entry in kept:
        remaining, removed = cap.prune(entry.tags, pruner)
        entry.removed_tags = removed
        pruned.update(removed)
        entry.tags = cap.with_trigger(remaining, trigger)
        entry.caption = cap.format_caption(entry.tags)
    suggested = {s.tag for s in suggestions}
    return {
        "suggestions": suggestions,
        "pruned": sorted(pruned, key=lambda t: (-frequencies[t], t)),
        "frequencies": frequencies,
        "csv": cap.frequency_table_csv(frequencies, len(kept), suggested, pruned),
    }


def validation_count(kept: int, fraction: float, count: Optional[int]) -> int:
    """How many images to hold out; never all of them, none for tiny sets."""
    if kept < 2:
        return 0
    if count is not None:
        if count >= kept:
            raise UserInputError(f"--val-count {count} would leave no training images (only {kept} kept); use a smaller count.")
        return count
    if fraction <= 0 or kept < MIN_IMAGES_FOR_VALIDATION:
        return 0
    return min(kept - 1, max(1, round(kept * fraction)))


def _choose_validation(kept: Sequence[Entry], options: PrepOptions, notes: List[str]) -> set:
    wanted = validation_count(len(kept), options.val_fraction, options.val_count)
    if wanted == 0 and options.val_fraction > 0 and options.val_count is None and kept:
        notes.append(f"Only {len(kept)} images kept: no validation set held out (needs {MIN_IMAGES_FOR_VALIDATION}).")
    names = sorted(e.name for e in kept if e.name)
    return set(random.Random(options.seed).sample(names, wanted))


def auto_repeats(train_images: int) -> int:
    """repeats so that images x repeats is about 300 per epoch, clamped to 1-100."""
    if train_images <= 0:
        return 1
    return int(min(100, max(1, round(TARGET_STEPS_PER_EPOCH / train_images))))


def _repeats(options: PrepOptions, train_images: int) -> Tuple[int, bool]:
    if options.repeats is not None:
        return options.repeats, False
    return auto_repeats(train_images), True


def _place_outputs(kept: Sequence[Entry], val_names: set, staging: Path, work: Path, train_dir: str) -> List[str]:
    """Move each kept image from the work folder to train or val and write its caption."""
    outputs: List[str] = []
    for entry in sorted(kept, key=lambda e: e.name or ""):
        entry.status = "val" if entry.name in val_names else "train"
        folder = "val" if entry.status == "val" else train_dir
        (staging / folder).mkdir(parents=True, exist_ok=True)
        image_rel = f"{folder}/{entry.name}.png"
        caption_rel = f"{folder}/{entry.name}.txt"
        os.replace(work / f"{entry.result.index:06d}.png", staging / image_rel)  # type: ignore[union-attr]
        # sd-scripts reads the first line of the caption and refuses an empty file: the
        # trigger word guarantees a non-empty line.
        (staging / caption_rel).write_text((entry.caption or "") + "\n", encoding="utf-8")
        entry.output = image_rel
        outputs.extend([image_rel, caption_rel])
    return outputs
