"""Read a .safetensors file's header (tensor names and `__metadata__`) without loading tensors.

The format is documented and tiny: 8 bytes little-endian header length, then that many bytes
of JSON, then the tensor bytes. Reading it directly needs neither torch nor the safetensors
package (the WebUI pins venv has neither), and a multi-GB checkpoint is never read beyond
its header. `read_raw_header` leaves the file positioned at the tensor bytes, for callers
that rewrite the header in front of them (vidstyle.lora_stage).
"""

from __future__ import annotations

import json
import struct
from pathlib import Path
from typing import Any, BinaryIO

from .errors import MediaError

MAX_HEADER_BYTES = 100 * 1024 * 1024  # the format's own limit


def read_raw_header(handle: BinaryIO, path: Path) -> dict[str, Any]:
    """The header JSON of an open .safetensors file, `__metadata__` included; MediaError if it is not one."""
    raw_size = handle.read(8)
    if len(raw_size) != 8:
        raise MediaError(f"{path} is too short to be a .safetensors file; re-download or re-save it.")
    (size,) = struct.unpack("<Q", raw_size)
    if size > MAX_HEADER_BYTES:
        raise MediaError(f"{path} is not a .safetensors file (header size {size}); check the file.")
    try:
        header = json.loads(handle.read(size).decode("utf-8"))
    except (UnicodeDecodeError, ValueError):
        raise MediaError(f"{path} is not a .safetensors file (unreadable header); check the file.") from None
    if not isinstance(header, dict):
        raise MediaError(f"{path} is not a .safetensors file; check the file.")
    return header


def read_header(path: Path) -> tuple[list[str], dict[str, str]]:
    """Return (tensor names, metadata strings) of a .safetensors file."""
    try:
        with open(path, "rb") as handle:
            header = read_raw_header(handle, path)
    except OSError as exc:
        raise MediaError(f"Cannot read {path}: {exc.strerror}.") from None
    metadata = header.pop("__metadata__", None) or {}
    return list(header), {str(k): str(v) for k, v in metadata.items()}


def read_metadata(path: Path) -> dict[str, str]:
    return read_header(path)[1]
