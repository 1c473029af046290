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
Progress goes to an `EventCallback` as `vidstyle.events.ProgressEvent`s of stage "dataset".
"""

from __future__ import annotations

import contextlib
import json
import multiprocessing
import os
import random
import shutil
import time
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

from PIL import Image

from vidstyle.atomic import write_bytes
from vidstyle.errors import OutputError, UserInputError
from vidstyle.events import EventCallback, ProgressEvent, ignore_event
from vidstyle.filenames import safe_name

from . import captions as cap
from . import faces as face_detection
from .dedupe import choose_keepers, near_duplicate_pairs
from .outdir import MANIFEST, check_output_folder, make_staging, replace_folder
from .prep_options import PrepOptions
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
    "PrepResult",
    "prepare",
    "load_prep_manifest",
    "auto_repeats",
    "validation_count",
    "MANIFEST_VERSION",
]

MIN_IMAGES_FOR_VALIDATION = 5
TAGGER_BATCH = 8


@dataclass
class PrepResult:
    out: Path
    manifest: dict[str, Any]
    timings: dict[str, float]

    @property
    def counts(self) -> dict[str, Any]:
        return self.manifest["counts"]

    @property
    def train_dir(self) -> Path:
        return self.out / self.manifest["dataset"]["train_dir"]

    @property
    def val_dir(self) -> Path:
        return self.out / self.manifest["dataset"]["val_dir"]


class _Steps:
    """ProgressEvents of stage "dataset": a "stage" event when a step over the images begins (its
    message names the step), then "progress" with done/total images and an ETA from the pace so far."""

    def __init__(self, on_event: EventCallback) -> None:
        self.on_event = on_event
        self.step, self.total, self.started = "", 0, 0.0

    def begin(self, step: str, total: int) -> None:
        self.step, self.total, self.started = step, total, time.perf_counter()
        self.on_event(ProgressEvent("stage", "dataset", 0, total, message=step))

    def advance(self, done: int) -> None:
        elapsed = time.perf_counter() - self.started
        eta = elapsed / done * (self.total - done) if done else None
        self.on_event(ProgressEvent("progress", "dataset", done, self.total, eta_seconds=eta, message=self.step))


# ---------------------------------------------------------------------------- the pipeline


class _Stopwatch:
    """Seconds per stage, for the benchmark and the CLI (never written into prep.json)."""

    def __init__(self) -> None:
        self.started = time.perf_counter()
        self.seconds: dict[str, float] = {}

    @contextlib.contextmanager
    def __call__(self, stage: str) -> Iterator[None]:
        t0 = time.perf_counter()
        try:
            yield
        finally:
            self.seconds[stage] = self.seconds.get(stage, 0.0) + time.perf_counter() - t0

    def total(self) -> dict[str, float]:
        return {**self.seconds, "total": time.perf_counter() - self.started}


def prepare(options: PrepOptions, on_event: EventCallback = ignore_event, webui_auth: str | None = None) -> PrepResult:
    """Build the dataset described by `options`; see the module docstring for the layout.

    Raises UserInputError/OutputError (one sentence) for bad inputs or an output folder that
    holds other data. Source files are only read. `webui_auth` (user:password for the WebUI
    tagger, else $VIDSTYLE_WEBUI_AUTH) is kept out of `options`, which prep.json records.
    `on_event` gets ProgressEvents of stage "dataset": "stage" per step (scanning, analysing,
    tagging), "progress" per image, the report's notes as "warning", then "done" (kept/found).
    """
    on_event(ProgressEvent("stage", "dataset", message="scanning sources"))
    clock = _Stopwatch()
    with clock("setup"):
        out = Path(options.out).expanduser().resolve()
        roots = [Path(s).expanduser().resolve() for s in options.sources]
        check_output_folder(out, roots)
        settings = _work_settings(options)
        tagger = _load_tagger(options, webui_auth)
        entries, others, notes = _collect(options, roots, out, settings)
    staging = make_staging(out)
    try:
        try:
            manifest = _build(staging, entries, others, notes, options, settings, tagger, _Steps(on_event), clock)
        except OSError as exc:
            raise OutputError(
                f"Cannot write the new dataset next to {out} ({exc.strerror or exc}); free disk space or choose "
                "another --out."
            ) from exc
        with clock("swap"):
            check_output_folder(out, roots)  # still ours? (someone may have written into it meanwhile)
            replace_folder(staging, out)
    finally:
        if staging.exists():
            shutil.rmtree(staging, ignore_errors=True)
        if hasattr(tagger, "close"):
            tagger.close()
    if manifest["counts"]["kept"] == 0:
        sheet = " (see sheets/dropped_01.png)" if options.contact_sheets else ""
        raise UserInputError(f"No image passed the filters; {out / MANIFEST} lists why each was dropped{sheet}.")
    for note in manifest["notes"]:
        on_event(ProgressEvent("warning", "dataset", message=note))
    counts = manifest["counts"]
    kept = f"{counts['kept']} of {counts['found']} images kept in {out}"
    on_event(ProgressEvent("done", "dataset", counts["kept"], counts["found"], message=kept))
    return PrepResult(out=out, manifest=manifest, timings=clock.total())


def _read_list(path: str | None, reader: Callable[[Path], list[str]], what: str) -> list[str]:
    if not path:
        return []
    try:
        return reader(Path(path).expanduser())
    except OSError as exc:
        raise UserInputError(f"Cannot read the {what} {path} ({exc.strerror}); check the path.") from exc


def _collect(
    options: PrepOptions, roots: list[Path], out: Path, settings: WorkSettings
) -> tuple[list[Entry], list[SourceFile], list[str]]:
    """Source images as entries (exclusions already marked), other files, notes for the report."""
    patterns = list(options.exclude) + _read_list(options.exclude_file, read_pattern_file, "exclude list")
    images, others = scan_sources(roots, skip=[out], caption_ext=options.caption_ext)
    if not images:
        raise UserInputError(
            f"No png/jpg/jpeg/webp/bmp images found in {', '.join(map(str, roots))}; point prep at the folders with "
            "your images."
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
    entries: list[Entry],
    others: list[SourceFile],
    notes: list[str],
    options: PrepOptions,
    settings: WorkSettings,
    tagger: Any,
    steps: _Steps,
    clock: _Stopwatch,
) -> dict[str, Any]:
    """Everything between scanning and the swap; returns prep.json's content (also written)."""
    work = staging / "_work"
    work.mkdir()
    with clock("analyse"):
        jobs = [
            FileJob(i, str(e.source.path), None if e.reasons else str(work / f"{i:06d}.png"))
            for i, e in enumerate(entries)
        ]
        for entry, result in zip(entries, _run_jobs(jobs, settings, options.workers, steps), strict=False):
            _record_result(entry, result)
    with clock("dedupe"):
        _drop_duplicates(entries, options)
    kept = [e for e in entries if not e.reasons]
    for entry in entries:
        entry.status = "dropped" if entry.reasons else entry.status
    with clock("captions"):
        _name_outputs(kept)
        _read_captions(kept, options, tagger, work, steps, notes)
        prune_entries = list(options.prune) + _read_list(options.prune_file, cap.read_list_file, "prune list")
        tag_report = _finish_captions(kept, options, prune_entries)
    with clock("write"):
        val_names = _choose_validation(kept, options, notes)
        repeats, repeats_auto = _repeats(options, len(kept) - len(val_names))
        train_dir = f"img/{repeats}_{options.name}"
        outputs = _place_outputs(kept, val_names, staging, work, train_dir)
        shutil.rmtree(work)
        _write_file(staging / "tag_frequency.csv", tag_report["csv"])
        outputs.append("tag_frequency.csv")
    with clock("sheets"):
        if options.contact_sheets:
            outputs.extend(write_contact_sheets(entries, staging, options))
    ignored = [ignored_record(item) for item in others]
    manifest = build_manifest(
        options, entries, ignored, tag_report, train_dir, repeats, repeats_auto, notes, sorted(outputs)
    )
    _write_file(staging / MANIFEST, json.dumps(manifest, indent=2, ensure_ascii=False) + "\n")
    return manifest


def _write_file(path: Path, text: str, durable: bool = True) -> None:
    """Write `text` (UTF-8) through vidstyle.atomic: a stop half-way leaves no partial file.

    atomic words an OSError as an OutputError about this one file (and says "resume the job");
    the original OSError goes on instead, so prepare() still words it for the dataset as a whole."""
    try:
        write_bytes(path, text.encode("utf-8"), durable=durable)
    except OutputError as exc:
        assert isinstance(exc.__cause__, OSError)  # atomic always chains the OSError it words
        raise exc.__cause__ from None


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


def _load_tagger(options: PrepOptions, webui_auth: str | None = None) -> Any:
    if options.caption_source == "webui":
        from .webui_tagger import WebUITagger, webui_url

        tagger = WebUITagger(webui_url(options.tagger or ""), webui_auth, workers=options.tagger_workers)
        try:
            tagger.check()  # before hours of analysis: reachable, --api, login, DeepBooru
        except BaseException:
            tagger.close()
            raise
        return tagger
    if options.caption_source != "wd14":
        return None
    from .tagger import WD14Tagger

    return WD14Tagger(options.tagger_model or "", options.tagger_threshold, options.tagger_character_threshold)


def _empty_source_notes(roots: Sequence[Path], images: Sequence[SourceFile]) -> list[str]:
    used = {item.root for item in images}
    return [f"{root} holds no supported images." for root in roots if root not in used]


def _run_jobs(jobs: Sequence[FileJob], settings: WorkSettings, workers: int | None, steps: _Steps) -> list[FileResult]:
    """Process every file, in worker processes when there are several cores and files."""
    steps.begin("analysing images", len(jobs))
    count = workers or os.cpu_count() or 1
    task = partial(process_file, settings=settings)
    results: list[FileResult] = []
    if count <= 1 or len(jobs) < 4:
        for n, job in enumerate(jobs, 1):
            results.append(task(job))
            steps.advance(n)
        return results
    # spawn: the same behaviour on Linux, macOS and Windows, and safe inside a threaded host
    # process (the WebUI) where fork could copy a held lock.
    context = multiprocessing.get_context("spawn")
    chunk = max(1, min(16, len(jobs) // (count * 8)))
    pool = ProcessPoolExecutor(max_workers=min(count, len(jobs)), mp_context=context, initializer=init_worker)
    try:
        for n, result in enumerate(pool.map(task, jobs, chunksize=chunk), 1):
            results.append(result)
            steps.advance(n)
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


def _drop_duplicates(entries: list[Entry], options: PrepOptions) -> None:
    if not options.dedupe:
        return
    # Images a per-image filter dropped (blurry, low resolution, ...) take part too: a softer
    # copy of a kept picture is first of all a duplicate, and is reported as one.
    # (entry, its result, header, hash, mirrored hash): a hashed file was read, so it has them all
    hashed = [
        (e, e.result, e.result.header, e.result.phash, e.result.phash_mirror)
        for e in entries
        if e.result is not None
        and e.result.header is not None
        and e.result.phash is not None
        and e.result.phash_mirror is not None
        and not any(code == "excluded" for code, _ in e.reasons)
    ]
    candidates = [e for e, *_ in hashed]
    pairs = near_duplicate_pairs(
        [phash for *_, phash, _ in hashed], options.dedupe_threshold, mirrored=[mirror for *_, mirror in hashed]
    )
    # a copy that passes the filters beats a larger one; sharpness rounded so a mirrored copy ties
    rank = [
        (0.0 if e.reasons else 1.0, float(header.width * header.height), round(result.sharpness or 0.0, 2))
        for e, result, header, _, _ in hashed
    ]
    for dropped, (keeper, distance) in choose_keepers(len(candidates), pairs, rank).items():
        entry, (kept, kept_result, *_) = candidates[dropped], hashed[keeper]
        entry.duplicate_of = kept_result.index
        entry.duplicate_distance = distance
        entry.reasons.insert(
            0,
            (
                "duplicate",
                f"near-duplicate of {kept.source.relative} (pHash distance {distance} <= {options.dedupe_threshold}); "
                + (
                    f"that one is dropped too ({kept.reasons[0][0]})" if kept.reasons else "kept the larger/sharper one"
                ),
            ),
        )


def _safe_stem(stem: str) -> str:
    return safe_name(stem, sep="_", unicode=True, max_len=60, fallback="image")


def _name_outputs(kept: Sequence[Entry]) -> None:
    """`<stem>_<sha8>`: traceable to the source, stable across runs, unique."""
    used: dict[str, int] = {}
    for entry in kept:
        assert entry.result is not None and entry.result.sha256 is not None
        base = f"{_safe_stem(Path(entry.source.relative).stem)}_{entry.result.sha256[:8]}"
        used[base] = used.get(base, 0) + 1
        entry.name = base if used[base] == 1 else f"{base}_{used[base]}"


def _read_captions(
    kept: Sequence[Entry], options: PrepOptions, tagger: Any, work: Path, steps: _Steps, notes: list[str]
) -> None:
    """Raw tags per kept image from the chosen caption source."""
    underscores = options.underscores_to_spaces
    if options.caption_source in ("wd14", "webui"):
        _run_tagger(kept, tagger, work, steps, underscores)
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
            notes.append(
                f"Caption file {path} could not be read ({exc.strerror}); that image has the trigger word only."
            )


def _run_tagger(kept: Sequence[Entry], tagger: Any, work: Path, steps: _Steps, underscores: bool) -> None:
    import numpy as np

    steps.begin("tagging images", len(kept))
    for start in range(0, len(kept), TAGGER_BATCH):
        batch = kept[start : start + TAGGER_BATCH]
        pixels = []
        for entry in batch:
            with Image.open(work / f"{entry.result.index:06d}.png") as image:  # type: ignore[union-attr]
                pixels.append(np.asarray(image.convert("RGB")))
        for entry, tags in zip(batch, tagger.tag(pixels), strict=False):
            entry.tags = cap.normalise_tags(tags, underscores)
            entry.caption_from = getattr(tagger, "name", "wd14 tagger")
        steps.advance(min(start + TAGGER_BATCH, len(kept)))


def _finish_captions(kept: Sequence[Entry], options: PrepOptions, prune_entries: Sequence[str]) -> dict[str, Any]:
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


def validation_count(kept: int, fraction: float, count: int | None) -> int:
    """How many images to hold out; never all of them, none for tiny sets."""
    if kept < 2:
        return 0
    if count is not None:
        if count >= kept:
            raise UserInputError(
                f"--val-count {count} would leave no training images (only {kept} kept); use a smaller count."
            )
        return count
    if fraction <= 0 or kept < MIN_IMAGES_FOR_VALIDATION:
        return 0
    return min(kept - 1, max(1, round(kept * fraction)))


def _choose_validation(kept: Sequence[Entry], options: PrepOptions, notes: list[str]) -> set:
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


def _repeats(options: PrepOptions, train_images: int) -> tuple[int, bool]:
    if options.repeats is not None:
        return options.repeats, False
    return auto_repeats(train_images), True


def _place_outputs(kept: Sequence[Entry], val_names: set, staging: Path, work: Path, train_dir: str) -> list[str]:
    """Move each kept image from the work folder to train or val and write its caption."""
    outputs: list[str] = []
    for entry in sorted(kept, key=lambda e: e.name or ""):
        entry.status = "val" if entry.name in val_names else "train"
        folder = "val" if entry.status == "val" else train_dir
        (staging / folder).mkdir(parents=True, exist_ok=True)
        image_rel = f"{folder}/{entry.name}.png"
        caption_rel = f"{folder}/{entry.name}.txt"
        os.replace(work / f"{entry.result.index:06d}.png", staging / image_rel)  # type: ignore[union-attr]
        # sd-scripts reads the first line of the caption and refuses an empty file: the
        # trigger word guarantees a non-empty line.
        # Not fsynced one by one: the image beside it is not either (worker.py), and the staging
        # folder keeps both out of sight until the whole dataset is swapped in.
        _write_file(staging / caption_rel, (entry.caption or "") + "\n", durable=False)
        entry.output = image_rel
        outputs.extend([image_rel, caption_rel])
    return outputs
