"""One set of defaults for every entry point (issue 9 item 5).

Without a preset named, `vidstyle stylize`, POST /vidstyle/v1/jobs (standalone and inside the
WebUI) and the tab all start from the default preset (`anime-canny-sd15`, or the one the
WebUI's settings name); the tab's model pickers preselect a model that exists, or say there
is none, never a name the host does not have.
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import pytest
from test_webui_glue import WebUI, doubles, webui  # noqa: F401  (fixtures)

from vidstyle.cli import main as cli_main
from vidstyle.job import open_job
from vidstyle.manager import JobManager
from vidstyle.spec import DEFAULT_PRESET, load_spec

PRESET = load_spec("anime-canny-sd15")
SMALL = {
    "source": {"end_frame": 2},
    "size": {"width": 64, "height": 64},
    "sampling": {"seed": 3},
    "backend": {"kind": "passthrough"},
}


def test_the_default_preset_is_anime_canny_sd15() -> None:
    assert DEFAULT_PRESET == "anime-canny-sd15"
    assert PRESET.negative_prompt  # what a bare JobSpec lacks, so the tests below can tell them apart


def test_cli_stylize_without_preset_uses_the_default_preset(tmp_path: Path, demo_clip: Path) -> None:
    code = cli_main(
        [
            "stylize",
            str(demo_clip),
            "-o",
            str(tmp_path / "job"),
            "--backend",
            "passthrough",
            "--end-frame",
            "2",
            "--width",
            "64",
            "--height",
            "64",
            "-q",
        ]
    )
    assert code == 0
    with open_job(tmp_path / "job") as job:
        assert job.spec.negative_prompt == PRESET.negative_prompt
        assert job.spec.prompt == PRESET.prompt


def _submit(app: Any, clip: Path, **body: Any) -> dict:
    from fastapi.testclient import TestClient

    from vidstyle.server import REQUEST_HEADER

    client = TestClient(app, base_url="http://127.0.0.1")
    client.headers[REQUEST_HEADER] = "1"
    spec = {**SMALL, "source": {**SMALL["source"], "path": str(clip)}}
    answer = client.post("/vidstyle/v1/jobs", json={"spec": spec, **body})
    assert answer.status_code == 201, answer.text
    return answer.json()


def test_api_without_preset_uses_the_default_preset(tmp_path: Path, demo_clip: Path) -> None:
    pytest.importorskip("fastapi")
    from vidstyle.server import create_app

    media = tmp_path / "media"
    media.mkdir()
    clip = media / "clip.mp4"
    shutil.copyfile(demo_clip, clip)
    manager = JobManager(tmp_path / "jobs")
    try:
        status = _submit(create_app(manager, [media]), clip)
        assert manager.wait_idle(120)
    finally:
        manager.close()
    with open_job(tmp_path / "jobs" / status["id"]) as job:
        assert job.spec.negative_prompt == PRESET.negative_prompt
        assert (job.spec.size.width, job.spec.sampling.seed) == (64, 3)  # the posted values still win


def test_router_takes_the_hosts_default_preset(tmp_path: Path, demo_clip: Path) -> None:
    """Inside the WebUI the default is the preset its settings name; the host passes it in."""
    pytest.importorskip("fastapi")
    from fastapi import FastAPI

    from vidstyle.server import create_router

    custom = tmp_path / "house.toml"
    custom.write_text('negative_prompt = "house style"\n')
    media = tmp_path / "media"
    media.mkdir()
    clip = media / "clip.mp4"
    shutil.copyfile(demo_clip, clip)
    manager = JobManager(tmp_path / "jobs")
    app = FastAPI()
    app.include_router(create_router(manager, [media], default_preset=lambda: str(custom)))
    try:
        status = _submit(app, clip)
        named = _submit(app, clip, preset="anime-canny-sd15", name="named")
        assert manager.wait_idle(120)
    finally:
        manager.close()
    with open_job(tmp_path / "jobs" / status["id"]) as job:
        assert job.spec.negative_prompt == "house style"
    with open_job(tmp_path / "jobs" / named["id"]) as job:
        assert job.spec.negative_prompt == PRESET.negative_prompt  # a named preset still wins


# -- the tab's model pickers ---------------------------------------------------------------------------


def _tab(tmp_path: Path, checkpoints: list[str], controlnets: list[str]) -> Any:
    pytest.importorskip("gradio")
    from vidstyle.ui import UiChoices, build_tab_parts

    choices = UiChoices(
        checkpoints=lambda: list(checkpoints), loras=lambda: [], controlnet_models=lambda: list(controlnets)
    )
    manager = JobManager(tmp_path / "jobs")
    try:
        return build_tab_parts(manager, choices)[1]
    finally:
        manager.close()


def _choices(widget: Any) -> list[Any]:
    return [c[1] if isinstance(c, (tuple, list)) else c for c in widget.choices]


def test_pickers_preselect_the_presets_model_when_the_host_has_it(tmp_path: Path) -> None:
    # WebUI titles carry the file extension and hash; the preset names the model by its stem.
    parts = _tab(
        tmp_path,
        ["other.safetensors [0123456789]", "anything-v5.safetensors [abcdef0123]"],
        ["control_v11p_sd15_canny [d14c016b]"],
    )
    assert parts.widgets["model.checkpoint"].value == "anything-v5.safetensors [abcdef0123]"
    assert parts.widgets["controlnet.model"].value == "control_v11p_sd15_canny [d14c016b]"


def test_pickers_preselect_a_model_that_exists_instead_of_a_missing_one(tmp_path: Path) -> None:
    parts = _tab(tmp_path, ["other.safetensors [0123456789]"], ["control_canny_fp16 [aaaa1111]"])
    checkpoint = parts.widgets["model.checkpoint"]
    assert checkpoint.value == "other.safetensors [0123456789]"
    assert "anything-v5" not in _choices(checkpoint)
    assert parts.widgets["controlnet.model"].value == "control_canny_fp16 [aaaa1111]"


def test_pickers_say_when_the_host_has_no_model(tmp_path: Path) -> None:
    parts = _tab(tmp_path, [], [])
    for key in ("model.checkpoint", "controlnet.model"):
        widget = parts.widgets[key]
        assert widget.value in (None, "") and _choices(widget) == []
        assert "none found" in str(widget.info).lower()


def test_loading_a_preset_keeps_the_pickers_on_existing_models(tmp_path: Path) -> None:
    from vidstyle.ui import PRESET as PRESET_KEY

    parts = _tab(tmp_path, ["other.safetensors [0123456789]"], ["control_canny_fp16 [aaaa1111]"])
    updates = parts.on_preset("anime-canny-sd15")
    by_key = dict(zip(parts._preset_keys(), updates, strict=False))
    value = lambda update: update["value"] if isinstance(update, dict) else getattr(update, "value", update)  # noqa: E731
    assert value(by_key["model.checkpoint"]) == "other.safetensors [0123456789]"
    assert value(by_key["controlnet.model"]) == "control_canny_fp16 [aaaa1111]"
    assert PRESET_KEY not in by_key


def test_webui_routes_use_the_preset_named_in_the_settings(
    webui: WebUI,  # noqa: F811  (the fixture imported above)
    tmp_path: Path,
    demo_clip: Path,
    monkeypatch: pytest.MonkeyPatch,  # noqa: F811
) -> None:
    pytest.importorskip("gradio")
    from fastapi import FastAPI
    from fastapi.testclient import TestClient
    from modules import script_callbacks, shared

    from vidstyle.server import REQUEST_HEADER

    glue = webui.load_glue()
    script_callbacks.ui_settings_callback()
    custom = tmp_path / "house.toml"
    custom.write_text('negative_prompt = "house style"\n')
    shared.opts.vidstyle_default_preset = str(custom)
    shared.cmd_opts.api = True
    clip = webui.data / "clip.mp4"
    shutil.copyfile(demo_clip, clip)
    spec = {"source": {"path": str(clip), "end_frame": 2}, "size": {"width": 64, "height": 64}}
    manager = glue._host.get_manager()
    app = FastAPI()
    script_callbacks.app_started_callback(None, app)
    submitted: list[Any] = []
    real_submit = manager.submit
    monkeypatch.setattr(manager, "submit", lambda spec, *a, **k: submitted.append(spec) or real_submit(spec, *a, **k))
    client = TestClient(app, base_url="http://127.0.0.1")
    try:
        answer = client.post("/vidstyle/v1/jobs", json={"spec": spec}, headers={REQUEST_HEADER: "1"})
        assert answer.status_code == 201, answer.text
    finally:
        script_callbacks.script_unloaded_callback()
    assert [s.negative_prompt for s in submitted] == ["house style"]
