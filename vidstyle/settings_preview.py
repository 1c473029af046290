"""Try settings before a long job: a handful of frames rendered with them, in one comparison grid.

`vidstyle preview VIDEO --frames 0,120,240 [settings]`, the tab's Preview button and
POST /vidstyle/v1/preview all call `render_settings_preview`. Columns are frames, rows the
source (fitted to the job size), its canny map and the result, exactly as the job would make
them (same size, canny settings, seed per frame). Frames are chosen as the epoch preview
chooses them (`--frames auto`: spread over the clip, favouring small figures and fast motion),
and the backend, grid and page are handled by the same code (vidstyle.preview_grid).

With coherence mode `flow` (or `keyframes`) the grid also holds a short run of consecutive
frames made as the render loop makes them (vidstyle.coherence: its plan and its init images),
so how well the chain holds together is seen before hours are spent on it.
"""

from __future__ import annotations

import html
from collections.abc import Sequence
from dataclasses import dataclass, field
from dataclasses import replace as with_changes
from pathlib import Path

import numpy as np
from PIL import Image

from . import coherence
from .backends.base import Backend, BackendFactory
from .epoch_frames import DEFAULT_COUNT, choose_frames
from .errors import Cancelled, UserInputError
from .events import EventCallback
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
from .render import CancelToken, RenderEvent
from .spec import JobSpec
from .video import plan_selection, probe

FLOW_RUN_FRAMES = 4  # a chain this long already shows drift and occlusion seams
MAX_RUN_FRAMES = 9  # keyframes: one interval plus its closing keyframe, at most
ROW_LABELS = [("source", "fitted to the job size"), ("canny", "control map"), ("result", "with these settings")]


@dataclass
class SettingsPreview:
    grid_path: Path
    html_path: Path
    frames: list[int]  # frames rendered alone, as chosen
    run_frames: list[int] = field(default_factory=list)  # the consecutive run (flow / keyframes), if any
    run_mode: str = ""
    seed: int = 0
    cell_size: tuple[int, int] = (0, 0)
    notes: list[str] = field(default_factory=list)


def _noop(event: RenderEvent) -> None:
    return None


def run_length(spec: JobSpec, requested: int | None) -> tuple[int, str]:
    """(frames in the consecutive run, its mode): the job's coherence mode decides, `requested` overrides."""
    mode = spec.coherence.mode
    if requested is not None:
        if not 0 <= requested <= MAX_RUN_FRAMES:
            raise UserInputError(f"The consecutive run must have 0-{MAX_RUN_FRAMES} frames, not {requested}.")
        return (requested, mode if mode != "independent" else "flow") if requested >= 2 else (0, "")
    if mode == "flow":
        return FLOW_RUN_FRAMES, mode
    if mode == "keyframes":
        return min(spec.coherence.keyframe_interval + 1, MAX_RUN_FRAMES), mode
    return 0, ""


def _run_start(first: int, length: int, frame_count: int) -> int:
    return max(0, min(first, frame_count - length))


class _Renderer:
    """One backend, the cancel token and the progress count of one preview."""

    def __init__(
        self, spec: JobSpec, backend: Backend, cancel: CancelToken, on_event: EventCallback, total: int
    ) -> None:
        self.spec, self.backend, self.cancel, self.on_event = spec, backend, cancel, on_event
        self.done, self.total = 0, total
        self._alone: dict[int, np.ndarray] = {}  # a frame rendered alone twice (chosen and run start) is one call

    def render(self, column: PreviewColumn, init: np.ndarray | None = None, denoise: float | None = None) -> np.ndarray:
        if init is None and column.frame in self._alone:
            self.done += 1
            return self._alone[column.frame]
        if self.cancel.cancelled:
            raise Cancelled(CANCELLED)
        request = preview_request(self.spec, column, list(self.spec.model.loras))
        if init is not None:  # a guided frame: the ControlNet still sees the source frame's canny map
            request = with_changes(
                request,
                init_image=Image.fromarray(init),
                source_image=column.init,
                denoise=self.spec.sampling.denoise if denoise is None else denoise,
            )
        image = self.backend.img2img(request).image.convert("RGB")
        if image.size != (self.spec.size.width, self.spec.size.height):
            image = image.resize((self.spec.size.width, self.spec.size.height), Image.Resampling.LANCZOS)
        self.done += 1
        self.on_event(RenderEvent("frame", "render", self.done, self.total, column.frame))
        if init is None:
            self._alone[column.frame] = np.asarray(image)
        return np.asarray(image)


def render_run(
    renderer: _Renderer, spec: JobSpec, mode: str, columns: Sequence[PreviewColumn]
) -> tuple[list[np.ndarray], list[str], list[str]]:
    """Consecutive frames made as the render loop would in `mode`: (outputs, how each was made, notes)."""
    coh = spec.coherence.copy(update={"mode": mode})
    plan = coherence.plan_frames(coh, len(columns), cuts=[])  # local indices 0..n-1
    sources = {n: np.asarray(c.init) for n, c in enumerate(columns)}
    outputs: dict[int, np.ndarray] = {}
    made: list[tuple[int, str, str]] = []  # (frame, made by, step kind)
    guided = spec.copy(update={"coherence": coh})
    for step in sorted(plan.steps, key=_render_order):
        inputs = coherence.frame_inputs(step, guided, sources.__getitem__, outputs.__getitem__)
        column = columns[step.idx]
        if inputs.finished is not None:
            image = inputs.finished
        elif step.how in ("alone", "keyframe"):
            image = renderer.render(column)
        else:
            image = renderer.render(column, inputs.init, inputs.denoise)
        outputs[step.idx] = coherence.match_output(image, step, guided, outputs.__getitem__)
        made.append((step.idx, inputs.info.get("made_by", "img2img"), step.how))
    labels = {idx: _how_label(how, by) for idx, by, how in made}
    return [outputs[n] for n in range(len(columns))], [labels[n] for n in range(len(columns))], list(plan.notes)


def _render_order(step: coherence.FrameStep) -> tuple[int, int]:
    """Frames a step depends on first: keyframes before the frames filled between them."""
    return (1 if step.how == "between" else 0, step.idx)


def _how_label(how: str, made_by: str) -> str:
    """A column header short enough for a 256 px cell."""
    if how == "between":
        return "fill" if made_by == "fill" else "fill+i2i"
    return {"alone": "start", "keyframe": "key"}.get(how, how)


def render_settings_preview(
    spec: JobSpec,
    out_dir: Path,
    name: str = "preview",
    *,
    frames: str = "auto",
    count: int = DEFAULT_COUNT,
    run_frames: int | None = None,
    webui_auth: str | None = None,
    backend_factory: BackendFactory | None = None,
    cancel: CancelToken | None = None,
    on_event: EventCallback = _noop,
) -> SettingsPreview:
    """Render the chosen frames (and a consecutive run) with `spec`; write OUT_DIR/NAME.png and NAME.html.

    Both files are written only when every cell rendered, so a failed or cancelled preview leaves nothing.
    """
    cancel = cancel or CancelToken()
    if not spec.source.path:
        raise UserInputError("No source video given; give the video to preview the settings on.")
    check_out_dir(out_dir)
    spec = spec.resolved()  # one seed for the whole grid, shown on it
    length, mode = run_length(spec, run_frames)
    on_event(RenderEvent("stage", "prepare", message="choosing frames"))
    info = probe(spec.source.path, spec.source.sequence_fps)
    chosen = choose_frames(spec.source.path, spec.source, spec.controlnet, frames, count, info)
    frame_count = plan_selection(info, spec.source).frame_count
    notes: list[str] = []
    if length and frame_count < 2:
        notes.append(f"The clip has one frame, so there is no {mode} run to show.")
        length = 0
    length = min(length, frame_count)
    start = _run_start(chosen[0], length, frame_count) if length else 0
    run = list(range(start, start + length))
    by_frame = {c.frame: c for c in read_columns(spec, sorted(set(chosen) | set(run)))}
    with PreviewBackend(on_event, backend_factory, webui_auth) as session:
        backend = session.open(spec)
        total = len(chosen) + len(run)
        on_event(RenderEvent("stage", "render", 0, total, message=f"{len(chosen)} frames and a run of {len(run)}"))
        renderer = _Renderer(spec, backend, cancel, on_event, total)
        results = [renderer.render(by_frame[f]) for f in chosen]
        run_results, hows, run_notes = (
            render_run(renderer, spec, mode, [by_frame[f] for f in run]) if run else ([], [], [])
        )
        notes += run_notes
    columns = [by_frame[f] for f in chosen] + [by_frame[f] for f in run]
    headers = [f"frame {f}" for f in chosen] + [f"{f} {how}" for f, how in zip(run, hows, strict=False)]
    cells = [Image.fromarray(image) for image in results + run_results]
    rows = [[c.init for c in columns], [c.control for c in columns], cells]
    cell = preview_cell_size(spec.size.width, spec.size.height)
    table = grid_table(headers, ROW_LABELS, rows, ["", "", ""], cell)
    grid_path, html_path = write_preview(
        out_dir, name, draw_rows(headers, ROW_LABELS, rows, cell), settings_page(spec, table, mode, run, notes)
    )
    return SettingsPreview(
        grid_path, html_path, list(chosen), run, mode if run else "", spec.sampling.seed, cell, notes
    )


def settings_page(spec: JobSpec, table: str, mode: str, run: Sequence[int], notes: Sequence[str]) -> str:
    esc = html.escape
    run_text = (
        (
            f"<p>Frames {run[0]}-{run[-1]} are a consecutive run made as the job's {esc(mode)} mode makes them "
            "(each column's header says how the frame was made: start of the chain, flow from the previous output, "
            "key(frame), fill from the keyframes, or fill+i2i when the fill covered too little).</p>"
        )
        if run
        else ""
    )
    notes_html = "".join(f"<p>{esc(note)}</p>" for note in notes)
    title = f"Settings preview: {Path(spec.source.path).name}"
    body = f"""<h1>{esc(title)}</h1>
<p>Every frame renders with the settings below and its own seed, as the job would render it.</p>
{run_text}{notes_html}
{table}
<h2>Settings</h2>
<pre>{esc(spec.to_toml())}</pre>"""
    return preview_page(title, body, 10, "pre { background: #f6f6f6; padding: .8em; font-size: .85em; }")
