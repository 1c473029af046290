"""vidstyle.imageio: PNG frames with WebUI-style text chunks, atomic writes."""

from __future__ import annotations

from pathlib import Path

import media  # tests/media.py
import numpy as np
import pytest
from PIL import Image

from vidstyle.errors import MediaError
from vidstyle.imageio import decode_png, png_text, read_image, read_png, write_png


def test_png_round_trip_is_lossless(tmp_path: Path) -> None:
    image = media.draw_frame(5, 0.2, (96, 64))
    write_png(tmp_path / "a.png", image)
    back = read_png(tmp_path / "a.png")
    assert back.dtype == np.uint8 and np.array_equal(back, image)
    assert png_text(tmp_path / "a.png") == {}


def test_png_text_chunks_as_the_webui_reads_them(tmp_path: Path) -> None:
    image = media.draw_frame(1, 0.0, (96, 64))
    parameters = "a girl dancing <lora:zhongli:0.8>\nNegative prompt: blurry\nSteps: 20, Seed: 42"
    write_png(tmp_path / "b.png", image, text={"parameters": parameters, "vidstyle": "frame 1"})
    assert png_text(tmp_path / "b.png") == {"parameters": parameters, "vidstyle": "frame 1"}
    with Image.open(tmp_path / "b.png") as pil:  # what the WebUI's PNG Info tab does
        assert pil.info["parameters"] == parameters and pil.mode == "RGB"
    assert np.array_equal(read_png(tmp_path / "b.png"), image)


def test_write_png_is_atomic_and_replaces(tmp_path: Path) -> None:
    path = tmp_path / "frames" / "000001.png"
    write_png(path, np.zeros((8, 8, 3), np.uint8))
    write_png(path, np.full((8, 8, 3), 255, np.uint8))
    assert read_png(path).min() == 255
    assert [p.name for p in path.parent.iterdir()] == ["000001.png"]
    with pytest.raises(ValueError):
        write_png(tmp_path / "bad.png", np.zeros((8, 8, 3), np.float32))
    assert not (tmp_path / "bad.png").exists()


def test_read_image_jpg_and_errors(tmp_path: Path) -> None:
    (path,) = media.make_image_folder(tmp_path / "j", count=1, ext="jpg")
    assert read_image(path).shape == (64, 96, 3)
    (tmp_path / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\nnot really")
    with pytest.raises(MediaError, match="not a readable image"):
        read_image(tmp_path / "broken.png")
    with pytest.raises(MediaError, match="does not exist"):
        read_png(tmp_path / "missing.png")
    with pytest.raises(MediaError):
        png_text(tmp_path / "broken.png")


def test_text_chunks_are_read_back_by_pillow_as_the_webui_png_info_does(tmp_path: Path) -> None:
    """Frames are encoded by OpenCV and given their infotext as tEXt (Latin-1) or iTXt (anything else)."""
    rgb = (np.random.default_rng(2).random((40, 56, 3)) * 255).astype(np.uint8)
    latin, other = "zhongli, 1boy\nSteps: 20, Seed: 5, Size: 56x40", "钟离, 1boy ✨\nSteps: 20"
    write_png(tmp_path / "latin.png", rgb, text={"parameters": latin})
    write_png(tmp_path / "other.png", rgb, text={"parameters": other})
    for path, expected in ((tmp_path / "latin.png", latin), (tmp_path / "other.png", other)):
        with Image.open(path) as image:
            image.load()  # Pillow checks every chunk's CRC while it reads them
            assert image.info["parameters"] == expected
            assert np.array_equal(np.asarray(image.convert("RGB")), rgb)
        assert png_text(path) == {"parameters": expected}
        data = path.read_bytes()
        assert data.index(b"IHDR") < data.index(b"parameters") < data.index(b"IDAT")
        assert np.array_equal(decode_png(data), rgb)
    assert b"tEXt" in (tmp_path / "latin.png").read_bytes()
    assert b"iTXt" in (tmp_path / "other.png").read_bytes()


def test_undecodable_png_bytes_give_one_sentence() -> None:
    with pytest.raises(MediaError, match="not a readable PNG"):
        decode_png(b"not a png at all")
