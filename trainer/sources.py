"""Find the source images: folders searched recursively, in a stable order, read-only.

Hidden files and folders (including prep's own staging folders) and the output folder are
skipped; caption and cache side files are expected beside images and not reported; any other
file is listed as ignored with its reason so nothing disappears without a word.
"""

from __future__ import annotations

import fnmatch
import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from vidstyle.errors import UserInputError

from .images import SUPPORTED_EXTENSIONS

# Files that live beside images in datasets and are not images themselves.
SIDE_FILE_EXTENSIONS = frozenset(
    {".txt", ".caption", ".json", ".npz", ".csv", ".toml", ".yaml", ".yml", ".md", ".tags"}
)
OS_LITTER = frozenset({"thumbs.db", "desktop.ini", "ehthumbs.db"})


@dataclass(frozen=True)
class SourceFile:
    path: Path  # absolute
    root: Path  # the SRC argument it was found under
    relative: str  # POSIX path relative to root (the file name for a file SRC)

    @property
    def supported(self) -> bool:
        return self.path.suffix.lower() in SUPPORTED_EXTENSIONS


def _walk(root: Path, skip: Sequence[Path]) -> Iterable[Path]:
    for folder, dirs, files in os.walk(root):
        here = Path(folder)
        dirs[:] = sorted(d for d in dirs if not d.startswith(".") and (here / d).resolve() not in skip)
        for name in sorted(files):
            if not name.startswith("."):
                yield here / name


def scan_sources(
    sources: Sequence[Path], skip: Sequence[Path] = (), caption_ext: str = ".txt"
) -> tuple[list[SourceFile], list[SourceFile]]:
    """(image files, other files) from every SRC; a file reached twice is listed once."""
    skip_resolved = [p.resolve() for p in skip]
    side_files = SIDE_FILE_EXTENSIONS | {caption_ext.lower()}
    seen = set()
    images: list[SourceFile] = []
    others: list[SourceFile] = []
    for root in sources:
        if not root.exists():
            raise UserInputError(f"Source {root} does not exist; check the path.")
        if root.is_file():
            found = [(root, root.parent)]
        else:
            found = [(path, root) for path in _walk(root, skip_resolved)]
        for path, base in found:
            resolved = path.resolve()
            if resolved in seen:
                continue
            seen.add(resolved)
            item = SourceFile(path=resolved, root=root, relative=PurePosixPath(path.relative_to(base)).as_posix())
            if item.supported:
                images.append(item)
            elif path.suffix.lower() not in side_files and path.name.lower() not in OS_LITTER:
                others.append(item)
    return images, others


def read_pattern_file(path: Path) -> list[str]:
    """One file name or pattern per line; blank lines and '#' comments skipped."""
    lines = path.read_text(encoding="utf-8-sig").splitlines()
    return [line.strip() for line in lines if line.strip() and not line.strip().startswith("#")]


def excluded_by(item: SourceFile, patterns: Sequence[str]) -> str | None:
    """The first pattern that names this file (by name, relative path or absolute path)."""
    candidates = (item.path.name, item.relative, str(item.path), item.path.as_posix())
    for pattern in patterns:
        if any(fnmatch.fnmatch(candidate, pattern) for candidate in candidates):
            return pattern
    return None
