"""Contact sheets: pages of labelled thumbnails (kept images, dropped images with reasons)."""

from __future__ import annotations

import io
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from PIL import Image, ImageDraw, ImageFont

TILE = 160
LABEL_LINES = 4
LINE_HEIGHT = 12
PADDING = 6
COLUMNS = 10
PER_PAGE = 100
HEADER = 26
BACKGROUND = (32, 32, 36)
TEXT = (235, 235, 235)
PLACEHOLDER = (70, 70, 76)


@dataclass
class Tile:
    jpeg: bytes | None  # None: the file could not be decoded, a placeholder is drawn
    lines: list[str] = field(default_factory=list)
    accent: tuple[int, int, int] = (90, 170, 90)


def _font() -> ImageFont.FreeTypeFont | ImageFont.ImageFont:
    # The small bitmap font: FreeType rendering of 6,000 labels takes seconds, this takes
    # milliseconds (Pillow >= 10.1 made load_default() return a FreeType font).
    loader = getattr(ImageFont, "load_default_imagefont", ImageFont.load_default)
    return loader()


def printable(text: str) -> str:
    """What the small bitmap font can draw: Latin-1; other characters become '?'.

    (prep.json keeps the real names; the sheet is only a picture of them.)
    """
    return text.encode("latin-1", "replace").decode("latin-1")


class _Widths:
    """Per-character advance widths, measured once (labels are wrapped character by character)."""

    def __init__(self, draw: ImageDraw.ImageDraw, font: ImageFont.FreeTypeFont | ImageFont.ImageFont) -> None:
        self.draw, self.font = draw, font
        self.cache: dict = {}

    def __call__(self, text: str) -> float:
        total = 0.0
        for char in text:
            width = self.cache.get(char)
            if width is None:
                width = self.cache[char] = float(self.draw.textlength(char, font=self.font))
            total += width
        return total


def wrap(text: str, width_of: _Widths, width: int, max_lines: int) -> list[str]:
    """Wrap at spaces when a line has one, else anywhere (file names); '...' marks a cut."""
    if max_lines <= 0:
        return []
    lines: list[str] = []
    current = ""
    for char in text:
        if current and width_of(current + char) > width:
            cut = current.rfind(" ")
            if cut > 0:
                lines.append(current[:cut])
                current = current[cut + 1 :] + char
            else:
                lines.append(current)
                current = char
        else:
            current += char
    if current:
        lines.append(current)
    if len(lines) <= max_lines:
        return lines
    kept = lines[:max_lines]
    last = kept[-1]
    while last and width_of(last + "...") > width:
        last = last[:-1]
    kept[-1] = last + "..."
    return kept


def _paste_tile(
    sheet: Image.Image,
    draw: ImageDraw.ImageDraw,
    tile: Tile,
    x: int,
    y: int,
    font: ImageFont.FreeTypeFont | ImageFont.ImageFont,
    widths: _Widths,
) -> None:
    draw.rectangle([x - 2, y - 2, x + TILE + 1, y + TILE + 1], outline=tile.accent, width=2)
    if tile.jpeg is None:
        draw.rectangle([x, y, x + TILE - 1, y + TILE - 1], fill=PLACEHOLDER)
        draw.text((x + TILE // 2 - 20, y + TILE // 2 - 6), "no image", fill=TEXT, font=font)
    else:
        with Image.open(io.BytesIO(tile.jpeg)) as thumb:
            thumb = thumb.convert("RGB")
            thumb.thumbnail((TILE, TILE))
            sheet.paste(thumb, (x + (TILE - thumb.width) // 2, y + (TILE - thumb.height) // 2))
    text_lines: list[str] = []
    for index, line in enumerate(tile.lines):
        still_to_come = len(tile.lines) - index - 1  # keep a line for each label after this one
        text_lines.extend(wrap(printable(line), widths, TILE, LABEL_LINES - len(text_lines) - still_to_come))
    for n, line in enumerate(text_lines[:LABEL_LINES]):
        draw.text((x, y + TILE + 3 + n * LINE_HEIGHT), line, fill=TEXT, font=font)


def render_page(tiles: Sequence[Tile], title: str) -> Image.Image:
    rows = max(1, math.ceil(len(tiles) / COLUMNS))
    columns = min(COLUMNS, max(1, len(tiles)))
    cell_w = TILE + 2 * PADDING
    cell_h = TILE + LABEL_LINES * LINE_HEIGHT + 2 * PADDING + 4
    sheet = Image.new("RGB", (columns * cell_w, HEADER + rows * cell_h), BACKGROUND)
    draw = ImageDraw.Draw(sheet)
    font = _font()
    widths = _Widths(draw, font)
    draw.text((PADDING, 7), printable(title), fill=TEXT, font=font)
    for index, tile in enumerate(tiles):
        row, column = divmod(index, COLUMNS)
        _paste_tile(sheet, draw, tile, column * cell_w + PADDING, HEADER + row * cell_h + PADDING, font, widths)
    return sheet


def write_sheets(tiles: Sequence[Tile], title: str, folder: Path, stem: str) -> list[Path]:
    """`stem_01.png`, `stem_02.png`, ... with up to PER_PAGE tiles each; none when no tiles."""
    folder.mkdir(parents=True, exist_ok=True)
    pages = math.ceil(len(tiles) / PER_PAGE)
    written = []
    for page in range(pages):
        chunk = tiles[page * PER_PAGE : (page + 1) * PER_PAGE]
        heading = f"{title}  (page {page + 1}/{pages})" if pages > 1 else title
        path = folder / f"{stem}_{page + 1:02d}.png"
        render_page(chunk, heading).save(path, "PNG", compress_level=1)
        written.append(path)
    return written
