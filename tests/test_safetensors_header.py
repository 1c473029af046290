"""vidstyle.safetensors_header: the one .safetensors header reader (no torch or safetensors needed)."""

from __future__ import annotations

import json
import struct
from pathlib import Path

import pytest

from vidstyle.errors import MediaError
from vidstyle.lora_stage import copy_with_output_name
from vidstyle.safetensors_header import read_header, read_metadata


def _write(path: Path, header: dict, tensor_bytes: bytes = b"") -> Path:
    raw = json.dumps(header).encode("utf-8")
    path.write_bytes(struct.pack("<Q", len(raw)) + raw + tensor_bytes)
    return path


def test_reads_names_and_metadata(tmp_path: Path) -> None:
    path = _write(
        tmp_path / "a.safetensors",
        {
            "__metadata__": {"ss_output_name": "miku", "ss_network_dim": "8"},
            "lora_unet_x.alpha": {"dtype": "F32", "shape": [], "data_offsets": [0, 4]},
        },
        b"\0\0\0\0",
    )
    assert read_header(path) == (["lora_unet_x.alpha"], {"ss_output_name": "miku", "ss_network_dim": "8"})
    assert read_metadata(path) == {"ss_output_name": "miku", "ss_network_dim": "8"}


@pytest.mark.parametrize(
    "content",
    [b"\1\2", struct.pack("<Q", 2**40) + b"{}", struct.pack("<Q", 4) + b"\xff\xfe{x", struct.pack("<Q", 2) + b"[]"],
)
def test_not_a_safetensors_file_is_one_sentence(tmp_path: Path, content: bytes) -> None:
    path = tmp_path / "bad.safetensors"
    path.write_bytes(content)
    with pytest.raises(MediaError, match=r"safetensors file.*; (check|re-download)"):
        read_header(path)


def test_missing_file_is_one_sentence(tmp_path: Path) -> None:
    with pytest.raises(MediaError, match="Cannot read"):
        read_header(tmp_path / "none.safetensors")


def test_copy_with_output_name_keeps_tensors(tmp_path: Path) -> None:
    source = _write(tmp_path / "a.safetensors", {"t": {"dtype": "U8", "shape": [3], "data_offsets": [0, 3]}}, b"abc")
    target = tmp_path / "b.safetensors"
    copy_with_output_name(source, target, "staged")
    assert read_header(target) == (["t"], {"ss_output_name": "staged"})
    assert target.read_bytes().endswith(b"abc")
    bad = tmp_path / "bad.safetensors"
    bad.write_bytes(b"\1")
    with pytest.raises(MediaError):
        copy_with_output_name(bad, tmp_path / "c.safetensors", "x")
    assert not (tmp_path / "c.safetensors").exists()
