"""The Video Stylize tab under the installed gradio (3.41 under the WebUI's pins, 4.x+ standalone).

Builds the tab, checks widgets come from the JobSpec declarations, and calls the handlers the
buttons call (one spec-collecting function, the manager behind it) on the passthrough backend.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

gr = pytest.importorskip("gradio", reason="the tab needs gradio (pip install 'vidstyle[ui]')")

from vidstyle.errors import SpecError  # noqa: E402
from vidstyle.manager import JobManager  # noqa: E402
from vidstyle.spec import CONTROL_MODES, SAMPLERS, field_info, load_spec  # noqa: E402
from vidstyle.tab_status import status_html  # noqa: E402
from vidstyle.tab_values import (  # noqa: E402
    LORA_NAMES,
    LORA_WEIGHT,
    PRESET,
    UPLOAD,
    WEBUI_URLS,
    UiChoices,
    redo_overrides,
    values_to_spec,
)
from vidstyle.ui import build_tab, build_tab_parts  # noqa: E402

WAIT = 120.0


def choices(**extra: Any) -> UiChoices:
    return UiChoices(
        checkpoints=lambda: ["tiny", "anything-v5"],
        loras=lambda: ["zhongli", "style"],
        controlnet_models=lambda: ["tiny", "control_v11p_sd15_canny"],
        samplers=lambda: list(SAMPLERS),
        **extra,
    )


@pytest.fixture
def manager(tmp_path: Path) -> Iterator[JobManager]:
    mgr = JobManager(tmp_path / "jobs")
    yield mgr
    mgr.close()


@pytest.fixture
def parts(manager: JobManager) -> Any:
    return build_tab_parts(manager, choices())[1]


def initial_values(parts: Any) -> dict[str, Any]:
    return {key: widget.value for key, widget in parts.widgets.items()}


def as_tuple(parts: Any, values: dict[str, Any]) -> list[Any]:
    return [values[key] for key in parts.keys]


def runnable(parts: Any, clip: Path, **extra: Any) -> dict[str, Any]:
    values = initial_values(parts)
    values.update(
        {
            UPLOAD: str(clip),
            "source.end_frame": 3,
            "size.width": 64,
            "size.height": 64,
            "backend.kind": "passthrough",
            "sampling.seed": 11,
        }
    )
    values.update(extra)
    return values


def choice_values(widget: Any) -> list[Any]:
    # gradio 4+ keeps (label, value) pairs, gradio 3 plain values
    return [c[1] if isinstance(c, (tuple, list)) else c for c in widget.choices]


def update_value(update: Any) -> Any:
    return update["value"] if isinstance(update, dict) else getattr(update, "value", update)


def test_build_tab_returns_blocks(manager: JobManager) -> None:
    assert isinstance(build_tab(manager, choices()), gr.Blocks)


def test_widgets_come_from_the_spec_declarations(parts: Any) -> None:
    steps = parts.widgets["sampling.steps"]
    info = field_info("sampling.steps")
    assert isinstance(steps, gr.Slider)
    assert (steps.minimum, steps.maximum, steps.step) == (info["ge"], info["le"], 1)
    assert steps.label == "Sampling steps" and steps.info == info["help"]
    width = parts.widgets["size.width"]
    assert (width.minimum, width.maximum, width.step, width.value) == (64, 2048, 8, 512)  # value from the preset
    assert isinstance(parts.widgets["sampling.seed"], gr.Number)  # 0..2^32 is no slider
    assert choice_values(parts.widgets["controlnet.control_mode"]) == list(CONTROL_MODES)
    assert choice_values(parts.widgets["sampling.sampler"]) == list(SAMPLERS)
    assert "tiny" in choice_values(parts.widgets["model.checkpoint"])
    assert choice_values(parts.widgets[LORA_NAMES]) == ["zhongli", "style"]
    assert isinstance(parts.widgets["controlnet.enabled"], gr.Checkbox)
    core = {
        "prompt",
        "negative_prompt",
        "model.checkpoint",
        "controlnet.model",
        "controlnet.low_threshold",
        "controlnet.high_threshold",
        "size.width",
        "size.height",
        "sampling.denoise",
        "sampling.cfg_scale",
        "sampling.steps",
        "sampling.sampler",
        "sampling.seed",
        "source.start_frame",
        "source.end_frame",
        "source.target_fps",
        "backend.kind",
    }
    assert core <= set(parts.keys)
    for key in parts.keys:
        if not key.startswith("ui."):
            field_info(key)  # every widget is a real JobSpec field


def test_initial_widget_values_give_the_default_preset(parts: Any) -> None:
    spec = values_to_spec(initial_values(parts))
    assert spec == load_spec("anime-canny-sd15")


def test_values_to_spec_converts_widget_quirks(parts: Any, demo_clip: Path) -> None:
    values = initial_values(parts)
    values.update(
        {
            UPLOAD: None,
            "source.path": f"  {demo_clip}  ",
            "source.end_frame": 12.0,
            "source.start_time": 0,
            "source.target_fps": None,
            "sampling.steps": 4.0,
            LORA_NAMES: ["zhongli", "style"],
            LORA_WEIGHT: 0.6,
            WEBUI_URLS: "http://a:7860, http://b:7860\n",
            "sampling.seed": 5.0,
        }
    )
    spec = values_to_spec(values)
    assert spec.source.path == str(demo_clip)
    assert spec.source.end_frame == 12 and isinstance(spec.source.end_frame, int)
    assert spec.source.start_time is None and spec.source.target_fps is None
    assert spec.sampling.steps == 4 and spec.sampling.seed == 5
    assert [(lora.name, lora.weight) for lora in spec.model.loras] == [("zhongli", 0.6), ("style", 0.6)]
    assert spec.backend.webui_urls == ["http://a:7860", "http://b:7860"]
    values[UPLOAD] = "/tmp/uploaded.mp4"
    assert values_to_spec(values).source.path == "/tmp/uploaded.mp4"  # an upload wins over the path box
    assert values_to_spec(values, backend_kind="webui_local").backend.kind == "webui_local"


def test_values_to_spec_names_the_bad_key(parts: Any) -> None:
    values = initial_values(parts)
    values["size.width"] = 100
    with pytest.raises(SpecError, match="size.width"):
        values_to_spec(values)
    values["size.width"] = 512
    values[PRESET] = "no-such-preset"
    with pytest.raises(Exception, match="no-such-preset"):
        values_to_spec(values)


def test_webui_host_hides_the_backend_picker(manager: JobManager) -> None:
    _, parts = build_tab_parts(manager, choices(backend_kind="webui_local"))
    assert "backend.kind" not in parts.keys and WEBUI_URLS not in parts.keys
    assert parts.spec(as_tuple(parts, initial_values(parts))).backend.kind == "webui_local"


def test_preset_handler_loads_values(parts: Any) -> None:
    updates = parts.on_preset("anime-canny-sd15")
    keys = parts._preset_keys()
    assert len(updates) == len(keys) + 1
    by_key = dict(zip(keys, updates, strict=False))
    preset = load_spec("anime-canny-sd15")
    assert update_value(by_key["prompt"]) == preset.prompt
    assert update_value(by_key["sampling.steps"]) == preset.sampling.steps
    bad = parts.on_preset("no-such-preset")
    assert "no-such-preset" in bad[-1]


def test_render_handler_submits_and_watch_streams_to_the_result(
    parts: Any, manager: JobManager, demo_clip: Path
) -> None:
    values = runnable(parts, demo_clip)
    job_update, html, job_id = parts.on_render(*as_tuple(parts, values))
    assert job_id and "Error" not in html, html
    assert update_value(job_update) == job_id
    frames = list(parts.watch(job_id))
    status, gallery, result, compare, sheet, files, report, jobs, report_page = frames[-1]
    assert 'data-state="done"' in status and "3/3 frames" in status
    assert [caption for _, caption in gallery] == ["frame 0", "frame 1", "frame 2"]
    assert result.endswith("result.mp4") and Path(result).is_file()
    assert compare.endswith("compare.mp4") and sheet.endswith("contact_sheet.png")
    assert len(files) == 6 and "Frames: 3" in report and job_id in jobs
    assert report_page.startswith('<iframe title="Job report" sandbox=""') and "data:image/png;base64," in report_page
    stored = manager.status(job_id)
    spec_path = Path(stored["path"]) / "job.toml"
    assert "uploads" in spec_path.read_text()  # the job reads its own copy of the upload


def test_render_handler_reports_errors_in_the_status_box(parts: Any, demo_clip: Path) -> None:
    values = runnable(parts, demo_clip, **{"size.width": 100})
    _, html, job_id = parts.on_render(*as_tuple(parts, values))
    assert job_id == "" and "size.width" in html and "Error" in html
    values = runnable(parts, demo_clip, **{UPLOAD: None, "source.path": ""})
    _, html, job_id = parts.on_render(*as_tuple(parts, values))
    assert job_id == "" and "No source video" in html


def test_preview_and_canny_handlers(parts: Any, manager: JobManager, demo_clip: Path) -> None:
    values = as_tuple(parts, runnable(parts, demo_clip, **{"source.end_frame": 9}))
    gallery, html = parts.on_preview("0,4,8", *values)
    [(grid, caption)] = gallery
    assert caption.startswith("frames 0, 4, 8") and caption.endswith("(seed 11)"), caption
    assert all(Path(path).is_file() for path, _ in gallery) and "source | canny | result" in html
    edges, _ = parts.on_canny(5, *values)
    assert np.array_equal(edges, manager.canny_preview(parts.spec(values), 5))
    info_text, slider = parts.on_source(*values)
    assert "30 frames" in info_text and slider["maximum"] == 29


def test_cancel_resume_redo_handlers(parts: Any, manager: JobManager, demo_clip: Path) -> None:
    assert "Error" in parts.on_cancel("no-such-job")
    _, _, job_id = parts.on_render(*as_tuple(parts, runnable(parts, demo_clip)))
    list(parts.watch(job_id))
    assert "nothing to cancel" in parts.on_cancel(job_id)
    html, followed = parts.on_resume(job_id)
    assert followed == "" and "already done" in html
    values = as_tuple(parts, runnable(parts, demo_clip, prompt="new prompt"))
    html, followed = parts.on_redo(job_id, "1", True, *values)
    assert followed == job_id, html
    list(parts.watch(job_id))
    from vidstyle.job import open_job

    with open_job(Path(manager.status(job_id)["path"])) as job:
        row = job.ledger.frame(1)
        assert row.attempt == 1 and row.overrides["prompt"] == "new prompt"


def test_redo_overrides_leave_whole_job_settings_alone(parts: Any, demo_clip: Path) -> None:
    overrides = redo_overrides(parts.spec(as_tuple(parts, runnable(parts, demo_clip))))
    assert overrides["prompt"] and overrides["sampling.steps"] == 20 and overrides["sampling.seed"] == 11
    assert not any(k.startswith(("source.", "size.", "backend.", "encode.")) for k in overrides)
    assert "controlnet.low_threshold" not in overrides
    seedless = redo_overrides(parts.spec(as_tuple(parts, runnable(parts, demo_clip, **{"sampling.seed": -1}))))
    assert "sampling.seed" not in seedless


def test_status_html_escapes_and_shows_progress() -> None:
    html = status_html(
        {
            "id": "j<1>",
            "state": "rendering",
            "frames": 10,
            "done": 4,
            "fps": 2.0,
            "eta_seconds": 3,
            "message": "<b>x</b>",
        }
    )
    assert "j&lt;1&gt;" in html and "&lt;b&gt;x" in html and 'value="4" max="10"' in html and "ETA 0:03" in html
    assert "Error" in status_html(None, "boom")


def test_an_empty_ray_workers_box_means_auto() -> None:
    # Seen in the browser test: gradio sends 0 for the untouched, empty "Ray workers" number box,
    # which the spec refuses (ge=1); empty means "one per GPU", as the field's help says.
    assert values_to_spec({"backend.ray_workers": 0}).backend.ray_workers is None
    assert values_to_spec({"backend.ray_workers": 3}).backend.ray_workers == 3
