"""/vidstyle/v1 over FastAPI's TestClient: auth, path safety, body validation, the job lifecycle.

Most jobs use the passthrough backend so this file also runs under the WebUI's pins (FastAPI
0.94 + pydantic 1.10, no torch); one job renders on the tiny diffusers model where it exists.
"""

from __future__ import annotations

import base64
import json
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from vidstyle.manager import JobManager
from vidstyle.server import REQUEST_HEADER, create_app, create_router, resolve_source

WAIT = 300.0
API = "/vidstyle/v1"


def our_client(app: Any) -> TestClient:
    """A client like our own: a loopback Host and the header that state-changing requests need."""
    client = TestClient(app, base_url="http://127.0.0.1")
    client.headers[REQUEST_HEADER] = "1"
    return client


def spec_body(path: str, **sections: dict[str, Any]) -> dict[str, Any]:
    spec: dict[str, Any] = {
        "source": {"path": path, "end_frame": 3},
        "size": {"width": 64, "height": 64},
        "sampling": {"seed": 3, "steps": 2},
        "backend": {"kind": "passthrough"},
    }
    for key, value in sections.items():
        spec.setdefault(key, {}).update(value)
    return {"spec": spec}


class Env:
    def __init__(self, root: Path, clip: Path, auth: tuple[str, str] | None = None) -> None:
        self.media = root / "media"
        self.media.mkdir()
        self.clip = self.media / "clip.mp4"
        shutil.copyfile(clip, self.clip)
        self.outside = root / "outside"
        self.outside.mkdir()
        shutil.copyfile(clip, self.outside / "secret.mp4")
        self.manager = JobManager(root / "jobs")
        self.client = our_client(create_app(self.manager, [self.media], auth))

    def wait(self, job_id: str) -> dict[str, Any]:
        assert self.manager.wait_idle(WAIT)
        response = self.client.get(f"{API}/jobs/{job_id}")
        assert response.status_code == 200, response.text
        return response.json()


@pytest.fixture
def env(tmp_path: Path, demo_clip: Path) -> Iterator[Env]:
    e = Env(tmp_path, demo_clip)
    yield e
    e.manager.close()


def _basic(user: str, password: str) -> dict[str, str]:
    return {"Authorization": "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()}


# -- auth ----------------------------------------------------------------------------------
def test_auth_required_when_configured(tmp_path: Path, demo_clip: Path) -> None:
    e = Env(tmp_path, demo_clip, auth=("ann", "s3cret"))
    try:
        missing = e.client.get(f"{API}/jobs")
        assert missing.status_code == 401 and missing.headers["www-authenticate"].startswith("Basic")
        assert "basic auth" in missing.json()["detail"]
        assert e.client.get(f"{API}/jobs", headers=_basic("ann", "wrong")).status_code == 401
        assert e.client.get(f"{API}/jobs", headers=_basic("bob", "s3cret")).status_code == 401
        assert e.client.get(f"{API}/jobs", headers={"Authorization": "Basic !!notbase64"}).status_code == 401
        assert e.client.post(f"{API}/jobs", json=spec_body(str(e.clip))).status_code == 401
        assert e.manager.list_jobs() == []  # refused before anything was created
        ok = e.client.get(f"{API}/jobs", headers=_basic("ann", "s3cret"))
        assert ok.status_code == 200 and ok.json() == {"jobs": []}
    finally:
        e.manager.close()


def test_no_auth_when_not_configured(env: Env) -> None:
    assert env.client.get(f"{API}/jobs").status_code == 200
    assert env.client.get(f"{API}/presets").status_code == 200


# -- source paths ---------------------------------------------------------------------------
def test_paths_outside_allowed_roots_are_refused(env: Env) -> None:
    secret = env.outside / "secret.mp4"
    tricks = [str(secret), str(env.media / ".." / "outside" / "secret.mp4"), "../outside/secret.mp4", "/etc/passwd"]
    link = env.media / "link.mp4"
    link.symlink_to(secret)
    (env.media / "linkdir").symlink_to(env.outside, target_is_directory=True)
    tricks += [str(link), "link.mp4", "linkdir/secret.mp4"]
    for path in tricks:
        response = env.client.post(f"{API}/jobs", json=spec_body(path))
        assert response.status_code == 403, (path, response.text)
        assert "outside the folders" in response.json()["detail"]
    assert env.manager.list_jobs() == []


def test_paths_inside_allowed_roots_are_accepted(env: Env) -> None:
    (env.media / "sub").mkdir()
    inner_link = env.media / "sub" / "alias.mp4"
    inner_link.symlink_to(env.clip)  # a symlink that stays inside is fine
    for path in (str(env.clip), "clip.mp4", "sub/../clip.mp4", str(inner_link)):
        response = env.client.post(f"{API}/jobs", json=spec_body(path))
        assert response.status_code == 201, (path, response.text)
        assert response.json()["state"] in ("queued", "preparing", "rendering", "finishing", "done")
    assert env.manager.wait_idle(WAIT)


def test_no_allowed_roots_means_upload_only(tmp_path: Path, demo_clip: Path) -> None:
    manager = JobManager(tmp_path / "jobs")
    try:
        client = our_client(create_app(manager, [], None))
        response = client.post(f"{API}/jobs", json=spec_body(str(demo_clip)))
        assert response.status_code == 403 and "upload" in response.json()["detail"]
    finally:
        manager.close()


def test_resolve_source_follows_symlinks(tmp_path: Path) -> None:
    root = tmp_path / "root"
    root.mkdir()
    (root / "ok.mp4").write_bytes(b"x")
    assert resolve_source("ok.mp4", [root]) == (root / "ok.mp4").resolve()


# -- bodies -------------------------------------------------------------------------------------
def test_malformed_bodies_get_one_sentence(env: Env) -> None:
    cases = [
        (b"{not json", 400, "not valid JSON"),
        (b"", 400, "empty"),
        (b"[1, 2]", 400, "JSON object"),
        (json.dumps({"name": "x"}).encode(), 422, "spec"),
        (json.dumps({"spec": {}, "colour": "red"}).encode(), 422, "colour"),
    ]
    for body, status, words in cases:
        response = env.client.post(f"{API}/jobs", content=body, headers={"content-type": "application/json"})
        assert response.status_code == status, (body, response.text)
        assert words in response.json()["detail"], response.json()


def test_invalid_spec_values_name_the_key(env: Env) -> None:
    unknown = env.client.post(f"{API}/jobs", json=spec_body(str(env.clip), sampling={"stepz": 3}))
    assert unknown.status_code == 422 and "sampling.stepz" in unknown.json()["detail"]
    too_small = env.client.post(f"{API}/jobs", json=spec_body(str(env.clip), size={"width": 10}))
    assert too_small.status_code == 422 and "size.width" in too_small.json()["detail"]
    wrong_type = env.client.post(f"{API}/jobs", json=spec_body(str(env.clip), sampling={"denoise": "lots"}))
    assert wrong_type.status_code == 422 and "sampling.denoise" in wrong_type.json()["detail"]
    missing_path = env.client.post(f"{API}/jobs", json={"spec": {"backend": {"kind": "passthrough"}}})
    assert missing_path.status_code == 422 and "source.path" in missing_path.json()["detail"]
    assert env.manager.list_jobs() == []


def test_broken_source_video_is_a_400(env: Env) -> None:
    (env.media / "broken.mp4").write_bytes(b"not a video at all")
    response = env.client.post(f"{API}/jobs", json=spec_body(str(env.media / "broken.mp4")))
    assert response.status_code == 400 and "broken.mp4" in response.json()["detail"]


# -- lifecycle -------------------------------------------------------------------------------------
def test_submit_status_result_and_files(env: Env) -> None:
    body = spec_body(str(env.clip))
    body["name"] = "first"
    created = env.client.post(f"{API}/jobs", json=body)
    assert created.status_code == 201 and created.json()["id"] == "first"
    status = env.wait("first")
    assert status["state"] == "done" and status["frames"] == status["done"] == 3
    listed = env.client.get(f"{API}/jobs").json()["jobs"]
    assert [j["id"] for j in listed] == ["first"]
    video = env.client.get(f"{API}/jobs/first/files/result.mp4")
    assert video.status_code == 200 and video.content[4:8] == b"ftyp"
    assert video.content == (env.manager.output_root / "first" / "result.mp4").read_bytes()
    report = env.client.get(f"{API}/jobs/first/files/report/report.json")
    assert report.status_code == 200 and report.json()["frames"] == 3
    for name in ("job.toml", "ledger.sqlite", "out/000000.png", "..%2Fjob.toml", "report/..%2F..%2Fjob.toml"):
        refused = env.client.get(f"{API}/jobs/first/files/{name}")
        assert refused.status_code == 404, name
        assert "not a job result" in refused.json()["detail"]
    assert env.client.get(f"{API}/jobs/nope").status_code == 404
    assert env.client.get(f"{API}/jobs/nope/files/result.mp4").status_code == 404


def test_cancel_resume_redo_routes(env: Env) -> None:
    env.client.post(f"{API}/jobs", json={**spec_body(str(env.clip)), "name": "j"})
    env.wait("j")
    not_running = env.client.post(f"{API}/jobs/j/cancel")
    assert not_running.status_code == 409 and "nothing to cancel" in not_running.json()["detail"]
    done = env.client.post(f"{API}/jobs/j/resume")
    assert done.status_code == 409 and "already done" in done.json()["detail"]
    redo = env.client.post(f"{API}/jobs/j/redo", json={"frames": "0-1", "overrides": {"prompt": "again"}})
    assert redo.status_code == 200, redo.text
    assert env.wait("j")["state"] == "done"
    bad = env.client.post(f"{API}/jobs/j/redo", json={"frames": "0", "overrides": {"size.width": 128}})
    assert bad.status_code == 422 and "whole job" in bad.json()["detail"]
    outside = env.client.post(f"{API}/jobs/j/redo", json={"frames": "99"})
    assert outside.status_code == 422 and "outside" in outside.json()["detail"]
    extra = env.client.post(f"{API}/jobs/j/redo", json={"frames": "1", "frame": 2})
    assert extra.status_code == 422 and "frame" in extra.json()["detail"]
    assert env.client.post(f"{API}/jobs/nope/resume").status_code == 404


def test_upload_route(env: Env) -> None:
    spec = spec_body("ignored")["spec"]
    with open(env.clip, "rb") as handle:
        response = env.client.post(
            f"{API}/jobs/upload",
            files={"video": ("my dance.mp4", handle, "video/mp4")},
            data={"spec": json.dumps(spec), "name": "up"},
        )
    assert response.status_code == 201, response.text
    status = env.wait("up")
    assert status["state"] == "done"
    uploads = list((env.manager.output_root / "uploads").rglob("*.mp4"))
    assert [p.name for p in uploads] == ["my-dance.mp4"]
    assert uploads[0].read_bytes() == env.clip.read_bytes()


def test_upload_route_refuses_bad_requests(env: Env) -> None:
    with open(env.clip, "rb") as handle:
        bad_spec = env.client.post(
            f"{API}/jobs/upload",
            files={"video": ("a.mp4", handle, "video/mp4")},
            data={"spec": json.dumps({"size": {"width": 3}})},
        )
    assert bad_spec.status_code == 422 and "size.width" in bad_spec.json()["detail"]
    no_file = env.client.post(f"{API}/jobs/upload", data={"spec": "{}"}, files={"other": ("a.txt", b"x", "text/plain")})
    assert no_file.status_code == 400 and "'video'" in no_file.json()["detail"]
    not_video = env.client.post(
        f"{API}/jobs/upload",
        files={"video": ("a.mp4", b"garbage", "video/mp4")},
        data={"spec": json.dumps(spec_body("x")["spec"])},
    )
    assert not_video.status_code == 400
    assert not list((env.manager.output_root / "uploads").rglob("*.mp4"))  # our copy of the bad upload is gone
    assert env.manager.list_jobs() == []


def test_presets_route(env: Env) -> None:
    presets = env.client.get(f"{API}/presets").json()["presets"]
    by_name = {p["name"]: p["spec"] for p in presets}
    assert "anime-canny-sd15" in by_name and by_name["anime-canny-sd15"]["size"]["width"] == 512


def test_router_mounts_in_another_app(env: Env) -> None:
    """The WebUI mounts the router into its own FastAPI app."""
    from fastapi import FastAPI

    app = FastAPI()
    app.include_router(create_router(env.manager, [env.media], ("u", "p")))
    client = our_client(app)
    assert client.get(f"{API}/jobs").status_code == 401
    assert client.get(f"{API}/jobs", headers=_basic("u", "p")).json() == {"jobs": []}


def test_several_credentials(env: Env) -> None:
    client = our_client(create_app(env.manager, [env.media], [("a", "1"), ("b", "2")]))
    assert client.get(f"{API}/jobs", headers=_basic("b", "2")).status_code == 200
    assert client.get(f"{API}/jobs", headers=_basic("a", "1")).status_code == 200
    assert client.get(f"{API}/jobs", headers=_basic("a", "2")).status_code == 401


def test_tiny_model_job_over_http(env: Env) -> None:
    pytest.importorskip("diffusers", reason="the tiny model needs diffusers (not installed under the WebUI's pins)")
    body = spec_body(
        str(env.clip),
        model={"checkpoint": "tiny"},
        controlnet={"model": "tiny"},
        backend={"kind": "diffusers", "device": "cpu"},
    )
    body["name"] = "tiny"
    created = env.client.post(f"{API}/jobs", json=body)
    assert created.status_code == 201, created.text
    status = env.wait("tiny")
    assert status["state"] == "done", status
    assert status["done"] == 3
    report = env.client.get(f"{API}/jobs/tiny/files/report/report.json").json()
    assert report["backend"] == ["diffusers"] and report["size"] == "64x64"


def test_spec_can_be_laid_over_a_preset(env: Env) -> None:
    body = {**spec_body(str(env.clip)), "preset": "anime-canny-sd15", "name": "p"}
    created = env.client.post(f"{API}/jobs", json=body)
    assert created.status_code == 201, created.text
    env.wait("p")
    job_toml = (env.manager.output_root / "p" / "job.toml").read_text()
    assert "masterpiece" in job_toml and "width = 64" in job_toml  # preset prompt, posted size
    unknown = env.client.post(f"{API}/jobs", json={**spec_body(str(env.clip)), "preset": "nope"})
    assert unknown.status_code == 400 and "nope" in unknown.json()["detail"]


def test_host_default_backend_applies_unless_the_spec_names_one() -> None:
    from vidstyle.server import _spec_from

    assert _spec_from({"prompt": "x"}, "anime-canny-sd15", "webui_local").backend.kind == "webui_local"
    assert (
        _spec_from({"backend": {"kind": "passthrough"}}, "anime-canny-sd15", "webui_local").backend.kind
        == "passthrough"
    )
    assert _spec_from({}, "anime-canny-sd15").backend.kind == "diffusers"
