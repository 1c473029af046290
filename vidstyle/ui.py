"""The Video Stylize tab: gradio widgets over the JobManager, for the WebUI and `vidstyle ui`.

The tab holds no logic of its own. Widgets for JobSpec fields are generated from the
field declarations (`spec.field_info`: default, bounds, help, choices), every handler takes
all widget values as one tuple that `values_to_spec` turns into ONE JobSpec, and every
action is a JobManager call. Runs on gradio 3.41 (A1111's pin) and gradio 4.x (Forge): only
components and keyword arguments both accept, `gr.update` for partial updates, and progress
by a generator handler that yields the job status until the job ends (3.41 has no gr.Timer).
"""

from __future__ import annotations

import html
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Dict, Iterator, List, Mapping, Optional, Sequence, Tuple

import gradio as gr

from .errors import VidstyleError
from .manager import LIVE_STATES, RESULT_FILES, JobManager
from .render import REDO_FORBIDDEN_PREFIXES
from .spec import SAMPLERS, JobSpec, field_info, list_presets, load_spec

GRADIO_MAJOR = int(gr.__version__.split(".")[0])
POLL_SECONDS = 1.0

# Widget keys that are not JobSpec fields (they are turned into fields by values_to_spec).
UPLOAD = "ui.upload"
PRESET = "ui.preset"
JOB_NAME = "ui.job_name"
LORA_NAMES = "ui.lora_names"
LORA_WEIGHT = "ui.lora_weight"
WEBUI_URLS = "ui.webui_urls"

# Nicer labels than the field names; help, bounds and defaults still come from the spec.
LABELS = {
    "source.path": "Video path on this machine (used when nothing is uploaded)",
    "source.start_time": "Start (s)", "source.end_time": "End (s)",
    "source.start_frame": "Start frame", "source.end_frame": "End frame (exclusive)",
    "source.every_nth": "Every Nth frame", "source.target_fps": "Resample to fps",
    "size.width": "Width", "size.height": "Height", "size.fit": "Fit",
    "prompt": "Prompt", "negative_prompt": "Negative prompt",
    "model.checkpoint": "Checkpoint", "controlnet.model": "ControlNet model",
    "controlnet.enabled": "ControlNet canny", "controlnet.weight": "ControlNet weight",
    "controlnet.guidance_start": "Guidance start", "controlnet.guidance_end": "Guidance end",
    "controlnet.control_mode": "Control mode", "controlnet.low_threshold": "Canny low threshold",
    "controlnet.high_threshold": "Canny high threshold", "controlnet.blur": "Blur before canny",
    "controlnet.preprocessor": "Canny map from", "controlnet.pixel_perfect": "Pixel perfect",
    "sampling.denoise": "Denoising strength", "sampling.steps": "Sampling steps", "sampling.cfg_scale": "CFG scale",
    "sampling.sampler": "Sampler", "sampling.scheduler": "Schedule type", "sampling.seed": "Seed",
    "sampling.seed_policy": "Seed policy", "encode.crf": "Video quality (CRF)", "encode.preset": "Encoder speed", "encode.fps": "Output fps",
    "encode.keep_audio": "Keep audio", "backend.kind": "Render with", "backend.device": "Device",
    "model.loras.weight": "LoRA weight",
}
# Slider steps where 1/100 of the range is not what a user wants.
STEPS = {"sampling.cfg_scale": 0.5, "controlnet.weight": 0.05, "sampling.denoise": 0.01}
# Numbers with a range this wide get a number box instead of a slider (seeds, timeouts).
MAX_SLIDER_SPAN = 4096
# Optional numbers where an empty box (or 0, which gradio 3 sends for a cleared box) means "not set".
UNSET_WHEN_ZERO = {"source.start_time", "source.end_time", "source.start_frame", "source.end_frame",
                   "source.target_fps", "encode.fps"}


@dataclass
class UiChoices:
    """What the host offers in the pickers; callables so a refresh button can ask again."""

    checkpoints: Callable[[], List[str]]
    loras: Callable[[], List[str]]
    controlnet_models: Callable[[], List[str]]
    samplers: Callable[[], List[str]] = field(default=lambda: list(SAMPLERS))
    default_preset: str = "anime-canny-sd15"
    gallery_size: int = 8
    # None: the tab shows a backend picker (standalone); else every job uses this kind (e.g. webui_local).
    backend_kind: Optional[str] = None


# --------------------------------------------------------------------------- pure helpers


def _kind(dotted: str) -> Optional[type]:
    """bool, int, float or str for a field (pydantic gives constrained subclasses such as ConstrainedIntValue)."""
    declared = field_info(dotted)["type"]
    if isinstance(declared, type):
        for base in (bool, int, float, str):  # bool first: it is an int subclass
            if issubclass(declared, base):
                return base
    return None


def _is_unset(value: Any) -> bool:
    return value is None or (isinstance(value, str) and not value.strip())


def _clean(dotted: str, value: Any) -> Any:
    """Widget value -> spec value: empty optional boxes unset, whole floats to int fields."""
    if dotted in UNSET_WHEN_ZERO and (_is_unset(value) or value == 0):
        return None
    if _kind(dotted) is int and isinstance(value, float) and value.is_integer():
        return int(value)
    return value


def values_to_spec(values: Mapping[str, Any], backend_kind: Optional[str] = None) -> JobSpec:
    """THE one place widget values become a JobSpec: preset + every widget as an override.

    `values` maps dotted JobSpec names (and the ui.* keys above) to widget values; fields
    without a widget keep the preset's value. Raises SpecError naming the bad key.
    """
    overrides: Dict[str, Any] = {}
    for key, value in values.items():
        if key.startswith("ui."):
            continue
        overrides[key] = _clean(key, value)
    upload = values.get(UPLOAD)
    if upload:
        overrides["source.path"] = str(getattr(upload, "name", upload))  # gradio 3 files carry .name
    elif isinstance(overrides.get("source.path"), str):
        overrides["source.path"] = overrides["source.path"].strip()
    if LORA_NAMES in values:
        weight = float(values.get(LORA_WEIGHT) or 0.8)
        overrides["model.loras"] = [{"name": name, "weight": weight} for name in values[LORA_NAMES] or []]
    if WEBUI_URLS in values:
        text = values.get(WEBUI_URLS) or ""
        overrides["backend.webui_urls"] = [u.strip() for u in text.replace(",", "\n").splitlines() if u.strip()]
    if backend_kind:
        overrides["backend.kind"] = backend_kind
    return load_spec(values.get(PRESET) or None, overrides)


def spec_to_values(spec: JobSpec, keys: Sequence[str]) -> Dict[str, Any]:
    """The inverse, for loading a preset into the widgets."""
    data = spec.dict()
    values: Dict[str, Any] = {}
    for key in keys:
        if key == LORA_NAMES:
            values[key] = [lora.name for lora in spec.model.loras]
        elif key == LORA_WEIGHT:
            values[key] = spec.model.loras[0].weight if spec.model.loras else 0.8
        elif key == WEBUI_URLS:
            values[key] = "\n".join(spec.backend.webui_urls)
        elif not key.startswith("ui."):
            node: Any = data
            for part in key.split("."):
                node = node[part]
            values[key] = node
    return values


def redo_overrides(spec: JobSpec) -> Dict[str, Any]:
    """The settings a redo may change (prompt, models, ControlNet strength, sampling), as dotted keys."""
    flat: Dict[str, Any] = {}

    def walk(prefix: str, node: Any) -> None:
        if isinstance(node, dict):
            for key, value in node.items():
                walk(f"{prefix}{key}." if isinstance(value, dict) else f"{prefix}{key}", value)
        else:
            flat[prefix] = node

    walk("", spec.dict())
    allowed = {k: v for k, v in flat.items() if not k.startswith(REDO_FORBIDDEN_PREFIXES) and k != "version"}
    if allowed.get("sampling.seed") == -1:
        allowed.pop("sampling.seed")  # -1 would mean "pick one"; a redo keeps the job's seed instead
    return allowed


def _eta(seconds: Optional[float]) -> str:
    if seconds is None:
        return "–"
    seconds = int(round(seconds))
    if seconds >= 3600:
        return f"{seconds // 3600}:{seconds % 3600 // 60:02d}:{seconds % 60:02d}"
    return f"{seconds // 60}:{seconds % 60:02d}"


def status_html(status: Optional[Mapping[str, Any]], error: str = "", note: str = "") -> str:
    """The progress box: state, a progress bar, frames, speed, ETA and the latest message."""
    if error:
        return (f'<div class="vidstyle-status vidstyle-error" style="color:#dc2626">'
                f"<b>Error:</b> {html.escape(error)}</div>")
    if not status:
        return f'<div class="vidstyle-status">{html.escape(note or "No job selected.")}</div>'
    frames, done = int(status.get("frames") or 0), int(status.get("done") or 0)
    fps = status.get("fps")
    speed = f"{fps:.2f} frames/s" if fps else "–"
    failed = f", {status['failed']} failed" if status.get("failed") else ""
    return (
        f'<div class="vidstyle-status" data-state="{html.escape(str(status.get("state")))}">'
        f'<b>{html.escape(str(status.get("id")))}</b>: {html.escape(str(status.get("state")))}'
        f'<br><progress value="{done}" max="{max(frames, 1)}" style="width:100%;height:1.1em"></progress>'
        f"<br>{done}/{frames} frames{failed} · {speed} · ETA {_eta(status.get('eta_seconds'))}"
        f'<br><small>{html.escape(str(status.get("message") or ""))}</small></div>'
    )


def jobs_markdown(jobs: List[Mapping[str, Any]]) -> str:
    if not jobs:
        return "No jobs yet."
    rows = ["| job | state | frames | message |", "|---|---|---|---|"]
    for job in jobs:
        message = str(job.get("message") or "").replace("|", "/")[:120]
        rows.append(f"| {job['id']} | {job.get('state')} | {job.get('done', 0)}/{job.get('frames', 0)} | {message} |")
    return "\n".join(rows)


def _report_text(path: Optional[Path]) -> str:
    if path is None:
        return ""
    lines = path.read_text(encoding="utf-8").splitlines()
    return "\n".join(line for line in lines if not line.startswith("!["))  # the sheet is shown as an image


# --------------------------------------------------------------------------- widgets


def _slider_step(dotted: str, info: Mapping[str, Any]) -> float:
    if dotted in STEPS:
        return STEPS[dotted]
    if _kind(dotted) is int:
        return info.get("multiple_of") or 1
    return 0.01


_NO_VALUE = object()


def spec_widget(dotted: str, choices: Optional[List[str]] = None, value: Any = _NO_VALUE, **extra: Any) -> Any:
    """One widget for one JobSpec field: kind, label, help, bounds and default from its declaration.

    `value` (e.g. from a preset) replaces the declared default as the initial value.
    """
    info = field_info(dotted)
    kwargs: Dict[str, Any] = {"label": LABELS.get(dotted, dotted.split(".")[-1].replace("_", " ").capitalize()),
                              "elem_id": "vidstyle_" + dotted.replace(".", "_")}
    help_text = info["help"]
    default = info["default"] if value is _NO_VALUE else value
    kind = _kind(dotted)
    if choices is not None or info["choices"]:
        options = list(choices if choices is not None else info["choices"])
        custom = choices is not None  # host-provided lists may lag behind what the user has
        if custom and default not in options and default:
            options = options + [default]
        widget = gr.Dropdown(choices=options, value=default, allow_custom_value=custom, info=help_text, **kwargs, **extra)
    elif kind is bool:
        widget = gr.Checkbox(value=bool(default), info=help_text, **kwargs, **extra)
    elif kind in (int, float):
        low = info.get("ge", info.get("gt"))
        high = info.get("le", info.get("lt"))
        if low is not None and high is not None and high - low <= MAX_SLIDER_SPAN and default is not None:
            widget = gr.Slider(minimum=low, maximum=high, step=_slider_step(dotted, info), value=default,
                               info=help_text, **kwargs, **extra)
        else:
            widget = gr.Number(value=default, precision=0 if kind is int else None, info=help_text, **kwargs, **extra)
    else:
        widget = gr.Textbox(value=default or "", info=help_text, **kwargs, **extra)
    return widget


def _union(first: List[str], more: List[str]) -> List[str]:
    return list(first) + [name for name in more if name not in first]


def _update(**kwargs: Any) -> Any:
    return gr.update(**kwargs)


def _event_kwargs() -> Dict[str, Any]:
    """Long-polling handlers must not block each other (gradio 4 limits each event to 1 by default)."""
    return {"concurrency_limit": None} if GRADIO_MAJOR >= 4 else {}


class _Tab:
    """Builds the widgets and wires each one to a JobManager call."""

    def __init__(self, manager: JobManager, choices: UiChoices) -> None:
        self.manager = manager
        self.choices = choices
        self.widgets: Dict[str, Any] = {}
        try:  # widgets start from the default preset, as if the user had picked it
            self.initial = load_spec(choices.default_preset)
        except VidstyleError:
            self.initial = JobSpec()

    # -- values -----------------------------------------------------------------------
    @property
    def keys(self) -> List[str]:
        return list(self.widgets)

    @property
    def inputs(self) -> List[Any]:
        return list(self.widgets.values())

    def spec(self, values: Sequence[Any]) -> JobSpec:
        return values_to_spec(dict(zip(self.keys, values)), self.choices.backend_kind)

    def add(self, dotted: str, choices: Optional[List[str]] = None, **extra: Any) -> Any:
        initial = spec_to_values(self.initial, [dotted])[dotted]
        self.widgets[dotted] = spec_widget(dotted, choices, value=initial, **extra)
        return self.widgets[dotted]

    # -- layout -----------------------------------------------------------------------
    def build(self) -> Any:
        with gr.Blocks(analytics_enabled=False) as tab:
            with gr.Row():
                with gr.Column(scale=3):
                    self._source_panel()
                    self._prompt_panel()
                    self._controlnet_panel()
                    self._sampling_panel()
                    self._output_panel()
                with gr.Column(scale=2):
                    self._run_panel()
            self._wire()
        return tab

    def _source_panel(self) -> None:
        with gr.Row():
            self.widgets[PRESET] = gr.Dropdown(choices=list_presets(), value=self.choices.default_preset,
                                               label="Preset", elem_id="vidstyle_preset",
                                               info="Loads its settings into the widgets below.")
            self.widgets[JOB_NAME] = gr.Textbox(label="Job name (optional)", elem_id="vidstyle_job_name",
                                                info="Folder name of the job; default: video name + time.")
        self.widgets[UPLOAD] = gr.Video(label="Video", height=280, elem_id="vidstyle_video")
        self.add("source.path")
        self.source_info = gr.Markdown("", elem_id="vidstyle_source_info")
        with gr.Accordion("Frame range and fps", open=False):
            with gr.Row():
                self.add("source.start_frame")
                self.add("source.end_frame")
                self.add("source.every_nth")
            with gr.Row():
                self.add("source.start_time")
                self.add("source.end_time")
                self.add("source.target_fps")

    def _prompt_panel(self) -> None:
        self.add("prompt", lines=3)
        self.add("negative_prompt", lines=2)
        with gr.Row():
            self.add("model.checkpoint", self.choices.checkpoints())
            self.add("controlnet.model", self.choices.controlnet_models())
            self.refresh_models = gr.Button("Refresh lists", elem_id="vidstyle_refresh_models", scale=0)
        with gr.Row():
            names = [lora.name for lora in self.initial.model.loras]
            # gradio 3 refuses custom values in a multiselect: preset LoRAs join the choices instead.
            self.widgets[LORA_NAMES] = gr.Dropdown(choices=_union(self.choices.loras(), names), value=names,
                                                   multiselect=True, label="LoRAs", elem_id="vidstyle_loras",
                                                   info=field_info("model.loras")["help"])
            weight = self.initial.model.loras[0].weight if self.initial.model.loras else _NO_VALUE
            self.widgets[LORA_WEIGHT] = spec_widget("model.loras.weight", value=weight)

    def _controlnet_panel(self) -> None:
        with gr.Accordion("ControlNet canny", open=True):
            with gr.Row():
                self.add("controlnet.enabled")
                self.add("controlnet.weight")
                self.add("controlnet.control_mode")
            with gr.Row():
                self.add("controlnet.guidance_start")
                self.add("controlnet.guidance_end")
            with gr.Row():
                with gr.Column():
                    self.add("controlnet.low_threshold")
                    self.add("controlnet.high_threshold")
                    self.add("controlnet.blur")
                    self.canny_frame = gr.Slider(minimum=0, maximum=1, step=1, value=0, label="Preview frame",
                                                 elem_id="vidstyle_canny_frame",
                                                 info="Source frame shown through the canny settings.")
                self.canny_image = gr.Image(label="Canny preview", type="numpy", interactive=False, height=280,
                                            elem_id="vidstyle_canny_preview")
            with gr.Row():
                self.add("controlnet.preprocessor")
                self.add("controlnet.pixel_perfect")

    def _sampling_panel(self) -> None:
        with gr.Accordion("Size and sampling", open=True):
            with gr.Row():
                self.add("size.width")
                self.add("size.height")
                self.add("size.fit")
            with gr.Row():
                self.add("sampling.denoise")
                self.add("sampling.cfg_scale")
                self.add("sampling.steps")
            with gr.Row():
                self.add("sampling.sampler", self.choices.samplers())
                self.add("sampling.scheduler")
                self.add("sampling.seed")
                self.add("sampling.seed_policy")

    def _output_panel(self) -> None:
        with gr.Accordion("Output and backend", open=False):
            with gr.Row():
                self.add("encode.crf")
                self.add("encode.preset")
                self.add("encode.fps")
                self.add("encode.keep_audio")
            if self.choices.backend_kind is None:
                with gr.Row():
                    self.add("backend.kind")
                    self.add("backend.device")
                self.widgets[WEBUI_URLS] = gr.Textbox(label="WebUI URLs (for the webui_api backend)", lines=2,
                                                      elem_id="vidstyle_webui_urls",
                                                      info=field_info("backend.webui_urls")["help"])

    def _run_panel(self) -> None:
        with gr.Row():
            self.preview_button = gr.Button("Preview 3 frames", elem_id="vidstyle_preview")
            self.render_button = gr.Button("Render", variant="primary", elem_id="vidstyle_render")
        self.status = gr.HTML(status_html(None), elem_id="vidstyle_status")
        self.gallery = gr.Gallery(label="Latest frames", columns=4, height=300, object_fit="contain",
                                  elem_id="vidstyle_gallery")
        with gr.Row():
            jobs = self._jobs()
            self.job_select = gr.Dropdown(choices=[j["id"] for j in jobs], value=jobs[0]["id"] if jobs else None,
                                          label="Job", elem_id="vidstyle_job", allow_custom_value=True,
                                          info="Earlier and running jobs in this output folder.")
            self.refresh_jobs = gr.Button("Refresh", elem_id="vidstyle_refresh_jobs", scale=0)
        with gr.Row():
            self.show_button = gr.Button("Show", elem_id="vidstyle_show")
            self.cancel_button = gr.Button("Cancel", variant="stop", elem_id="vidstyle_cancel")
            self.resume_button = gr.Button("Resume", elem_id="vidstyle_resume")
        with gr.Row():
            self.redo_frames = gr.Textbox(label="Redo frames", placeholder="10-20,45", elem_id="vidstyle_redo_frames",
                                          info="Render these frames again (earlier attempts are kept).")
            self.redo_with_settings = gr.Checkbox(value=False, label="with the prompt, model and sampling above",
                                                  elem_id="vidstyle_redo_settings")
            self.redo_button = gr.Button("Redo", elem_id="vidstyle_redo", scale=0)
        self.result_video = gr.Video(label="Result", interactive=False, elem_id="vidstyle_result")
        self.compare_video = gr.Video(label="Source | canny | result", interactive=False, elem_id="vidstyle_compare")
        self.contact_sheet = gr.Image(label="Contact sheet", type="filepath", interactive=False, height=320,
                                      elem_id="vidstyle_contact_sheet")
        self.files = gr.File(label="Downloads", file_count="multiple", interactive=False, elem_id="vidstyle_files")
        self.report = gr.Markdown("", elem_id="vidstyle_report")
        self.jobs_table = gr.Markdown(jobs_markdown(jobs), elem_id="vidstyle_jobs")

    # -- handlers: each one calls the manager ----------------------------------------------
    def _jobs(self) -> List[Dict[str, Any]]:
        try:
            return self.manager.list_jobs()
        except (VidstyleError, OSError):
            return []

    def on_preset(self, preset: str) -> List[Any]:
        keys = self._preset_keys()
        try:
            values = spec_to_values(load_spec(preset), keys)
        except VidstyleError as err:
            return [_update() for _ in keys] + [status_html(None, str(err))]
        updates = []
        for key in keys:
            if key == LORA_NAMES:
                updates.append(_update(choices=_union(self.choices.loras(), values[key]), value=values[key]))
            else:
                updates.append(_update(value=values[key]))
        return updates + [status_html(None, note=f"Loaded preset {preset}.")]

    def _preset_keys(self) -> List[str]:
        return [k for k in self.keys if k not in (UPLOAD, PRESET, JOB_NAME, "source.path")]

    def preset_outputs(self) -> List[Any]:
        return [self.widgets[k] for k in self._preset_keys()] + [self.status]

    def on_source(self, *values: Any) -> Tuple[Any, Any]:
        merged = dict(zip(self.keys, values))
        path = merged.get(UPLOAD) or merged.get("source.path")
        if not path:
            return "", _update()
        try:
            info = self.manager.source_info(str(getattr(path, "name", path)))
        except VidstyleError as err:
            return f"**{html.escape(str(err))}**", _update()
        text = (f"{info['width']}×{info['height']}, {info['fps']:.3f} fps, {info['frame_count']} frames, "
                f"{info['duration']:.2f} s, audio: {'yes' if info['audio'] else 'no'}")
        return text, _update(maximum=max(1, info["frame_count"] - 1), value=0)

    def on_canny(self, frame_index: float, *values: Any) -> Tuple[Any, str]:
        try:
            spec = self.spec(values)
            if not spec.source.path:
                return None, _update()
            return self.manager.canny_preview(spec, int(frame_index or 0)), _update()
        except VidstyleError as err:
            return None, status_html(None, str(err))

    def on_preview(self, *values: Any) -> Tuple[Any, str]:
        try:
            paths = self.manager.preview(self.spec(values))
        except VidstyleError as err:
            return _update(), status_html(None, str(err))
        gallery = [(str(p), f"frame {int(p.stem.split('_')[-1])}") for p in paths]
        return gallery, status_html(None, note="Preview: the first, middle and last frame of the selection.")

    def on_render(self, *values: Any) -> Tuple[Any, str, str]:
        merged = dict(zip(self.keys, values))
        try:
            spec = self.spec(values)
            upload = merged.get(UPLOAD)
            if upload:  # gradio's temp copy may be cleaned up; the job keeps its own
                name = str(getattr(upload, "name", upload))
                with open(name, "rb") as stream:
                    stored = self.manager.save_upload(stream, Path(name).name)
                spec = spec.with_overrides({"source.path": str(stored)})
            job_id = self.manager.submit(spec, (merged.get(JOB_NAME) or "").strip() or None)
        except VidstyleError as err:
            return _update(), status_html(None, str(err)), ""
        except OSError as err:
            return _update(), status_html(None, f"Cannot read the uploaded video: {err.strerror}."), ""
        return self._job_choices(job_id), status_html(self.manager.status(job_id)), job_id

    def _job_choices(self, selected: Optional[str]) -> Any:
        jobs = self._jobs()
        return _update(choices=[j["id"] for j in jobs], value=selected)

    def on_cancel(self, job_id: str) -> str:
        try:
            return status_html(self.manager.cancel(job_id))
        except VidstyleError as err:
            return status_html(None, str(err))

    def on_resume(self, job_id: str) -> Tuple[str, str]:
        try:
            return status_html(self.manager.resume(job_id)), job_id
        except VidstyleError as err:
            return status_html(None, str(err)), ""

    def on_redo(self, job_id: str, frames: str, with_settings: bool, *values: Any) -> Tuple[str, str]:
        try:
            overrides = redo_overrides(self.spec(values)) if with_settings else {}
            return status_html(self.manager.redo(job_id, frames or "", overrides)), job_id
        except VidstyleError as err:
            return status_html(None, str(err)), ""

    def on_refresh_jobs(self, selected: Optional[str]) -> Tuple[Any, str]:
        jobs = self._jobs()
        ids = [j["id"] for j in jobs]
        return _update(choices=ids, value=selected if selected in ids else (ids[0] if ids else None)), jobs_markdown(jobs)

    def on_refresh_models(self) -> List[Any]:
        return [
            _update(choices=self.choices.checkpoints()),
            _update(choices=self.choices.controlnet_models()),
            _update(choices=self.choices.loras()),
            _update(choices=self.choices.samplers()),
        ]

    def watch(self, job_id: str) -> Iterator[List[Any]]:
        """Yield status, latest frames and (at the end) results until the job stops."""
        if not job_id:
            yield [_update()] * 8
            return
        last: Any = None
        while True:
            try:
                status = self.manager.status(job_id)
            except VidstyleError as err:
                yield [status_html(None, str(err))] + [_update()] * 7
                return
            live = status["state"] in LIVE_STATES
            snapshot = (status["state"], status["done"], status["message"], status["latest_frame"])
            if snapshot != last:
                last = snapshot
                yield self._status_outputs(status, final=not live)
            if not live:
                return
            time.sleep(POLL_SECONDS)

    def _status_outputs(self, status: Mapping[str, Any], final: bool) -> List[Any]:
        recent = sorted(list(status.get("recent_frames") or [])[-self.choices.gallery_size:])
        gallery = [(p, f"frame {int(Path(p).stem)}") for p in recent]
        outputs: List[Any] = [status_html(status), gallery if gallery else _update()]
        if not final:
            return outputs + [_update()] * 6
        files = {name: self._file(status["id"], name) for name in RESULT_FILES}
        return outputs + [
            str(files["result.mp4"]) if files["result.mp4"] else None,
            str(files["compare.mp4"]) if files["compare.mp4"] else None,
            str(files["report/contact_sheet.png"]) if files["report/contact_sheet.png"] else None,
            [str(p) for p in files.values() if p is not None] or None,
            _report_text(files["report/report.md"]),
            jobs_markdown(self._jobs()),
        ]

    def _file(self, job_id: str, name: str) -> Optional[Path]:
        try:
            return self.manager.file_path(job_id, name)
        except VidstyleError:
            return None

    # -- wiring -----------------------------------------------------------------------
    def _wire(self) -> None:
        watch_outputs = [self.status, self.gallery, self.result_video, self.compare_video, self.contact_sheet,
                         self.files, self.report, self.jobs_table]
        current = gr.Textbox(visible=False, elem_id="vidstyle_current_job")  # the job the generator follows
        self.current_job = current
        inputs = self.inputs
        self.widgets[PRESET].change(self.on_preset, [self.widgets[PRESET]], self.preset_outputs())
        for source in (self.widgets[UPLOAD], self.widgets["source.path"]):
            source.change(self.on_source, inputs, [self.source_info, self.canny_frame])
        canny_triggers = [self.canny_frame, self.widgets["controlnet.low_threshold"],
                          self.widgets["controlnet.high_threshold"], self.widgets["controlnet.blur"],
                          self.widgets[UPLOAD], self.widgets["source.path"], self.widgets["size.fit"]]
        for trigger in canny_triggers:
            trigger.change(self.on_canny, [self.canny_frame] + inputs, [self.canny_image, self.status])
        self.refresh_models.click(self.on_refresh_models, None, [
            self.widgets["model.checkpoint"], self.widgets["controlnet.model"], self.widgets[LORA_NAMES],
            self.widgets["sampling.sampler"]])
        self.preview_button.click(self.on_preview, inputs, [self.gallery, self.status])
        self.render_button.click(self.on_render, inputs, [self.job_select, self.status, current]).then(
            self.watch, [current], watch_outputs, show_progress="hidden", **_event_kwargs())
        self.show_button.click(lambda job_id: job_id, [self.job_select], [current]).then(
            self.watch, [current], watch_outputs, show_progress="hidden", **_event_kwargs())
        self.cancel_button.click(self.on_cancel, [self.job_select], [self.status], queue=False)
        self.resume_button.click(self.on_resume, [self.job_select], [self.status, current]).then(
            self.watch, [current], watch_outputs, show_progress="hidden", **_event_kwargs())
        self.redo_button.click(self.on_redo, [self.job_select, self.redo_frames, self.redo_with_settings] + inputs,
                               [self.status, current]).then(
            self.watch, [current], watch_outputs, show_progress="hidden", **_event_kwargs())
        self.refresh_jobs.click(self.on_refresh_jobs, [self.job_select], [self.job_select, self.jobs_table])


def build_tab(manager: JobManager, choices: UiChoices) -> Any:
    """The Video Stylize tab as a gr.Blocks; the host enables the queue (the WebUI does)."""
    return _Tab(manager, choices).build()


def build_tab_parts(manager: JobManager, choices: UiChoices) -> Tuple[Any, "_Tab"]:
    """build_tab, plus the builder (its widgets dict and handlers) for tests and hosts."""
    parts = _Tab(manager, choices)
    return parts.build(), parts
