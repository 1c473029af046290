"""Contact sheets: pages of labelled thumbnails (kept images, dropped images with reasons)."""

from __future__ import annotations

import io
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import List, Optional, Sequence, Tuple

from PIL import Image, ImageDraw, ImageFont

TILE = 160
LABEL_LINES = 3
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
    jpeg: Optional[bytes]  # None: the file could not be decoded, a placeholder is drawn
    lines: List[str] = field(default_factory=list)
    accent: Tuple[int, int, int] = (90, 170, 90)


def _font() -> ImageFont.ImageFont:
    return ImageFont.load_default()


def _text_width(draw: ImageDraw.ImageDraw, text: str, font: ImageFont.ImageFont) -> float:
    if hasattr(draw, "textlength"):
        return float(draw.textlength(text, font=font))
    return float(font.getsize(text)[0])  # pragma: no cover - Pillow < 8


def wrap(draw: ImageDraw.ImageDraw, text: str, font: ImageFont.ImageFont, width: int, max_lines: int) -> List[str]:
    """Character wrap (file names have no spaces to break at); '...' marks a cut."""
    if max_lines <= 0:
        return []
    lines: List[str] = []
    current = ""
    for char in text:
        if current and _text_width(draw, current + char, font) > width:
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
    while last and _text_width(draw, last + "...", font) > width:
        last = last[:-1]
    kept[-1] = last + "..."
    return kept


def _paste_tile(sheet: Image.Image, draw: ImageDraw.ImageDraw, tile: Tile, x: int, y: int, font: ImageFont.ImageFont) -> None:
    draw.rectangle([x - 2, y - 2, x + TILE + 1, y + TILE + 1], outline=tile.accent, width=2)
    if tile.jpeg is None:
        draw.rectangle([x, y, x + TILE - 1, y + TILE - 1], fill=PLACEHOLDER)
        draw.text((x + TILE // 2 - 20, y + TILE // 2 - 6), "no image", fill=TEXT, font=font)
    else:
        with Image.open(io.BytesIO(tile.jpeg)) as thumb:
            thumb = thumb.convert("RGB")
            thumb.thumbnail((TILE, TILE))
            sheet.paste(thumb, (x + (TILE - thumb.width) // 2, y + (TILE - thumb.height) // 2))
    text_lines: List[str] = []
    for line in tile.lines:
        text_lines.extend(wrap(draw, line, font, TILE, LABEL_LINES - len(text_lines)))
        if len(text_lines) >= LABEL_LINES:
            break
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
    draw.text((PADDING, 7), title, fill=TEXT, font=font)
    for index, tile in enumerate(tiles):
        row, column = divmod(index, COLUMNS)
        _paste_tile(sheet, draw, tile, column * cell_w + PADDING, HEADER + row * cell_h + PADDING, font)
    return sheet


def write_sheets(tiles: Sequence[Tile], title: str, folder: Path, stem: str) -> List[Path]:
    """`stem_01.png`, `stem_02.png`, ... with up to PER_PAGE tiles each; none when no tiles."""
    folder.mkdir(parents=True, exist_ok=True)
    pages = max(1, math.ceil(len(tiles) / PER_PAGE)) if tiles else 0
    written = []
    for page in range(pages):
        chunk = tiles[page * PER_PAGE : (page + 1) * PER_PAGE]
        heading = f"{title}  (page {page + 1}/{pages})" if pages > 1 else title
        path = folder / f"{stem}_{page + 1:02d}.png"
        render_page(chunk, heading).save(path, "PNG", compress_level=6)
        written.append(path)
    return written
