"""Offer LoRA files to a WebUI for a while under names of our own, then take them away again.

The WebUI finds LoRAs only in its Lora folder (models/Lora or --lora-dir), by file stem.
A1111's HTTP API has no route that receives a file (v1.10.1: GET /sdapi/v1/loras and
POST /sdapi/v1/refresh-loras, which rescans the folder), so a WebUI over HTTP can only be
offered files through a folder it reads; inside the WebUI we know that folder ourselves.

Every copy gets a name no file there has (`vidstyle-<run>-e0003`, then `-2`, `-3`... if taken),
is created exclusively (never replacing anything), and is deleted when the stage closes,
also after a failure or a cancel. The copy's `ss_output_name` metadata is set to that name:
the WebUI otherwise uses it as the LoRA's alias, and all epochs of a run would then share the
alias of the user's installed LoRA and shadow it while the preview runs.
"""

from __future__ import annotations

import json
import shutil
import struct
from collections.abc import Callable, Iterable
from pathlib import Path

from .errors import OutputError, UserInputError
from .filenames import safe_name
from .safetensors_header import read_raw_header

# Called with the names that must now be listed (none after clean-up); raises if the WebUI misses one.
Refresh = Callable[[list[str]], None]
LORA_SUFFIXES = (".safetensors", ".pt", ".ckpt")


def staged_name(run_label: str, epoch: int) -> str:
    slug = safe_name(run_label, keep_dots=False, max_len=40, fallback="run")
    return f"vidstyle-{slug}-e{epoch:04d}"


def copy_with_output_name(source: Path, target: Path, output_name: str) -> None:
    """Copy a .safetensors file, exclusively, with `ss_output_name` set in its metadata.

    The format is 8 bytes of header length, a JSON header, then the tensor bytes with offsets
    relative to the header's end, so a new header in front leaves the tensors untouched.
    """
    with open(source, "rb") as src:
        header = read_raw_header(src, source)  # leaves `src` at the tensor bytes
        metadata = dict(header.get("__metadata__") or {})
        metadata["ss_output_name"] = output_name
        header["__metadata__"] = metadata
        encoded = json.dumps(header, separators=(",", ":")).encode("utf-8")
        encoded += b" " * (-len(encoded) % 8)  # the format pads headers to 8 bytes with spaces
        with open(target, "xb") as out:  # "x": never replace a file someone else has there
            out.write(struct.pack("<Q", len(encoded)) + encoded)
            shutil.copyfileobj(src, out, 16 * 1024 * 1024)


class LoraStage:
    """Copies in one WebUI Lora folder, removed on close (use it as a context manager)."""

    def __init__(self, folder: Path, refresh: Refresh, listed: Callable[[], set[str]] | None = None) -> None:
        self.folder = Path(folder)
        self._refresh = refresh
        # Names the WebUI lists now (files in subfolders or other --lora-dir folders count too).
        self._listed = listed or (lambda: set())
        self.created: list[Path] = []

    def offer(self, items: Iterable[tuple[str, Path]]) -> list[str]:
        """Copy each (wanted name, file) in and refresh the WebUI once; returns the names used."""
        if not self.folder.is_dir():
            raise UserInputError(
                f"The WebUI Lora folder {self.folder} does not exist; give the folder the WebUI "
                "reads LoRAs from (its models/Lora or --lora-dir)."
            )
        taken = {name.casefold() for name in self._listed()}
        names: list[str] = []
        for wanted, source in items:
            name = self._free_name(wanted, taken)
            target = self.folder / f"{name}.safetensors"
            self.created.append(target)  # before writing: a half-written copy is removed too
            try:
                copy_with_output_name(source, target, name)
            except FileExistsError:  # appeared since we looked: not ours, leave it
                self.created.pop()
                raise OutputError(f"{target} appeared while the preview was starting; run the preview again.") from None
            except OSError as exc:
                raise OutputError(
                    f"Cannot copy {source.name} into the WebUI Lora folder {self.folder}: {exc.strerror or exc}."
                ) from None
            taken.add(name.casefold())
            names.append(name)
        self._refresh(names)
        return names

    def _free_name(self, wanted: str, taken: set[str]) -> str:
        candidate, n = wanted, 2
        while candidate.casefold() in taken or any((self.folder / f"{candidate}{s}").exists() for s in LORA_SUFFIXES):
            candidate = f"{wanted}-{n}"
            n += 1
        return candidate

    def close(self) -> None:
        removed = False
        for path in self.created:
            try:
                path.unlink()
                removed = True
            except FileNotFoundError:
                pass
            except OSError:  # pragma: no cover - e.g. a Windows WebUI holding the file open
                pass
        self.created = []
        if removed:
            try:
                self._refresh([])  # so the WebUI forgets them, as it would after the user deleted files
            except Exception:  # the files are gone, which is what matters; a stale list fixes itself on refresh
                pass

    def __enter__(self) -> LoraStage:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()
