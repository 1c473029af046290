"""The dataset folder's safety rules: never overwrite other data, swap whole datasets.

A dataset is built in a hidden staging folder next to its final place and then swapped in
(on Linux with one atomic renameat2(RENAME_EXCHANGE); elsewhere with two renames), so old and
new files never mix and a crash leaves the old dataset. An existing folder is replaced only
when its prep.json says prep wrote it and it holds nothing prep did not write.
"""

from __future__ import annotations

import ctypes
import errno
import json
import os
import shutil
import sys
import tempfile
import uuid
from collections.abc import Sequence
from pathlib import Path, PurePosixPath
from typing import Any

from vidstyle.errors import OutputError, UserInputError

MANIFEST = "prep.json"
FORMAT = "vidstyle-trainer-prep"
# sd-scripts writes latent / text-encoder caches (*.npz) beside the images; they describe the
# old images, so they go with the old dataset. OS litter files are not user data either.
DISPOSABLE_SUFFIXES = (".npz",)
DISPOSABLE_NAMES = frozenset({".DS_Store", "Thumbs.db", "desktop.ini"})


def read_manifest(folder: Path) -> dict[str, Any] | None:
    """prep.json of `folder` if prep wrote it, else None."""
    try:
        data = json.loads((folder / MANIFEST).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) and data.get("format") == FORMAT else None


def _files(folder: Path) -> list[str]:
    return sorted(
        PurePosixPath(Path(dirpath, name).relative_to(folder)).as_posix()
        for dirpath, _, names in os.walk(folder)
        for name in names
    )


def _disposable(relative: str) -> bool:
    name = PurePosixPath(relative).name
    return name in DISPOSABLE_NAMES or name.lower().endswith(DISPOSABLE_SUFFIXES)


def check_output_folder(out: Path, sources: Sequence[Path]) -> None:
    """Refuse an --out that would swallow a source or replace data prep did not write."""
    for source in sources:
        if source == out or out in source.parents:
            raise UserInputError(
                f"The source {source} is inside the output folder {out}; replacing it would delete your images, "
                "so choose another --out."
            )
    if not out.exists():
        return
    if not out.is_dir():
        raise OutputError(f"{out} is a file, not a folder; choose a folder for --out.")
    if not any(out.iterdir()):
        return
    manifest = read_manifest(out)
    if manifest is None:
        raise OutputError(
            f"{out} already holds other data (it has no prep.json from an earlier prep); choose a new or empty folder "
            "for --out."
        )
    owned = set(manifest.get("outputs", [])) | {MANIFEST}
    foreign = [f for f in _files(out) if f not in owned and not _disposable(f)]
    if foreign:
        more = f" and {len(foreign) - 1} more" if len(foreign) > 1 else ""
        raise OutputError(
            f"{out} holds files prep did not write ({foreign[0]}{more}); move them out or choose another --out."
        )


def make_staging(out: Path) -> Path:
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        return Path(tempfile.mkdtemp(prefix=f".{out.name}.prep-", dir=out.parent))
    except OSError as exc:
        raise OutputError(
            f"Cannot create a folder next to {out}: {exc.strerror}; choose a folder you can write to."
        ) from exc


def _exchange(a: Path, b: Path) -> bool:
    """Atomically swap two paths (Linux renameat2 RENAME_EXCHANGE); False when unsupported."""
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        renameat2 = libc.renameat2
    except (OSError, AttributeError):
        return False
    renameat2.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p, ctypes.c_uint]
    renameat2.restype = ctypes.c_int
    at_fdcwd, rename_exchange = -100, 2
    return renameat2(at_fdcwd, os.fsencode(str(a)), at_fdcwd, os.fsencode(str(b)), rename_exchange) == 0


def replace_folder(staging: Path, out: Path) -> None:
    """Put `staging` at `out`; the previous `out` (if any) is removed only after the swap."""
    try:
        if not out.exists():
            os.rename(staging, out)
            return
        if _exchange(staging, out):
            shutil.rmtree(staging, ignore_errors=True)  # now holds the old dataset
            return
        old = out.with_name(f".{out.name}.old-{uuid.uuid4().hex[:8]}")
        os.rename(out, old)
        try:
            os.rename(staging, out)
        except OSError:
            os.rename(old, out)
            raise
        shutil.rmtree(old, ignore_errors=True)
    except OSError as exc:
        reason = "it is in use by another program" if exc.errno in (errno.EBUSY, errno.EACCES) else exc.strerror
        raise OutputError(
            f"Cannot put the new dataset at {out}: {reason}; close programs using it and run prep again."
        ) from exc
