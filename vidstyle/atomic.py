"""Atomic file writes: temp file in the same folder, fsync, then rename.

A crash at any moment leaves either the old file or the new one, never a partial file
under the final name. Disk-full and permission errors become one clear OutputError.
"""

from __future__ import annotations

import contextlib
import errno
import os
import tempfile
from pathlib import Path
from typing import Iterator

from .errors import OutputError


def _current_umask() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


# mkstemp creates 0600 files; finished files get the mode a plain open() would give them.
_FILE_MODE = 0o666 & ~_current_umask()


def _explain(exc: OSError, path: Path) -> OutputError:
    if exc.errno == errno.ENOSPC:
        return OutputError(f"The disk is full while writing {path}; free some space and resume the job.")
    if exc.errno in (errno.EACCES, errno.EPERM, errno.EROFS):
        return OutputError(f"Cannot write {path}: permission denied; choose a folder you can write to.")
    return OutputError(f"Cannot write {path}: {exc.strerror or exc}.")


@contextlib.contextmanager
def atomic_path(final: str | os.PathLike[str], suffix: str | None = None, durable: bool = True) -> Iterator[Path]:
    """Yield a temp path next to `final`; on success rename it over `final`.

    The temp name keeps the final suffix so libraries that pick a format from the
    extension (PyAV, Pillow) still work. `durable` fsyncs before the rename (survives a
    power loss); working frames skip it, since the rename alone is crash-safe for the
    process and a frame lost to a power cut is simply rendered again.
    """
    final = Path(final)
    try:
        final.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp_name = tempfile.mkstemp(
            prefix=f".{final.stem}.", suffix=suffix if suffix is not None else final.suffix, dir=final.parent
        )
        os.fchmod(fd, _FILE_MODE)
        os.close(fd)
    except OSError as exc:
        raise _explain(exc, final) from exc
    tmp = Path(tmp_name)
    try:
        yield tmp
        if durable:
            with open(tmp, "rb+") as handle:
                os.fsync(handle.fileno())
        os.replace(tmp, final)
    except OSError as exc:
        tmp.unlink(missing_ok=True)
        raise _explain(exc, final) from exc
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def write_bytes(final: str | os.PathLike[str], data: bytes, durable: bool = True) -> None:
    with atomic_path(final, durable=durable) as tmp:
        tmp.write_bytes(data)


def write_text(final: str | os.PathLike[str], text: str) -> None:
    write_bytes(final, text.encode("utf-8"))
