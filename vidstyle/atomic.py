"""Atomic file writes: temp file in the same folder, fsync, rename, fsync the folder.

What is promised:
* a crash of the process at any moment leaves either the old file or the complete new one
  under the final name, never a partial file (the rename is atomic);
* with `durable` (the default), the same holds after a power loss or an OS crash once the
  call has returned: the data is flushed before the rename and the folder entry after it
  (POSIX; Windows cannot fsync a folder, so there the rename itself may be lost, leaving the
  old file or none, but never a partial one);
* without `durable` (working frames), nothing is promised across a power loss: the final
  name may be missing, empty or hold the old file, and nothing checks it afterwards.
Disk-full and permission errors become one clear OutputError.
"""

from __future__ import annotations

import contextlib
import errno
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path

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
    extension (PyAV, Pillow) still work. `durable` fsyncs the file before the rename and
    its folder after it (see the module docstring for what each choice promises); working
    frames skip both, which is where the time would go.
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
        if durable:
            _fsync_folder(final.parent)
    except OSError as exc:
        tmp.unlink(missing_ok=True)
        raise _explain(exc, final) from exc
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def _fsync_folder(folder: Path) -> None:
    """Make the rename itself durable: the new folder entry reaches the disk (POSIX only)."""
    if os.name != "posix":
        return  # Windows cannot open a folder for fsync; NTFS journals the rename's metadata
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_bytes(final: str | os.PathLike[str], data: bytes, durable: bool = True) -> None:
    with atomic_path(final, durable=durable) as tmp:
        tmp.write_bytes(data)


def write_text(final: str | os.PathLike[str], text: str) -> None:
    write_bytes(final, text.encode("utf-8"))
