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

import html
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from PIL import Image

from .backends.base import Backend, BackendFactory
from .epoch_frames import DEFAULT_COUNT, choose_frames
from .errors import Cancelled, UserInputError
from .events import EventCallback
from .lora_stage import LoraStage, staged_name
from .preview_grid import (
    CANCELLED,
    PreviewBackend,
    PreviewColumn,
    check_out_dir,
    draw_rows,
    grid_table,
    preview_cell_size,
    preview_page,
    preview_request,
    read_columns,
    write_preview,
)
from .preview_grid import HEADER_HEIGHT as HEADER_HEIGHT  # re-exported: callers read cells back by them
from .preview_grid import LABEL_WIDTH as LABEL_WIDTH
from .render import CancelToken, RenderEvent
from .sd_architectures import checkpoint_family as file_family
from .spec import JobSpec, LoraRef

FAMILY_NAMES = {"sd15": "SD1.5", "sd2": "SD2", "sdxl": "SDXL"}
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


def checkpoint_family(spec: JobSpec) -> str | None:
    """The family of the checkpoint the preview renders with, where this process can read it (diffusers)."""
    if spec.backend.kind not in ("diffusers", "ray"):  # ray: diffusers in actors, same checkpoint path
        return None  # a WebUI's checkpoint files are its own; the WebUI itself reports a mismatch
    try:
        from .backends.diffusers import resolve_checkpoint

        return file_family(resolve_checkpoint(spec.model.checkpoint).path)
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
                raise Cancelled(CANCELLED)
            loras = list(spec.model.loras) + [LoraRef(name=name, weight=weight)]
            image = backend.img2img(preview_request(spec, column, loras)).image.convert("RGB")
            # Kept at cell size only: many epochs x frames at full size would hold hundreds of MB.
            row.append(image.resize(preview_cell_size(spec.size.width, spec.size.height), Image.Resampling.LANCZOS))
            done += 1
            on_event(RenderEvent("frame", "render", done, total, column.frame))
        rows.append(row)
    return rows


_LORA_SUFFIXES = (".safetensors", ".pt", ".ckpt")


def _is_run_lora(name: str, run_label: str, epochs: Sequence[EpochLora]) -> bool:
    """Whether a LoRA (a WebUI name or a file path) is one of this run's files: its final LoRA,
    a saved epoch (kohya names them OUTPUT-NNNNNN), or an epoch staged for a WebUI earlier."""
    path = Path(name)
    stem = path.name[: -len(path.suffix)] if path.suffix.lower() in _LORA_SUFFIXES else path.name
    names = {
        run_label,
        *(f"{run_label}-{e.epoch:06d}" for e in epochs),
        *(staged_name(run_label, e.epoch) for e in epochs),
    }
    names |= {e.path.stem for e in epochs}
    if stem in names:
        return True
    try:
        return path.is_file() and any(path.samefile(e.path) for e in epochs if e.path.is_file())
    except OSError:
        return False


def without_run_loras(spec: JobSpec, run_label: str, epochs: Sequence[EpochLora]) -> tuple[JobSpec, list[str]]:
    """The spec without the LoRAs that are files of the run being compared, and their names.

    Other LoRAs (a style LoRA the video is rendered with) stay, so every row looks as the video
    would; an epoch of this run stacked on each row would blur the difference between rows.
    """
    keep = [lora for lora in spec.model.loras if not _is_run_lora(lora.name, run_label, epochs)]
    if len(keep) == len(spec.model.loras):
        return spec, []
    left_out = [lora.name for lora in spec.model.loras if lora not in keep]
    return spec.with_overrides({"model.loras": [lora.dict() for lora in keep]}), left_out


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
    spec, left_out = without_run_loras(spec, run_label, epochs)
    if left_out:
        on_event(
            RenderEvent(
                "status",
                "prepare",
                message=f"left out LoRA {', '.join(left_out)}: a file of this run would blur the comparison "
                "(each epoch is added in turn)",
            )
        )
    on_event(RenderEvent("stage", "prepare", message="choosing frames"))
    chosen = choose_frames(spec.source.path, spec.source, spec.controlnet, frames, count)
    columns = read_columns(spec, chosen)
    stage = _stage_for(spec, webui_lora_dir, webui_auth)
    staged: list[str] = []
    try:
        # The backend closes before the stage takes the epochs away again.
        with PreviewBackend(on_event, backend_factory, webui_auth) as session:
            if stage is not None:
                staged = stage.offer((staged_name(run_label, e.epoch), e.path) for e in epochs)
                names = staged
            else:
                names = [str(e.path) for e in epochs]
            # The first epoch stands in for all in preflight, which then checks the LoRA route too.
            checked = spec.with_overrides(
                {"model.loras": [*(r.dict() for r in spec.model.loras), {"name": names[0], "weight": lora_weight}]}
            )
            backend = session.open(checked)
            cells = _render_cells(spec, columns, names, lora_weight, backend, cancel, on_event)
    finally:
        if stage is not None:
            stage.close()
    cell = preview_cell_size(spec.size.width, spec.size.height)
    grid = draw_grid(columns, epochs, cells, cell)
    page = page_html(spec, columns, epochs, cells, cell, title or name, lora_weight)
    grid_path, html_path = write_preview(out_dir, name, grid, page)
    return EpochPreview(
        grid_path, html_path, [c.frame for c in columns], [e.epoch for e in epochs], cell, spec.sampling.seed, staged
    )


# --------------------------------------------------------------------------- grid image


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


# --------------------------------------------------------------------------- page


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
    body = f"""<h1>{esc(title)}: every saved epoch on frames of {esc(Path(spec.source.path).name)}</h1>
<p>Each row renders the same frames with the same seed and settings; only the epoch differs.
The validation loss is shown beside each row as one more piece of evidence: the lowest loss is not
always the epoch that looks best on your video, so judge the faces, outfits and small figures yourself.</p>
<p>Settings: {esc(settings)}.</p>
{table}"""
    return preview_page(f"{title}: epochs on your video", body, 12, "code { font-size: 0.75em; font-weight: normal; }")
