"""prep's records and report: one Entry per source file, prep.json, contact sheets.

prep.json is the dataset's manifest: the options, the kohya facts other commands need
(`dataset`: train_dir, val_dir, repeats, trigger, resolution, ...), counts, tag suggestions,
and every source file with what happened to it and why. It has no timestamps, so the same
options give the same bytes.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from vidstyle.errors import UserInputError

from . import __version__
from .buckets import bucket_histogram
from .outdir import FORMAT, read_manifest
from .prep_options import PrepOptions
from .sheets import Tile, write_sheets
from .sources import SourceFile
from .worker import FileResult

MANIFEST_VERSION = 1
TARGET_STEPS_PER_EPOCH = 300  # images x repeats; sd-scripts users aim for 200-400


@dataclass
class Entry:
    """One source file and what happened to it."""

    source: SourceFile
    result: FileResult | None = None
    status: str = "candidate"  # -> train | val | dropped | ignored
    reasons: list[tuple[str, str]] = field(default_factory=list)
    duplicate_of: int | None = None
    duplicate_distance: int | None = None
    name: str | None = None
    output: str | None = None
    caption: str | None = None
    caption_from: str | None = None
    removed_tags: list[str] = field(default_factory=list)
    tags: list[str] = field(default_factory=list)


def write_contact_sheets(entries: Sequence[Entry], staging: Path, options: PrepOptions) -> list[str]:
    kept = sorted(
        (e for e in entries if e.status in ("train", "val")), key=lambda e: (e.status != "train", e.name or "")
    )
    dropped = [e for e in entries if e.status == "dropped"]
    kept_tiles = [
        Tile(
            jpeg=e.result.output_tile if e.result else None,
            lines=[f"{'VAL ' if e.status == 'val' else ''}{e.name}", ", ".join(e.tags[1:]) or "(trigger only)"],
            accent=(80, 140, 230) if e.status == "val" else (90, 170, 90),
        )
        for e in kept
    ]
    dropped_tiles = [
        Tile(
            jpeg=e.result.source_tile if e.result else None,
            lines=[e.reasons[0][1], e.source.relative],
            accent=(210, 80, 70),
        )
        for e in dropped
    ]
    folder = staging / "sheets"
    train_count = sum(1 for e in kept if e.status == "train")
    written = write_sheets(
        kept_tiles,
        f"{options.name}: kept {len(kept)} ({train_count} train, {len(kept) - train_count} val)",
        folder,
        "kept",
    )
    written += write_sheets(dropped_tiles, f"{options.name}: dropped {len(dropped)}", folder, "dropped")
    return [p.relative_to(staging).as_posix() for p in written]


def ignored_record(item: SourceFile) -> dict[str, Any]:
    return {
        "source": str(item.path),
        "relative": item.relative,
        "status": "ignored",
        "reason_code": "unsupported",
        "reason": f"not a supported image type ({item.path.suffix or 'no extension'})",
    }


def _rounded(value: float | None, digits: int = 3) -> float | None:
    return None if value is None else round(float(value), digits)


def _file_record(entry: Entry, entries: Sequence[Entry]) -> dict[str, Any]:
    record: dict[str, Any] = {
        "source": str(entry.source.path),
        "relative": entry.source.relative,
        "status": entry.status,
        "reason_code": entry.reasons[0][0] if entry.reasons else None,
        "reason": entry.reasons[0][1] if entry.reasons else None,
        "reasons": [{"code": code, "message": message} for code, message in entry.reasons],
    }
    result = entry.result
    if result is not None:
        record.update({"bytes": result.bytes, "sha256": result.sha256})
        if result.header is not None:
            record.update(
                {
                    "format": result.header.format,
                    "width": result.header.width,
                    "height": result.header.height,
                    "exif_orientation": result.header.orientation,
                    "alpha_flattened": result.had_alpha,
                }
            )
        if result.phash is not None:
            record["measures"] = {
                "phash": f"{result.phash:016x}",
                "phash_mirror": f"{result.phash_mirror:016x}",
                "sharpness": _rounded(result.sharpness, 3),
                "chroma_p99": _rounded(result.colour.chroma_p99, 2) if result.colour else None,
                "hue_spread": _rounded(result.colour.hue_spread, 2) if result.colour else None,
                "coloured_fraction": _rounded(result.colour.coloured_fraction, 3) if result.colour else None,
                "faces": None if result.faces is None else [[_rounded(v) for v in box] for box in result.faces],
                "focal": None if result.focal is None else [_rounded(v) for v in result.focal],
            }
        if result.plan is not None and entry.status in ("train", "val"):
            record["crop"] = {
                "box": list(result.plan.box),
                "output_size": list(result.plan.out_size),
                "scale": _rounded(result.plan.scale, 4),
                "upscaled": result.plan.upscaled,
            }
    if entry.duplicate_of is not None:
        record["duplicate_of"] = entries[entry.duplicate_of].source.relative
        record["duplicate_distance"] = entry.duplicate_distance
    if entry.status in ("train", "val"):
        record.update(
            {
                "output": entry.output,
                "caption": entry.caption,
                "caption_from": entry.caption_from,
                "pruned_tags": entry.removed_tags,
            }
        )
    return record


def build_manifest(
    options: PrepOptions,
    entries: Sequence[Entry],
    ignored: list[dict[str, Any]],
    tag_report: dict[str, Any],
    train_dir: str,
    repeats: int,
    repeats_auto: bool,
    notes: list[str],
    outputs: list[str],
) -> dict[str, Any]:
    kept = [e for e in entries if e.status in ("train", "val")]
    train = [e for e in kept if e.status == "train"]
    by_reason: dict[str, int] = {}
    for entry in entries:
        if entry.status == "dropped":
            by_reason[entry.reasons[0][0]] = by_reason.get(entry.reasons[0][0], 0) + 1
    upscaled = sum(1 for e in kept if e.result and e.result.plan and e.result.plan.upscaled)
    missing = sum(1 for e in kept if e.caption_from is None)
    if repeats_auto:
        notes.append(
            f"repeats = {repeats} chosen automatically ({len(train)} training images x {repeats} = "
            f"{len(train) * repeats} per epoch, aiming at ~{TARGET_STEPS_PER_EPOCH}); pass --repeats to choose."
        )
    if missing and options.caption_source in ("existing", "tags"):
        notes.append(f"{missing} kept images had no caption file: their caption is the trigger word alone.")
    if by_reason.get("needs_upscale"):
        notes.append(
            f"{by_reason['needs_upscale']} images are smaller than a {options.size}x{options.size} crop: pass "
            "--allow-upscale, a smaller --size, or --crop bucket to keep them."
        )
    if upscaled:
        notes.append(f"{upscaled} images were upscaled to {options.size}x{options.size} (--allow-upscale).")
    sizes = [e.result.plan.out_size for e in kept if e.result and e.result.plan]
    return {
        "format": FORMAT,
        "version": MANIFEST_VERSION,
        "created_by": f"trainer {__version__}",
        "options": json.loads(options.json()),
        "dataset": {
            "name": options.name,
            "trigger": options.trigger_word,
            "train_dir": train_dir,
            "val_dir": "val",
            "repeats": repeats,
            "repeats_auto": repeats_auto,
            "resolution": options.size,
            "crop": options.crop,
            "enable_bucket": options.crop == "bucket",
            "caption_extension": ".txt",
            "keep_tokens": 1,
            "train_images": len(train),
            "val_images": len(kept) - len(train),
        },
        "counts": {
            "found": len(entries),
            "kept": len(kept),
            "train": len(train),
            "val": len(kept) - len(train),
            "dropped": sum(1 for e in entries if e.status == "dropped"),
            "ignored": len(ignored),
            "upscaled": upscaled,
            "captions_missing": missing,
            "by_reason": dict(sorted(by_reason.items())),
        },
        "buckets": bucket_histogram(sizes, options.size) if options.crop == "bucket" else None,
        "tags": {
            "suggested_prune": [
                {"tag": s.tag, "count": s.count, "fraction": round(s.fraction, 4)} for s in tag_report["suggestions"]
            ],
            "pruned": tag_report["pruned"],
            "table": "tag_frequency.csv",
        },
        "notes": notes,
        "files": [_file_record(e, entries) for e in entries] + ignored,
        "outputs": outputs,
    }


def load_prep_manifest(dataset: Path) -> dict[str, Any]:
    """prep.json of a dataset folder prep wrote; UserInputError if it is not one."""
    manifest = read_manifest(Path(dataset))
    if manifest is None:
        raise UserInputError(
            f"{dataset} is not a dataset from `python -m trainer prep` (no prep.json); run prep first."
        )
    if manifest.get("version") != MANIFEST_VERSION:
        raise UserInputError(
            f"{dataset}/prep.json has version {manifest.get('version')}; re-run prep with this trainer."
        )
    return manifest
