"""Caption text: reading, normalising, the trigger word, pruning and prune suggestions.

Captions are comma-separated tag lists (the Danbooru / WD14 convention sd-scripts expects with
`shuffle_caption` and `keep_tokens = 1`): the trigger word goes first, every other tag once.
A tag present in most images of a character set is usually one of the character's own
features (hair colour, eye colour, outfit parts); deleting those tags makes the trigger word
learn them, so they are suggested for pruning with their counts.
"""

from __future__ import annotations

import csv
import fnmatch
import io
import re
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

# Tags that look like "a_b" but are faces, not words: underscores stay (WD14 taggers' list).
KAOMOJI = frozenset("0_0 (o)_(o) +_+ +_- ._. <o>_<o> <|>_<|> =_= >_< 3_3 6_9 >_o @_@ ^_^ o_o u_u x_x |_| ||_||".split())

# Frequent in any single-character set yet not a feature of the character: never suggested.
GENERIC_TAGS = frozenset(
    (
        "1girl",
        "1boy",
        "2girls",
        "2boys",
        "solo",
        "solo focus",
        "male focus",
        "female focus",
        "looking at viewer",
        "simple background",
        "white background",
        "transparent background",
        "grey background",
        "gray background",
        "black background",
        "upper body",
        "full body",
        "cowboy shot",
        "portrait",
        "close-up",
        "standing",
        "sitting",
        "smile",
        "closed mouth",
        "open mouth",
        "blush",
        "highres",
        "absurdres",
        "official art",
        "game cg",
        "screenshot",
        "3d",
        "render",
        "mmd",
        "artist name",
        "signature",
        "watermark",
    )
)

_WEIGHTED = re.compile(r"^\((.+):\s*[0-9.]+\)$")  # "(tag:0.87)" as some taggers write it
_SPACES = re.compile(r"\s+")


@dataclass(frozen=True)
class TagSuggestion:
    tag: str
    count: int
    fraction: float


# ------------------------------------------------------------------------------- reading


def read_caption_file(path: Path) -> str:
    """Caption text (UTF-8, with or without BOM; legacy files fall back to cp1252/latin-1)."""
    raw = path.read_bytes()
    for encoding in ("utf-8-sig", "cp1252", "latin-1"):
        try:
            return raw.decode(encoding)
        except UnicodeDecodeError:
            continue
    return raw.decode("latin-1")  # pragma: no cover - latin-1 decodes any byte string


def split_tags(text: str) -> list[str]:
    """Tags from caption text: commas and line breaks separate (sd-scripts reads one line)."""
    return re.split(r"[,\n\r]+", text)


def normalise_tag(tag: str, underscores_to_spaces: bool = True) -> str:
    tag = _SPACES.sub(" ", tag).strip()
    weighted = _WEIGHTED.match(tag)
    if weighted:
        tag = weighted.group(1).strip()
    if underscores_to_spaces and tag not in KAOMOJI:
        tag = _SPACES.sub(" ", tag.replace("_", " ")).strip()
    return tag


def normalise_tags(tags: Iterable[str], underscores_to_spaces: bool = True) -> list[str]:
    """Trim, collapse whitespace, unweight, underscores -> spaces, drop empties and repeats."""
    seen: set[str] = set()
    result: list[str] = []
    for raw in tags:
        tag = normalise_tag(raw, underscores_to_spaces)
        key = tag.casefold()
        if tag and key not in seen:
            seen.add(key)
            result.append(tag)
    return result


def parse_caption(text: str, underscores_to_spaces: bool = True) -> list[str]:
    return normalise_tags(split_tags(text), underscores_to_spaces)


def caption_beside(image: Path, extension: str = ".txt") -> Path | None:
    """The caption file sd-scripts would pair with `image` (same stem)."""
    candidate = image.with_suffix(extension)
    return candidate if candidate.is_file() else None


def caption_in_dir(tags_dir: Path, relative_image: Path, extension: str = ".txt") -> Path | None:
    """A tagger's output for an image: same relative folder first, then the bare stem."""
    for candidate in (tags_dir / relative_image.with_suffix(extension), tags_dir / (relative_image.stem + extension)):
        if candidate.is_file():
            return candidate
    return None


# ------------------------------------------------------------------------- trigger, pruning


def with_trigger(tags: Sequence[str], trigger: str) -> list[str]:
    """Trigger word first (kohya keep_tokens = 1 keeps it there when shuffling), once."""
    key = trigger.casefold()
    return [trigger] + [t for t in tags if t.casefold() != key]


def _pattern(entry: str, underscores_to_spaces: bool) -> str:
    return normalise_tag(entry, underscores_to_spaces).casefold()


class Pruner:
    """Tags to delete: exact names or shell patterns ("* eyes"), matched case-insensitively."""

    def __init__(
        self, entries: Iterable[str], protected: Iterable[str] = (), underscores_to_spaces: bool = True
    ) -> None:
        self.exact: set[str] = set()
        self.patterns: list[str] = []
        for entry in entries:
            pattern = _pattern(entry, underscores_to_spaces)
            if not pattern:
                continue
            if any(c in pattern for c in "*?["):
                self.patterns.append(pattern)
            else:
                self.exact.add(pattern)
        self.protected = {_pattern(t, underscores_to_spaces) for t in protected}

    def __call__(self, tag: str) -> bool:
        key = tag.casefold()
        if key in self.protected:
            return False
        return key in self.exact or any(fnmatch.fnmatchcase(key, p) for p in self.patterns)


def prune(tags: Sequence[str], pruner: Pruner, keep: Sequence[str] = ()) -> tuple[list[str], list[str]]:
    """(kept tags, removed tags); tags in `keep` (e.g. the trigger) are never removed."""
    keep_keys = {k.casefold() for k in keep}
    kept: list[str] = []
    removed: list[str] = []
    for tag in tags:
        (removed if tag.casefold() not in keep_keys and pruner(tag) else kept).append(tag)
    return kept, removed


def tag_frequencies(captions: Iterable[Sequence[str]], exclude: Iterable[str] = ()) -> Counter:
    """In how many captions each tag appears (each caption counts a tag once)."""
    excluded = {e.casefold() for e in exclude}
    counts: Counter = Counter()
    for tags in captions:
        counts.update({t for t in tags if t.casefold() not in excluded})
    return counts


def suggest_prune(
    frequencies: Counter, image_count: int, min_fraction: float, protected: Iterable[str] = (), min_images: int = 5
) -> list[TagSuggestion]:
    """Tags in at least `min_fraction` of the images: probably the character's own features.

    Generic composition tags (1girl, solo, simple background, ...) and `protected` ones are
    never suggested, and nothing is suggested from fewer than `min_images` images (a share
    of two images says nothing). Sorted by count, then name, so the list is stable.
    """
    if image_count < max(1, min_images):
        return []
    skip = {t.casefold() for t in GENERIC_TAGS} | {t.casefold() for t in protected}
    chosen = [
        TagSuggestion(tag, count, count / image_count)
        for tag, count in frequencies.items()
        if count / image_count >= min_fraction and tag.casefold() not in skip
    ]
    return sorted(chosen, key=lambda s: (-s.count, s.tag))


def format_caption(tags: Sequence[str]) -> str:
    return ", ".join(tags)


def frequency_table_csv(frequencies: Counter, image_count: int, suggested: set[str], pruned: set[str]) -> str:
    """tag,count,percent,suggested,pruned -- most frequent first."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(["tag", "count", "percent", "suggested", "pruned"])
    for tag, count in sorted(frequencies.items(), key=lambda item: (-item[1], item[0])):
        percent = 100.0 * count / image_count if image_count else 0.0
        writer.writerow(
            [tag, count, f"{percent:.1f}", "yes" if tag in suggested else "", "yes" if tag in pruned else ""]
        )
    return buffer.getvalue()


def read_list_file(path: Path) -> list[str]:
    """One entry per line (or comma-separated); '#' starts a comment."""
    entries: list[str] = []
    for line in read_caption_file(path).splitlines():
        line = line.split("#", 1)[0]
        entries.extend(part.strip() for part in line.split(",") if part.strip())
    return entries
