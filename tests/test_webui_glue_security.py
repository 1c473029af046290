"""Issue 10 inside the WebUI: the /vidstyle/v1 policy the glue (scripts/vidstyle.py) mounts, against
the WebUI doubles of tests/test_webui_glue.py. By default API clients get the in-process backend
only, no WebUI URLs, and a state-changing request needs our header (or the WebUI's --api-auth)."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

from fastapi import FastAPI
from fastapi.testclient import TestClient
from test_webui_glue import CN_MODEL, WebUI, doubles, webui  # noqa: F401  (fixtures)

from vidstyle.server import REQUEST_HEADER

API = "/vidstyle/v1"
HEADER = {REQUEST_HEADER: "1"}


def mounted(webui: WebUI, **cmd_opts: Any) -> tuple[Any, TestClient]:  # noqa: F811  (the fixture imported above)
    """The glue as the WebUI loads it, and a client of the app it mounted /vidstyle/v1 on."""
    from modules import script_callbacks, shared

    glue = webui.load_glue()
    shared.cmd_opts.api = True
    for key, value in cmd_opts.items():
        setattr(shared.cmd_opts, key, value)
    app = FastAPI()
    script_callbacks.app_started_callback(None, app)
    return glue, TestClient(app)


def body(clip: Path, backend: dict[str, Any]) -> dict[str, Any]:
    return {
        "spec": {
            "source": {"path": str(clip), "end_frame": 2},
            "size": {"width": 64, "height": 64},
            "model": {"checkpoint": "anything-v5"},
            "controlnet": {"model": CN_MODEL},
            "sampling": {"seed": 1, "steps": 2},
            "backend": backend,
        }
    }


def test_policy_defaults_inside_the_webui(webui: WebUI, demo_clip: Path) -> None:  # noqa: F811  (the fixture imported above)
    clip = webui.data / "clip.mp4"
    shutil.copyfile(demo_clip, clip)
    glue, client = mounted(webui)
    client.headers["X-Vidstyle-Request"] = "1"
    try:
        for backend in (
            {"kind": "webui_api", "webui_urls": ["http://169.254.169.254"]},
            {"kind": "passthrough"},
            {"kind": "diffusers"},
        ):
            refused = client.post(f"{API}/jobs", json=body(clip, backend))
            assert refused.status_code == 403, (backend, refused.text)
        assert client.get(f"{API}/jobs").json() == {"jobs": []}
        forged = client.post(f"{API}/jobs", json=body(clip, {}), headers={"X-Vidstyle-Request": ""})
        assert forged.status_code == 403 and "X-Vidstyle-Request" in forged.json()["detail"]
        ok = client.post(f"{API}/jobs", json=body(clip, {}))  # the host's own backend: webui_local
        assert ok.status_code == 201, ok.text
        policy = glue.api_policy()
        assert policy.backends == ["webui_local"]
        assert policy.webui_urls == [] and policy.credentials() is None
    finally:
        from modules import script_callbacks

        script_callbacks.script_unloaded_callback()


def test_operator_settings_widen_the_policy(webui: WebUI) -> None:  # noqa: F811  (the fixture imported above)
    from modules import shared

    glue = webui.load_glue()
    shared.opts.vidstyle_api_backends = ["webui_local", "webui_api"]
    shared.opts.vidstyle_api_webui_urls = "127.0.0.1:7861, http://gpu2:7860/"
    shared.opts.vidstyle_api_max_queued_jobs = 3
    policy = glue.api_policy()
    assert policy.backends == ["webui_local", "webui_api"]
    assert policy.webui_urls == ["http://127.0.0.1:7861", "http://gpu2:7860"]
    assert policy.max_queued_jobs == 3


def test_with_api_auth_both_auth_and_the_header_are_needed(webui: WebUI, demo_clip: Path) -> None:  # noqa: F811  (the fixture imported above)
    clip = webui.data / "clip.mp4"
    shutil.copyfile(demo_clip, clip)
    _, client = mounted(webui, api_auth="alice:pw1")
    try:
        assert client.post(f"{API}/jobs", json=body(clip, {}), headers=HEADER).status_code == 401
        # Cached basic-auth credentials ride along on a cross-site form: auth alone is not enough.
        forged = client.post(f"{API}/jobs", json=body(clip, {}), auth=("alice", "pw1"))
        assert forged.status_code == 403, forged.text
        created = client.post(f"{API}/jobs", json=body(clip, {}), auth=("alice", "pw1"), headers=HEADER)
        assert created.status_code == 201, created.text
    finally:
        from modules import script_callbacks

        script_callbacks.script_unloaded_callback()


def test_a_setting_that_is_not_a_number_is_one_sentence_at_startup(
    webui: WebUI,  # noqa: F811  (the fixture imported above)
    capsys: Any,
) -> None:
    from modules import shared

    shared.opts.vidstyle_api_max_queued_jobs = "lots"
    shared.opts.vidstyle_api_max_upload_mb = "big"
    glue, client = mounted(webui)
    try:
        err = capsys.readouterr().err
        assert "/vidstyle/v1 is not served; fix the setting" in err and "Traceback" not in err
        assert "max_queued_jobs" in err or "max_upload_bytes" in err
        assert client.get(f"{API}/jobs").status_code == 404  # nothing mounted
    finally:
        from modules import script_callbacks

        script_callbacks.script_unloaded_callback()
