"""Frames x epochs: every saved epoch of a LoRA rendered on telling frames of the user's own video.

Rows are the source frame (as the model sees it: fitted to the job size), its canny map, then
one row per epoch with that epoch's validation loss beside it; columns are frames. Every cell
uses the same seed and settings (the video preset's, plus the user's overrides), so the only
difference between rows is the epoch. The result is one grid PNG and one self-contained HTML
page; which epoch to use stays the user's call (the page shows evidence, not a verdict).

Backends: diffusers loads each epoch's file by path; a WebUI (over HTTP or in-process) is
offered the epochs through its Lora folder under names of their own (`lora_stage`), removed
again when the preview ends, however it ends.
"""

from __future__ import annotations

import base64
import html
import io
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from PIL import Image, ImageDraw, ImageFont

from .atomic import atomic_path, write_text
from .backends import create_backend
from .backends.base import Backend, BackendFactory, Img2ImgRequest
from .control import control_for_spec
from .epoch_frames import DEFAULT_COUNT, choose_frames
from .errors import Cancelled, UserInputError
from .events import EventCallback
from .lora_stage import LoraStage, staged_name
from .render import CancelToken, RenderEvent
from .spec import JobSpec, LoraRef, frame_seed
from .video import fit_frame, iter_frames, probe

FAMILY_NAMES = {"sd15": "SD1.5", "sd2": "SD2", "sdxl": "SDXL"}
LABEL_WIDTH = 200  # the left column: row name and validation loss
HEADER_HEIGHT = 32  # the top row: frame numbers
MAX_CELL = 256  # cells are shown at most this wide/high (the page links nothing external)
BACKGROUND = (255, 255, 255)
TEXT = (30, 30, 30)
MUTED = (110, 110, 110)
HTTP_NEEDS_FOLDER = (
    "A WebUI's HTTP API cannot receive LoRA files, so the epochs have to be copied into a folder that WebUI reads: "
    "give --webui-lora-dir, its models/Lora folder (or its --lora-dir) as this machine sees it."
)


@dataclass(frozen=True)
class EpochLora:
    """One saved epoch: its LoRA file and what the trainer knows about it."""

    epoch: int
    path: Path
    val_loss: float | None = None
    train_loss: float | None = None
    family: str | None = None  # base model family the LoRA was trained for ('sd15', 'sdxl', ...), if known
    note: str = ""  # e.g. the command that installs this epoch


@dataclass
class EpochPreview:
    grid_path: Path
    html_path: Path
    frames: list[int]
    epochs: list[int]
    cell_size: tuple[int, int]
    seed: int
    staged_names: list[str] = field(default_factory=list)


def _noop(event: RenderEvent) -> None:
    return None


# --------------------------------------------------------------------------- checks


def check_epochs(epochs: Sequence[EpochLora], where: str) -> None:
    if not epochs:
        raise UserInputError(f"{where} has no saved epochs yet; train it first (python -m trainer train RUN).")
    for item in epochs:
        if not item.path.is_file():
            raise UserInputError(
                f"The LoRA of epoch {item.epoch} ({item.path}) is missing; train again or pick another run."
            )


def check_out_dir(out_dir: Path) -> None:
    """Refuse an output path that is a file before any rendering, not with a traceback after it."""
    if Path(out_dir).exists() and not Path(out_dir).is_dir():
        raise UserInputError(f"{out_dir} is a file, not a folder; choose another output folder for the preview.")


def checkpoint_family(spec: JobSpec) -> str | None:
    """The family of the checkpoint the preview renders with, where this process can read it (diffusers)."""
    if spec.backend.kind not in ("diffusers", "ray"):  # ray: diffusers in actors, same checkpoint path
        return None  # a WebUI's checkpoint files are its own; the WebUI itself reports a mismatch
    try:
        from .backends.diffusers import checkpoint_family as family_of
        from .backends.diffusers import resolve_checkpoint

        return family_of(resolve_checkpoint(spec.model.checkpoint))
    except Exception:  # missing torch/diffusers or a missing checkpoint: the backend's preflight says which
        return None


def check_families(epochs: Sequence[EpochLora], model_family: str | None, checkpoint: str) -> None:
    if model_family is None:
        return
    for item in epochs:
        if item.family and item.family != model_family:
            raise UserInputError(
                f"The LoRA of epoch {item.epoch} ({item.path.name}) was trained for "
                f"{FAMILY_NAMES.get(item.family, item.family)} but the checkpoint '{checkpoint}' is "
                f"{FAMILY_NAMES.get(model_family, model_family)}; render with a checkpoint of the LoRA's base model "
                "(--model)."
            )


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


# --------------------------------------------------------------------------- rendering


def _stage_for(spec: JobSpec, lora_dir: Path | None, auth: str | None) -> LoraStage | None:
    kind = spec.backend.kind
    if kind == "webui_api":
        if lora_dir is None:
            raise UserInputError(HTTP_NEEDS_FOLDER)
        from .lora_stage_http import http_stage

        return http_stage(Path(lora_dir), spec.backend.webui_urls, auth, spec.backend.timeout)
    if kind == "webui_local":
        from .backends import webui_local

        folder, refresh, listed = webui_local.lora_stage_target()
        return LoraStage(Path(lora_dir) if lora_dir else folder, refresh, listed)
    return None


def preview_request(spec: JobSpec, column: PreviewColumn, loras: list[LoraRef]) -> Img2ImgRequest:
    return Img2ImgRequest(
        frame_index=column.frame,
        init_image=column.init,
        control_image=column.control,
        prompt=spec.prompt,
        negative_prompt=spec.negative_prompt,
        checkpoint=spec.model.checkpoint,
        loras=loras,
        controlnet=spec.controlnet,
        width=spec.size.width,
        height=spec.size.height,
        denoise=spec.sampling.denoise,
        steps=spec.sampling.steps,
        cfg_scale=spec.sampling.cfg_scale,
        sampler=spec.sampling.sampler,
        scheduler=spec.sampling.scheduler,
        seed=frame_seed(spec, column.frame, 0),  # one seed per frame, the same for every epoch
    )


def _render_cells(
    spec: JobSpec,
    columns: list[PreviewColumn],
    epoch_names: list[str],
    weight: float,
    backend: Backend,
    cancel: CancelToken,
    on_event: EventCallback,
) -> list[list[Image.Image]]:
    total, done = len(columns) * len(epoch_names), 0
    rows: list[list[Image.Image]] = []
    on_event(RenderEvent("stage", "render", 0, total, message=f"{len(epoch_names)} epochs x {len(columns)} frames"))
    for name in epoch_names:
        row = []
        for column in columns:
            if cancel.cancelled:
                raise Cancelled("Preview cancelled; nothing was written.")
            loras = list(spec.model.loras) + [LoraRef(name=name, weight=weight)]
            image = backend.img2img(preview_request(spec, column, loras)).image.convert("RGB")
            # Kept at cell size only: many epochs x frames at full size would hold hundreds of MB.
            row.append(image.resize(preview_cell_size(spec.size.width, spec.size.height), Image.Resampling.LANCZOS))
            done += 1
            on_event(RenderEvent("frame", "render", done, total, column.frame))
        rows.append(row)
    return rows


def render_epoch_preview(
    spec: JobSpec,
    epochs: Sequence[EpochLora],
    out_dir: Path,
    name: str,
    *,
    frames: str = "auto",
    count: int = DEFAULT_COUNT,
    lora_weight: float = 0.8,
    run_label: str = "run",
    title: str = "",
    webui_lora_dir: Path | None = None,
    webui_auth: str | None = None,
    backend_factory: BackendFactory | None = None,
    cancel: CancelToken | None = None,
    on_event: EventCallback = _noop,
) -> EpochPreview:
    """Render every epoch on the chosen frames; write OUT_DIR/NAME.png and OUT_DIR/NAME.html.

    Checks that need no rendering run first (epochs, base model, frames); the two files are
    written only when every cell rendered, so a failed or cancelled preview leaves nothing.
    """
    cancel = cancel or CancelToken()
    epochs = sorted(epochs, key=lambda e: e.epoch)
    check_epochs(epochs, run_label)
    check_out_dir(out_dir)
    if not spec.source.path:
        raise UserInputError("No source video given; give the video to preview the epochs on.")
    check_families(epochs, checkpoint_family(spec), spec.model.checkpoint)
    spec = spec.resolved()  # one fixed seed for the whole grid
    on_event(RenderEvent("stage", "prepare", message="choosing frames"))
    chosen = choose_frames(spec.source.path, spec.source, spec.controlnet, frames, count)
    columns = read_columns(spec, chosen)
    stage = _stage_for(spec, webui_lora_dir, webui_auth)
    backend: Backend | None = None
    staged: list[str] = []
    try:
        if stage is not None:
            staged = stage.offer((staged_name(run_label, e.epoch), e.path) for e in epochs)
            names = staged
        else:
            names = [str(e.path) for e in epochs]
        # The first epoch stands in for all in preflight, which then checks the LoRA route too.
        checked = spec.with_overrides(
            {"model.loras": [*(r.dict() for r in spec.model.loras), {"name": names[0], "weight": lora_weight}]}
        )
        on_status = lambda msg: on_event(RenderEvent("status", "render", message=msg))  # noqa: E731
        if backend_factory is not None:
            backend = backend_factory(checked, on_status)
        else:
            backend = create_backend(checked, on_status, webui_auth=webui_auth)
        on_event(RenderEvent("stage", "preflight", message=f"checking the {backend.name} backend"))
        backend.preflight()
        cells = _render_cells(spec, columns, names, lora_weight, backend, cancel, on_event)
    except (KeyboardInterrupt, Cancelled):
        if backend is not None:
            backend.interrupt()
        raise Cancelled("Preview cancelled; nothing was written.") from None
    finally:
        if backend is not None:
            backend.close()
        if stage is not None:
            stage.close()
    cell = preview_cell_size(spec.size.width, spec.size.height)
    grid = draw_grid(columns, epochs, cells, cell)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    grid_path, html_path = out_dir / f"{name}.png", out_dir / f"{name}.html"
    with atomic_path(grid_path) as tmp:
        grid.save(tmp, format="PNG")
    write_text(html_path, page_html(spec, columns, epochs, cells, cell, title or name, lora_weight))
    return EpochPreview(
        grid_path, html_path, [c.frame for c in columns], [e.epoch for e in epochs], cell, spec.sampling.seed, staged
    )


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


def row_labels(epochs: Sequence[EpochLora]) -> list[tuple[str, str]]:
    """(title, detail) per row: source, canny, then each epoch with its validation loss."""
    labels = [("source", "fitted to the job size"), ("canny", "control map")]
    for item in epochs:
        loss = f"val loss {item.val_loss:.4f}" if item.val_loss is not None else "val loss —"
        labels.append((f"epoch {item.epoch}", loss))
    return labels


def draw_grid(
    columns: Sequence[PreviewColumn],
    epochs: Sequence[EpochLora],
    cells: Sequence[Sequence[Image.Image]],
    cell: tuple[int, int],
) -> Image.Image:
    rows = [[c.init for c in columns], [c.control for c in columns], *cells]
    return draw_rows([f"frame {c.frame}" for c in columns], row_labels(epochs), rows, cell)


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


def page_html(
    spec: JobSpec,
    columns: Sequence[PreviewColumn],
    epochs: Sequence[EpochLora],
    cells: Sequence[Sequence[Image.Image]],
    cell: tuple[int, int],
    title: str,
    weight: float,
) -> str:
    esc = html.escape
    rows = [[c.init for c in columns], [c.control for c in columns], *cells]
    notes = ["", ""] + [e.note for e in epochs]
    table = grid_table([f"frame {c.frame}" for c in columns], row_labels(epochs), rows, notes, cell)
    s = spec.sampling
    settings = (
        f"checkpoint {spec.model.checkpoint}, LoRA weight {weight:g}, seed {s.seed} ({s.seed_policy}), "
        f"{s.steps} steps, denoise {s.denoise:g}, CFG {s.cfg_scale:g}, {s.sampler}, "
        f"ControlNet {f'weight {spec.controlnet.weight:g}' if spec.controlnet.enabled else 'off'}, "
        f"{spec.size.width}x{spec.size.height}"
    )
    return f"""<!doctype html>
<html><head><meta charset="utf-8"><title>{esc(title)}: epochs on your video</title>
<style>
body {{ font-family: sans-serif; margin: 1.5em; color: #222; }}
table {{ border-collapse: collapse; }} td, th {{ padding: 2px; vertical-align: top; }}
th.row {{ text-align: left; min-width: 12em; padding-right: 1em; }} th.row span {{ color: #666; font-weight: normal; }}
code {{ font-size: 0.75em; font-weight: normal; }}
</style></head><body>
<h1>{esc(title)}: every saved epoch on frames of {esc(Path(spec.source.path).name)}</h1>
<p>Each row renders the same frames with the same seed and settings; only the epoch differs.
The validation loss is shown beside each row as one more piece of evidence: the lowest loss is not
always the epoch that looks best on your video, so judge the faces, outfits and small figures yourself.</p>
<p>Settings: {esc(settings)}.</p>
{table}
</body></html>
"""


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
