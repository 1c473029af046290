"""The Video Stylize tab: gradio widgets over the JobManager, for the WebUI and `vidstyle ui`.

The tab holds no logic of its own. Widgets for JobSpec fields are generated from the
field declarations (`spec.field_info`: default, bounds, help, choices), every handler takes
all widget values as one tuple that `values_to_spec` turns into ONE JobSpec, and every
action is a JobManager call. Runs on gradio 3.41 (A1111's pin) and gradio 4.x (Forge): only
components and keyword arguments both accept, `gr.update` for partial updates, and progress
by a generator handler that yields the job status until the job ends (3.41 has no gr.Timer).
What needs no gradio (widget values <-> JobSpec, the status text) is in tab_values.py and tab_status.py.
"""

from __future__ import annotations

import html
import time
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import gradio as gr

from .errors import VidstyleError
from .manager import LIVE_STATES, RESULT_FILES, JobManager
from .spec import JobSpec, field_info, list_presets, load_spec
from .tab_status import jobs_markdown, report_frame, report_text, status_html
from .tab_values import (
    JOB_NAME,
    LABELS,
    LORA_NAMES,
    LORA_WEIGHT,
    MAX_SLIDER_SPAN,
    MODEL_PICKERS,
    NONE_FOUND,
    PRESET,
    UPLOAD,
    WEBUI_URLS,
    UiChoices,
    existing_model,
    field_kind,
    redo_overrides,
    slider_step,
    spec_to_values,
    union_of,
    values_to_spec,
)

GRADIO_MAJOR = int(gr.__version__.split(".")[0])
POLL_SECONDS = 1.0


# --------------------------------------------------------------------------- widgets


_NO_VALUE = object()


def spec_widget(dotted: str, choices: list[str] | None = None, value: Any = _NO_VALUE, **extra: Any) -> Any:
    """One widget for one JobSpec field: kind, label, help, bounds and default from its declaration.

    `value` (e.g. from a preset) replaces the declared default as the initial value.
    """
    info = field_info(dotted)
    kwargs: dict[str, Any] = {
        "label": LABELS.get(dotted, dotted.split(".")[-1].replace("_", " ").capitalize()),
        "elem_id": "vidstyle_" + dotted.replace(".", "_"),
    }
    help_text = info["help"]
    default = info["default"] if value is _NO_VALUE else value
    kind = field_kind(dotted)
    if choices is not None or info["choices"]:
        options = list(choices if choices is not None else info["choices"])
        custom = choices is not None  # host-provided lists may lag behind what the user has
        if custom and default not in options and default:
            options = options + [default]
        if custom and not options:
            help_text = NONE_FOUND + help_text
        widget = gr.Dropdown(
            choices=options, value=default, allow_custom_value=custom, info=help_text, **kwargs, **extra
        )
    elif kind is bool:
        widget = gr.Checkbox(value=bool(default), info=help_text, **kwargs, **extra)
    elif kind in (int, float):
        low = info.get("ge", info.get("gt"))
        high = info.get("le", info.get("lt"))
        if low is not None and high is not None and high - low <= MAX_SLIDER_SPAN and default is not None:
            widget = gr.Slider(
                minimum=low,
                maximum=high,
                step=slider_step(dotted, info),
                value=default,
                info=help_text,
                **kwargs,
                **extra,
            )
        else:
            widget = gr.Number(value=default, precision=0 if kind is int else None, info=help_text, **kwargs, **extra)
    else:
        widget = gr.Textbox(value=default or "", info=help_text, **kwargs, **extra)
    return widget


def _update(**kwargs: Any) -> Any:
    return gr.update(**kwargs)


def _event_kwargs() -> dict[str, Any]:
    """Long-polling handlers must not block each other (gradio 4 limits each event to 1 by default)."""
    return {"concurrency_limit": None} if GRADIO_MAJOR >= 4 else {}


class _Tab:
    """Builds the widgets and wires each one to a JobManager call."""

    def __init__(self, manager: JobManager, choices: UiChoices) -> None:
        self.manager = manager
        self.choices = choices
        self.widgets: dict[str, Any] = {}
        try:  # widgets start from the default preset, as if the user had picked it
            self.initial = load_spec(choices.default_preset)
        except VidstyleError:
            self.initial = JobSpec()

    # -- values -----------------------------------------------------------------------
    @property
    def keys(self) -> list[str]:
        return list(self.widgets)

    @property
    def inputs(self) -> list[Any]:
        return list(self.widgets.values())

    def spec(self, values: Sequence[Any]) -> JobSpec:
        return values_to_spec(dict(zip(self.keys, values, strict=False)), self.choices.backend_kind)

    def add(self, dotted: str, choices: list[str] | None = None, **extra: Any) -> Any:
        initial = spec_to_values(self.initial, [dotted])[dotted]
        if dotted in MODEL_PICKERS and choices is not None:
            initial = existing_model(initial, choices)
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
                    self._coherence_panel()
                    self._output_panel()
                with gr.Column(scale=2):
                    self._run_panel()
                    self._epoch_panel()
            self._wire()
        return tab

    def _source_panel(self) -> None:
        with gr.Row():
            self.widgets[PRESET] = gr.Dropdown(
                choices=list_presets(),
                value=self.choices.default_preset,
                label="Preset",
                elem_id="vidstyle_preset",
                info="Loads its settings into the widgets below.",
            )
            self.widgets[JOB_NAME] = gr.Textbox(
                label="Job name (optional)",
                elem_id="vidstyle_job_name",
                info="Folder name of the job; default: video name + time.",
            )
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
            self.widgets[LORA_NAMES] = gr.Dropdown(
                choices=union_of(self.choices.loras(), names),
                value=names,
                multiselect=True,
                label="LoRAs",
                elem_id="vidstyle_loras",
                info=field_info("model.loras")["help"],
            )
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
                    self.canny_frame = gr.Slider(
                        minimum=0,
                        maximum=1,
                        step=1,
                        value=0,
                        label="Preview frame",
                        elem_id="vidstyle_canny_frame",
                        info="Source frame shown through the canny settings.",
                    )
                self.canny_image = gr.Image(
                    label="Canny preview", type="numpy", interactive=False, height=280, elem_id="vidstyle_canny_preview"
                )
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

    def _coherence_panel(self) -> None:
        # Every widget comes from spec.CoherenceSpec's declarations (bounds, help, choices).
        with gr.Accordion("Temporal coherence", open=False):
            with gr.Row():
                self.add("coherence.mode")
                self.add("coherence.flow_denoise")
                self.add("coherence.source_mix")
            with gr.Row():
                self.add("coherence.keyframe_interval")
                self.add("coherence.coverage_threshold")
            with gr.Row():
                self.add("coherence.color_match")
                self.add("coherence.color_match_strength")
                self.add("coherence.deflicker")
                self.add("coherence.deflicker_window")
            with gr.Row():
                self.add("coherence.scene_cuts")
                self.add("coherence.scene_cut_z")

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
                with gr.Row():  # diffusers only; declared with their help in spec.BackendSpec
                    for dotted in (
                        "backend.memory_mode",
                        "backend.attention",
                        "backend.vae_slicing",
                        "backend.vae_tiling",
                        "backend.compile",
                    ):
                        self.add(dotted)
                with gr.Row():  # ray only; declared with their help in spec.BackendSpec
                    for dotted in ("backend.ray_address", "backend.ray_workers", "backend.ray_gpus_per_worker"):
                        self.add(dotted)
                self.widgets[WEBUI_URLS] = gr.Textbox(
                    label="WebUI URLs (for the webui_api backend)",
                    lines=2,
                    elem_id="vidstyle_webui_urls",
                    info=field_info("backend.webui_urls")["help"],
                )

    def _run_panel(self) -> None:
        with gr.Row():
            self.preview_frames = gr.Textbox(
                value="auto",
                label="Preview frames",
                elem_id="vidstyle_preview_frames",
                info="auto (telling frames spread over the clip) or 0,120,240; a short "
                "chain is added when the coherence mode is flow or keyframes.",
            )
            self.preview_button = gr.Button("Preview", elem_id="vidstyle_preview")
            self.render_button = gr.Button("Render", variant="primary", elem_id="vidstyle_render")
        self.status = gr.HTML(status_html(None), elem_id="vidstyle_status")
        self.gallery = gr.Gallery(
            label="Latest frames", columns=4, height=300, object_fit="contain", elem_id="vidstyle_gallery"
        )
        with gr.Row():
            jobs = self._jobs()
            self.job_select = gr.Dropdown(
                choices=[j["id"] for j in jobs],
                value=jobs[0]["id"] if jobs else None,
                label="Job",
                elem_id="vidstyle_job",
                allow_custom_value=True,
                info="Earlier and running jobs in this output folder.",
            )
            self.refresh_jobs = gr.Button("Refresh", elem_id="vidstyle_refresh_jobs", scale=0)
        with gr.Row():
            self.show_button = gr.Button("Show", elem_id="vidstyle_show")
            self.cancel_button = gr.Button("Cancel", variant="stop", elem_id="vidstyle_cancel")
            self.resume_button = gr.Button("Resume", elem_id="vidstyle_resume")
        with gr.Row():
            self.redo_frames = gr.Textbox(
                label="Redo frames",
                placeholder="10-20,45",
                elem_id="vidstyle_redo_frames",
                info="Render these frames again (earlier attempts are kept).",
            )
            self.redo_with_settings = gr.Checkbox(
                value=False, label="with the prompt, model and sampling above", elem_id="vidstyle_redo_settings"
            )
            self.redo_button = gr.Button("Redo", elem_id="vidstyle_redo", scale=0)
        self.result_video = gr.Video(label="Result", interactive=False, elem_id="vidstyle_result")
        self.compare_video = gr.Video(label="Source | canny | result", interactive=False, elem_id="vidstyle_compare")
        self.contact_sheet = gr.Image(
            label="Contact sheet", type="filepath", interactive=False, height=320, elem_id="vidstyle_contact_sheet"
        )
        self.files = gr.File(label="Downloads", file_count="multiple", interactive=False, elem_id="vidstyle_files")
        self.report = gr.Markdown("", elem_id="vidstyle_report")
        self.report_page = gr.HTML("", elem_id="vidstyle_report_page")
        self.jobs_table = gr.Markdown(jobs_markdown(jobs), elem_id="vidstyle_jobs")

    def _epoch_panel(self) -> None:
        with gr.Accordion("Choose the LoRA epoch on this video", open=False):
            self.epoch_run = gr.Textbox(
                label="Training run folder",
                elem_id="vidstyle_epoch_run",
                info="The --out folder of python -m trainer config; every saved epoch is "
                "rendered on frames of the video above with these settings.",
            )
            with gr.Row():
                self.epoch_frames = gr.Textbox(
                    value="auto",
                    label="Frames",
                    elem_id="vidstyle_epoch_frames",
                    info="auto (small figure, fast motion, spread over the clip) or 0,120,240",
                )
                self.epoch_count = gr.Number(
                    value=4, precision=0, label="How many (auto)", elem_id="vidstyle_epoch_count"
                )
            self.epoch_lora_dir = gr.Textbox(
                label="WebUI Lora folder (webui_api backend only)",
                elem_id="vidstyle_epoch_lora_dir",
                visible=self.choices.backend_kind is None,
                info="The epochs are copied there under new names and removed afterwards.",
            )
            self.epoch_button = gr.Button("Preview epochs", elem_id="vidstyle_epoch_preview")
            self.epoch_status = gr.HTML("", elem_id="vidstyle_epoch_status")
            self.epoch_grid = gr.Image(
                label="Frames x epochs", type="filepath", interactive=False, elem_id="vidstyle_epoch_grid"
            )
            self.epoch_page = gr.File(
                label="Page with validation losses", interactive=False, elem_id="vidstyle_epoch_page"
            )

    # -- handlers: each one calls the manager ----------------------------------------------
    def on_epoch_preview(
        self, run_dir: str, frames: str, count: float, lora_dir: str, *values: Any
    ) -> tuple[Any, Any, str]:
        from trainer.epoch_video import preview_run_on_video

        try:
            # The engine leaves out a LoRA picked above that is a file of this run (an installed epoch).
            spec = self.spec(values)
            result = self.manager.run_exclusive(
                lambda factory, auth: preview_run_on_video(
                    Path((run_dir or "").strip()),
                    spec,
                    frames=(frames or "auto").strip(),
                    count=int(count or 4),
                    webui_lora_dir=Path(lora_dir.strip()) if (lora_dir or "").strip() else None,
                    webui_auth=auth,
                    backend_factory=factory,
                )
            )
        except VidstyleError as err:
            return _update(), _update(), status_html(None, str(err))
        except OSError as err:  # a full disk or unreadable run folder: one sentence, not a traceback
            return _update(), _update(), status_html(None, f"The epoch preview failed: {err.strerror or err}.")
        note = (
            f"Frames {', '.join(map(str, result.frames))}, epochs {', '.join(map(str, result.epochs))}, seed "
            f"{result.seed}. Install the one you choose with python -m trainer install RUN --epoch N."
        )
        return str(result.grid_path), str(result.html_path), status_html(None, note=note)

    def _jobs(self) -> list[dict[str, Any]]:
        try:
            return self.manager.list_jobs()
        except (VidstyleError, OSError):
            return []

    def on_preset(self, preset: str) -> list[Any]:
        keys = self._preset_keys()
        try:
            values = spec_to_values(load_spec(preset), keys)
        except VidstyleError as err:
            return [_update() for _ in keys] + [status_html(None, str(err))]
        updates = []
        listed = {"model.checkpoint": self.choices.checkpoints, "controlnet.model": self.choices.controlnet_models}
        for key in keys:
            if key == LORA_NAMES:
                updates.append(_update(choices=union_of(self.choices.loras(), values[key]), value=values[key]))
            elif key in MODEL_PICKERS:
                updates.append(_update(value=existing_model(values[key], listed[key]())))
            else:
                updates.append(_update(value=values[key]))
        return updates + [status_html(None, note=f"Loaded preset {preset}.")]

    def _preset_keys(self) -> list[str]:
        return [k for k in self.keys if k not in (UPLOAD, PRESET, JOB_NAME, "source.path")]

    def preset_outputs(self) -> list[Any]:
        return [self.widgets[k] for k in self._preset_keys()] + [self.status]

    def on_source(self, *values: Any) -> tuple[Any, Any]:
        merged = dict(zip(self.keys, values, strict=False))
        path = merged.get(UPLOAD) or merged.get("source.path")
        if not path:
            return "", _update()
        try:
            info = self.manager.source_info(str(getattr(path, "name", path)))
        except VidstyleError as err:
            return f"**{html.escape(str(err))}**", _update()
        text = (
            f"{info['width']}×{info['height']}, {info['fps']:.3f} fps, {info['frame_count']} frames, "
            f"{info['duration']:.2f} s, audio: {'yes' if info['audio'] else 'no'}"
        )
        return text, _update(maximum=max(1, info["frame_count"] - 1), value=0)

    def on_canny(self, frame_index: float, *values: Any) -> tuple[Any, str]:
        try:
            spec = self.spec(values)
            if not spec.source.path:
                return None, _update()
            return self.manager.canny_preview(spec, int(frame_index or 0)), _update()
        except VidstyleError as err:
            return None, status_html(None, str(err))

    def on_preview(self, frames: str, *values: Any) -> tuple[Any, str]:
        try:
            result = self.manager.preview(self.spec(values), (frames or "auto").strip())
        except VidstyleError as err:
            return _update(), status_html(None, str(err))
        except OSError as err:  # a full disk, say: one sentence, not a traceback
            return _update(), status_html(None, f"The preview failed: {err.strerror or err}.")
        run = f"; {result.run_mode} run {result.run_frames[0]}-{result.run_frames[-1]}" if result.run_frames else ""
        caption = f"frames {', '.join(map(str, result.frames))}{run} (seed {result.seed})"
        note = f"Preview: source | canny | result, {caption}. " + " ".join(result.notes)
        return [(str(result.grid_path), caption)], status_html(None, note=note.strip())

    def on_render(self, *values: Any) -> tuple[Any, str, str]:
        merged = dict(zip(self.keys, values, strict=False))
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

    def _job_choices(self, selected: str | None) -> Any:
        jobs = self._jobs()
        return _update(choices=[j["id"] for j in jobs], value=selected)

    def on_cancel(self, job_id: str) -> str:
        try:
            return status_html(self.manager.cancel(job_id))
        except VidstyleError as err:
            return status_html(None, str(err))

    def on_resume(self, job_id: str) -> tuple[str, str]:
        try:
            return status_html(self.manager.resume(job_id)), job_id
        except VidstyleError as err:
            return status_html(None, str(err)), ""

    def on_redo(self, job_id: str, frames: str, with_settings: bool, *values: Any) -> tuple[str, str]:
        try:
            overrides = redo_overrides(self.spec(values)) if with_settings else {}
            return status_html(self.manager.redo(job_id, frames or "", overrides)), job_id
        except VidstyleError as err:
            return status_html(None, str(err)), ""

    def on_refresh_jobs(self, selected: str | None) -> tuple[Any, str]:
        jobs = self._jobs()
        ids = [j["id"] for j in jobs]
        return _update(choices=ids, value=selected if selected in ids else (ids[0] if ids else None)), jobs_markdown(
            jobs
        )

    def on_refresh_models(self) -> list[Any]:
        return [
            _update(choices=self.choices.checkpoints()),
            _update(choices=self.choices.controlnet_models()),
            _update(choices=self.choices.loras()),
            _update(choices=self.choices.samplers()),
        ]

    def watch(self, job_id: str) -> Iterator[list[Any]]:
        """Yield status, latest frames and (at the end) results until the job stops."""
        if not job_id:
            yield [_update()] * 9
            return
        last: Any = None
        while True:
            try:
                status = self.manager.status(job_id)
            except VidstyleError as err:
                yield [status_html(None, str(err))] + [_update()] * 8
                return
            live = status["state"] in LIVE_STATES
            snapshot = (status["state"], status["done"], status["message"], status["latest_frame"])
            if snapshot != last:
                last = snapshot
                yield self._status_outputs(status, final=not live)
            if not live:
                return
            time.sleep(POLL_SECONDS)

    def _status_outputs(self, status: Mapping[str, Any], final: bool) -> list[Any]:
        recent = sorted(list(status.get("recent_frames") or [])[-self.choices.gallery_size :])
        gallery = [(p, f"frame {int(Path(p).stem)}") for p in recent]
        outputs: list[Any] = [status_html(status), gallery if gallery else _update()]
        if not final:
            return outputs + [_update()] * 7
        files = {name: self._file(status["id"], name) for name in RESULT_FILES}
        return outputs + [
            str(files["result.mp4"]) if files["result.mp4"] else None,
            str(files["compare.mp4"]) if files["compare.mp4"] else None,
            str(files["report/contact_sheet.png"]) if files["report/contact_sheet.png"] else None,
            [str(p) for p in files.values() if p is not None] or None,
            report_text(files["report/report.md"]),
            jobs_markdown(self._jobs()),
            report_frame(files["report/index.html"]),
        ]

    def _file(self, job_id: str, name: str) -> Path | None:
        try:
            return self.manager.file_path(job_id, name)
        except VidstyleError:
            return None

    # -- wiring -----------------------------------------------------------------------
    def _wire(self) -> None:
        watch_outputs = [
            self.status,
            self.gallery,
            self.result_video,
            self.compare_video,
            self.contact_sheet,
            self.files,
            self.report,
            self.jobs_table,
            self.report_page,
        ]
        current = gr.Textbox(visible=False, elem_id="vidstyle_current_job")  # the job the generator follows
        self.current_job = current
        inputs = self.inputs
        self.widgets[PRESET].change(self.on_preset, [self.widgets[PRESET]], self.preset_outputs())
        for source in (self.widgets[UPLOAD], self.widgets["source.path"]):
            source.change(self.on_source, inputs, [self.source_info, self.canny_frame])
        canny_triggers = [
            self.canny_frame,
            self.widgets["controlnet.low_threshold"],
            self.widgets["controlnet.high_threshold"],
            self.widgets["controlnet.blur"],
            self.widgets[UPLOAD],
            self.widgets["source.path"],
            self.widgets["size.fit"],
        ]
        for trigger in canny_triggers:
            trigger.change(self.on_canny, [self.canny_frame] + inputs, [self.canny_image, self.status])
        self.refresh_models.click(
            self.on_refresh_models,
            None,
            [
                self.widgets["model.checkpoint"],
                self.widgets["controlnet.model"],
                self.widgets[LORA_NAMES],
                self.widgets["sampling.sampler"],
            ],
        )
        self.preview_button.click(self.on_preview, [self.preview_frames] + inputs, [self.gallery, self.status])
        self.render_button.click(self.on_render, inputs, [self.job_select, self.status, current]).then(
            self.watch, [current], watch_outputs, show_progress="hidden", **_event_kwargs()
        )
        self.show_button.click(lambda job_id: job_id, [self.job_select], [current]).then(
            self.watch, [current], watch_outputs, show_progress="hidden", **_event_kwargs()
        )
        self.cancel_button.click(self.on_cancel, [self.job_select], [self.status], queue=False)
        self.resume_button.click(self.on_resume, [self.job_select], [self.status, current]).then(
            self.watch, [current], watch_outputs, show_progress="hidden", **_event_kwargs()
        )
        self.redo_button.click(
            self.on_redo, [self.job_select, self.redo_frames, self.redo_with_settings] + inputs, [self.status, current]
        ).then(self.watch, [current], watch_outputs, show_progress="hidden", **_event_kwargs())
        self.refresh_jobs.click(self.on_refresh_jobs, [self.job_select], [self.job_select, self.jobs_table])
        self.epoch_button.click(
            self.on_epoch_preview,
            [self.epoch_run, self.epoch_frames, self.epoch_count, self.epoch_lora_dir] + inputs,
            [self.epoch_grid, self.epoch_page, self.epoch_status],
        )


def build_tab(manager: JobManager, choices: UiChoices) -> Any:
    """The Video Stylize tab as a gr.Blocks; the host enables the queue (the WebUI does)."""
    return _Tab(manager, choices).build()


def build_tab_parts(manager: JobManager, choices: UiChoices) -> tuple[Any, _Tab]:
    """build_tab, plus the builder (its widgets dict and handlers) for tests and hosts."""
    parts = _Tab(manager, choices)
    return parts.build(), parts
