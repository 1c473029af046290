"""`python -m trainer prep`: the command line of trainer.dataset.prepare (no logic here).

Help texts and defaults come from PrepOptions, where they are declared once.
"""

from __future__ import annotations

import argparse
import sys
from typing import Any

from vidstyle.events import ProgressEvent

from .dataset import PrepResult, prepare
from .prep_options import PrepOptions, build_options

# CLI flag -> (PrepOptions field, argparse keyword arguments). Flags whose meaning is the
# negation of a field ("--keep-monochrome") store the inverted value.
_FLAGS: list[tuple] = [
    ("--out", "out", {"required": True, "metavar": "DATASET"}),
    ("--name", "name", {"required": True}),
    ("--trigger", "trigger", {"metavar": "WORD"}),
    ("--repeats", "repeats", {"type": int, "metavar": "N"}),
    ("--size", "size", {"type": int, "metavar": "PX"}),
    ("--crop", "crop", {"choices": ["bucket", "focal", "center"]}),
    ("--allow-upscale", "allow_upscale", {"action": "store_true"}),
    ("--background", "background", {"metavar": "COLOUR"}),
    ("--min-side", "min_side", {"type": int, "metavar": "PX"}),
    ("--no-dedupe", "dedupe", {"action": "store_false", "help": "Keep near-duplicates."}),
    ("--dedupe-threshold", "dedupe_threshold", {"type": int, "metavar": "BITS"}),
    (
        "--keep-monochrome",
        "drop_monochrome",
        {"action": "store_false", "help": "Keep greyscale and single-tint images."},
    ),
    ("--blur-threshold", "blur_threshold", {"type": float, "metavar": "0-1"}),
    ("--no-face-filter", "face_filter", {"action": "store_false", "help": "Keep images however many faces they show."}),
    ("--max-faces", "max_faces", {"type": int, "metavar": "N"}),
    ("--face-detector", "face_detector", {"metavar": "auto|none|PATH"}),
    ("--exclude", "exclude", {"action": "append", "metavar": "PATTERN"}),
    ("--exclude-file", "exclude_file", {"metavar": "FILE"}),
    ("--max-pixels", "max_pixels", {"type": int, "metavar": "N"}),
    ("--captions", "caption_source", {"choices": ["existing", "tags", "wd14", "webui", "none"]}),
    ("--caption-ext", "caption_ext", {"metavar": "EXT"}),
    ("--tags-dir", "tags_dir", {"metavar": "DIR"}),
    ("--tagger-model", "tagger_model", {"metavar": "MODEL.onnx"}),
    ("--tagger-threshold", "tagger_threshold", {"type": float, "metavar": "P"}),
    ("--tagger-character-threshold", "tagger_character_threshold", {"type": float, "metavar": "P"}),
    ("--tagger", "tagger", {"metavar": "webui:URL"}),
    ("--tagger-workers", "tagger_workers", {"type": int, "metavar": "N"}),
    ("--keep-underscores", "underscores_to_spaces", {"action": "store_false", "help": "Write tags as 'long_hair'."}),
    ("--prune", "prune", {"action": "append", "metavar": "TAGS"}),
    ("--prune-file", "prune_file", {"metavar": "FILE"}),
    ("--keep-tag", "keep_tags", {"action": "append", "metavar": "TAG"}),
    ("--suggest-threshold", "suggest_threshold", {"type": float, "metavar": "FRACTION"}),
    ("--prune-suggested", "prune_suggested", {"action": "store_true"}),
    ("--val-fraction", "val_fraction", {"type": float, "metavar": "F"}),
    ("--val-count", "val_count", {"type": int, "metavar": "N"}),
    ("--seed", "seed", {"type": int, "metavar": "N"}),
    ("--workers", "workers", {"type": int, "metavar": "N"}),
    ("--no-contact-sheets", "contact_sheets", {"action": "store_false", "help": "Skip the contact sheets."}),
]


def _help(field_name: str) -> str:
    model_field = PrepOptions.__fields__[field_name]
    text = model_field.field_info.description or ""
    default = model_field.default
    if not model_field.required and not isinstance(default, bool) and default not in (None, [], ""):
        text += f" (default: {default:,})" if isinstance(default, int) and default > 9999 else f" (default: {default})"
    return text.replace("%", "%%")


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "prep",
        help="prepare a LoRA dataset: filter, dedupe, crop, caption, split",
        description="Build a kohya dataset folder from image folders. Sources are only read; "
        "DATASET/prep.json explains what happened to every file.",
    )
    parser.add_argument("sources", nargs="+", metavar="SRC", help=_help("sources"))
    for flag, field_name, kwargs in _FLAGS:
        kwargs = {"help": _help(field_name), **kwargs}
        parser.add_argument(flag, dest=field_name, default=argparse.SUPPRESS, **kwargs)
    parser.add_argument(
        "--webui-auth", metavar="USER:PASSWORD", default=None,
        help="login of the WebUI tagger (its --api-auth); default $VIDSTYLE_WEBUI_AUTH. Never written to prep.json.",
    )  # fmt: skip
    parser.add_argument("--quiet", action="store_true", default=False, help="No progress bar.")
    parser.set_defaults(run=run)


def options_from_args(args: argparse.Namespace) -> PrepOptions:
    given: dict[str, Any] = {
        name: value for name, value in vars(args).items() if name in PrepOptions.__fields__ and value is not None
    }
    for list_field in ("prune", "keep_tags"):
        if list_field in given:  # "--prune 'brown hair, amber eyes'" is one natural way to type it
            given[list_field] = [part.strip() for item in given[list_field] for part in item.split(",") if part.strip()]
    if "caption_source" not in given:
        if "tagger" in given:
            given["caption_source"] = "webui"
        elif "tagger_model" in given:
            given["caption_source"] = "wd14"
        elif "tags_dir" in given:
            given["caption_source"] = "tags"
    return build_options(**given)


class _Progress:
    """A tqdm bar per step of prep (the event's message) on stderr, hidden when stderr is not a
    terminal. Warnings and the totals are left to `summary`, which prints them once at the end."""

    def __init__(self, quiet: bool) -> None:
        self.quiet = quiet
        self.bars: dict[str, Any] = {}

    def __call__(self, event: ProgressEvent) -> None:
        if self.quiet or event.kind not in ("stage", "progress") or not event.total:
            return
        from tqdm import tqdm

        bar = self.bars.get(event.message)
        if bar is None:
            bar = self.bars[event.message] = tqdm(
                total=event.total, desc=event.message, unit="img", file=sys.stderr, disable=None, leave=False
            )
        bar.update(event.done - bar.n)

    def close(self) -> None:
        for bar in self.bars.values():
            bar.close()


def run(args: argparse.Namespace) -> int:
    options = options_from_args(args)
    progress = _Progress(getattr(args, "quiet", False))
    try:
        result = prepare(options, on_event=progress, webui_auth=getattr(args, "webui_auth", None))
    finally:
        progress.close()
    print(summary(result))
    return 0


def summary(result: PrepResult) -> str:
    manifest = result.manifest
    counts = manifest["counts"]
    dataset = manifest["dataset"]
    lines = [
        f"prep: {counts['found']} images found, {counts['kept']} kept ({counts['train']} train + {counts['val']} val), "
        f"{counts['dropped']} dropped" + (f", {counts['ignored']} other files ignored" if counts["ignored"] else "")
    ]
    if counts["by_reason"]:
        lines.append(
            "  dropped: "
            + ", ".join(f"{code} {n}" for code, n in sorted(counts["by_reason"].items(), key=lambda kv: -kv[1]))
        )
    suggestions = manifest["tags"]["suggested_prune"]
    if suggestions:
        action = "pruned" if manifest["options"]["prune_suggested"] else "add --prune-suggested to remove them"
        lines.append(
            f"  tags in >= {manifest['options']['suggest_threshold']:.0%} of images (probably {dataset['trigger']}'s "
            "own "
            f"features; {action}):"
        )
        lines.append("    " + ", ".join(f"{s['tag']} {s['count']}/{counts['kept']}" for s in suggestions[:20]))
    if manifest["tags"]["pruned"]:
        lines.append("  pruned tags: " + ", ".join(manifest["tags"]["pruned"][:20]))
    lines.append(f"  training images: {result.out / dataset['train_dir']}  (repeats {dataset['repeats']})")
    if counts["val"]:
        lines.append(f"  validation images: {result.out / dataset['val_dir']}")
    lines.append(f"  report: {result.out / 'prep.json'}, {result.out / 'tag_frequency.csv'}, {result.out / 'sheets'}")
    for note in manifest["notes"]:
        lines.append(f"  note: {note}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    """Run only this subcommand (handy when the other trainer commands are not installed)."""
    from vidstyle.errors import VidstyleError

    parser = argparse.ArgumentParser(prog="python -m trainer")
    register(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(argv)
    try:
        return int(args.run(args))
    except VidstyleError as err:
        print(f"error: {err}", file=sys.stderr)
        return err.exit_code
