"""What the settings preview and the epoch preview share: one home for each part.

* the columns: chosen frames fitted to the job size with their canny maps, and the request
  that renders one (`read_columns`, `preview_request`);
* the backend's life: created, preflighted, interrupted on a cancel, closed however the
  preview ends (`PreviewBackend`);
* the labelled grid image and its HTML twin with every cell inlined (`draw_rows`, `grid_table`),
  the page around it (`preview_page`), and writing both so nothing is ever half written
  (`write_preview`).
"""

from __future__ import annotations

import base64
import html
import io
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType

from PIL import Image, ImageDraw, ImageFont

from .atomic import atomic_path, write_text
from .backends import create_backend
from .backends.base import Backend, BackendFactory, Img2ImgRequest
from .control import control_for_spec
from .errors import Cancelled, UserInputError
from .events import EventCallback, ProgressEvent
from .spec import JobSpec, LoraRef, frame_seed
from .video import fit_frame, iter_frames, probe

CANCELLED = "Preview cancelled; nothing was written."
LABEL_WIDTH = 200  # the left column: row name and detail (e.g. validation loss)
HEADER_HEIGHT = 32  # the top row: frame numbers
MAX_CELL = 256  # cells are shown at most this wide/high (the page links nothing external)
BACKGROUND = (255, 255, 255)
TEXT = (30, 30, 30)
MUTED = (110, 110, 110)


def check_out_dir(out_dir: Path) -> None:
    """Refuse an output path that is a file before any rendering, not with a traceback after it."""
    if Path(out_dir).exists() and not Path(out_dir).is_dir():
        raise UserInputError(f"{out_dir} is a file, not a folder; choose another output folder for the preview.")


# --------------------------------------------------------------------------- frames


@dataclass
class PreviewColumn:
    frame: int
    init: Image.Image
    control: Image.Image


def read_columns(spec: JobSpec, frames: Sequence[int]) -> list[PreviewColumn]:
    """The chosen frames fitted to the job size, with their canny maps, as the job would make them."""
    wanted = set(frames)
    found: dict[int, PreviewColumn] = {}
    info = probe(spec.source.path, spec.source.sequence_fps)
    for frame in iter_frames(spec.source.path, spec.source, info):
        if frame.index in wanted:
            fitted = fit_frame(frame.image, spec.size.width, spec.size.height, spec.size.fit)
            control = control_for_spec(fitted, spec.controlnet)
            found[frame.index] = PreviewColumn(frame.index, Image.fromarray(fitted), Image.fromarray(control))
            if len(found) == len(wanted):
                break
    return [found[index] for index in sorted(found)]


def preview_request(spec: JobSpec, column: PreviewColumn, loras: list[LoraRef]) -> Img2ImgRequest:
    # One seed per frame, the same for every row.
    seed = frame_seed(spec, column.frame, 0)
    return Img2ImgRequest.for_spec(spec, column.frame, column.init, column.control, seed, loras=loras)


# --------------------------------------------------------------------------- backend


class PreviewBackend:
    """The one backend of a preview, as a `with` block around the rendering.

    `open` creates and preflights it, reporting both as events. However the block ends the
    backend is closed; a cancel (the token, Ctrl+C) first interrupts it and then leaves as one
    Cancelled, so the caller writes nothing.
    """

    def __init__(
        self,
        on_event: EventCallback,
        backend_factory: BackendFactory | None = None,
        webui_auth: str | None = None,
    ) -> None:
        self.on_event = on_event
        self.backend_factory = backend_factory
        self.webui_auth = webui_auth
        self.backend: Backend | None = None

    def open(self, spec: JobSpec) -> Backend:
        on_status = lambda msg: self.on_event(ProgressEvent("status", "render", message=msg))  # noqa: E731
        if self.backend_factory is not None:
            self.backend = self.backend_factory(spec, on_status)
        else:
            self.backend = create_backend(spec, on_status, webui_auth=self.webui_auth)
        self.on_event(ProgressEvent("stage", "preflight", message=f"checking the {self.backend.name} backend"))
        self.backend.preflight()
        return self.backend

    def __enter__(self) -> PreviewBackend:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, error: BaseException | None, trace: TracebackType | None
    ) -> None:
        try:
            if kind is not None and issubclass(kind, (KeyboardInterrupt, Cancelled)):
                if self.backend is not None:
                    self.backend.interrupt()
                raise Cancelled(CANCELLED) from None
        finally:
            if self.backend is not None:
                self.backend.close()


# --------------------------------------------------------------------------- grid image


def preview_cell_size(width: int, height: int) -> tuple[int, int]:
    scale = min(1.0, MAX_CELL / float(max(width, height)))
    return max(1, round(width * scale)), max(1, round(height * scale))


def _font(size: int) -> ImageFont.FreeTypeFont | ImageFont.ImageFont:
    """DejaVu Sans from matplotlib (installed with it), so labels scale; Pillow's bitmap font otherwise."""
    try:
        from matplotlib import font_manager

        return ImageFont.truetype(font_manager.findfont("DejaVu Sans"), size)
    except (ImportError, OSError, ValueError):
        return ImageFont.load_default()


def draw_rows(
    headers: Sequence[str],
    labels: Sequence[tuple[str, str]],
    rows: Sequence[Sequence[Image.Image]],
    cell: tuple[int, int],
) -> Image.Image:
    """A labelled grid: one header per column, a (title, detail) label per row, cells scaled to `cell`."""
    cw, ch = cell
    grid = Image.new("RGB", (LABEL_WIDTH + cw * len(headers), HEADER_HEIGHT + ch * len(rows)), BACKGROUND)
    draw = ImageDraw.Draw(grid)
    big, small = _font(16), _font(13)
    for x, header in enumerate(headers):
        draw.text((LABEL_WIDTH + x * cw + 6, 8), header, fill=TEXT, font=big)
    for y, ((title, detail), images) in enumerate(zip(labels, rows, strict=False)):
        top = HEADER_HEIGHT + y * ch
        draw.text((8, top + 8), title, fill=TEXT, font=big)
        draw.text((8, top + 30), detail, fill=MUTED, font=small)
        for x, image in enumerate(images):
            grid.paste(image.convert("RGB").resize(cell, Image.Resampling.LANCZOS), (LABEL_WIDTH + x * cw, top))
    return grid


# --------------------------------------------------------------------------- page


def _data_uri(image: Image.Image, cell: tuple[int, int]) -> str:
    buffer = io.BytesIO()
    image.convert("RGB").resize(cell, Image.Resampling.LANCZOS).save(buffer, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")


def grid_table(
    headers: Sequence[str],
    labels: Sequence[tuple[str, str]],
    rows: Sequence[Sequence[Image.Image]],
    notes: Sequence[str],
    cell: tuple[int, int],
) -> str:
    """The grid as an HTML table with its cells inlined (data: URIs), for a page that links nothing."""
    esc = html.escape
    head = "".join(f"<th>{esc(h)}</th>" for h in headers)
    body = []
    for (label, detail), images, note in zip(labels, rows, notes, strict=False):
        imgs = "".join(
            f'<td><img src="{_data_uri(image, cell)}" alt="{esc(label)}, {esc(h)}" '
            f'width="{cell[0]}" height="{cell[1]}"></td>'
            for image, h in zip(images, headers, strict=False)
        )
        extra = f"<br><code>{esc(note)}</code>" if note else ""
        body.append(f'<tr><th class="row">{esc(label)}<br><span>{esc(detail)}</span>{extra}</th>{imgs}</tr>')
    return f"<table><tr><th></th>{head}</tr>\n{''.join(body)}\n</table>"


def preview_page(title: str, body: str, label_em: int, style: str) -> str:
    """A self-contained page: `title` (plain text) and `body` (HTML); `label_em` is the row labels'
    width, `style` the page's own CSS rules (one per line)."""
    labels = (
        f"th.row {{ text-align: left; min-width: {label_em}em; padding-right: 1em; }} "
        "th.row span { color: #666; font-weight: normal; }"
    )
    return f"""<!doctype html>
<html><head><meta charset="utf-8"><title>{html.escape(title)}</title>
<style>
body {{ font-family: sans-serif; margin: 1.5em; color: #222; }}
table {{ border-collapse: collapse; }} td, th {{ padding: 2px; vertical-align: top; }}
{labels}
{style}
</style></head><body>
{body}
</body></html>
"""


def write_preview(out_dir: Path, name: str, grid: Image.Image, page: str) -> tuple[Path, Path]:
    """OUT_DIR/NAME.png, then OUT_DIR/NAME.html, each atomically: the page, which shows the grid's
    cells, appears last, so a crash leaves no page without its grid and no half-written file."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    grid_path, html_path = out_dir / f"{name}.png", out_dir / f"{name}.html"
    with atomic_path(grid_path) as tmp:
        grid.save(tmp, format="PNG")
    write_text(html_path, page)
    return grid_path, html_path
