"""Issue 10, attacked as an outsider would: each test drives /vidstyle/v1 over HTTP (FastAPI's
TestClient) the way the reproduction did, and checks that the server now refuses or contains it.

One section per bullet of the issue's "Why": the server policy (backends, WebUI servers,
model names, upstream errors), forged requests, secrets, presets, limits, the redo guard.
Jobs render with the passthrough backend (or the WebUI HTTP double), so this file also runs
under the WebUI's pins (FastAPI 0.94 + pydantic 1.10, no torch).
"""

from __future__ import annotations

import base64
import json
import shutil
import threading
import tracemalloc
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse
from fastapi.testclient import TestClient
from test_manager import Gate

from vidstyle.manager import JobManager
from vidstyle.policy import ServerPolicy
from vidstyle.server import REQUEST_HEADER, create_app

WAIT = 300.0
API = "/vidstyle/v1"
SECRET = "s3cret-Pa55word"
UPSTREAM_SECRET = "UPSTREAM-BODY-internal-token-42"


def client_for(app: Any, header: bool = True) -> TestClient:
    client = TestClient(app, base_url="http://127.0.0.1")
    if header:
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


class Server:
    """A manager and the standalone app over it, sources allowed under media/."""

    def __init__(
        self, root: Path, clip: Path, policy: ServerPolicy | None = None, auth: Any = None, backend_factory: Any = None
    ) -> None:
        self.root = root
        self.media = root / "media"
        self.media.mkdir(exist_ok=True)
        self.clip = self.media / "clip.mp4"
        shutil.copyfile(clip, self.clip)
        self.manager = JobManager(
            root / "jobs", backend_factory=backend_factory, webui_auth=policy.credentials() if policy else None
        )
        self.app = create_app(self.manager, [self.media], auth, policy=policy)
        self.client = client_for(self.app)

    def submit(self, name: str, **sections: dict[str, Any]) -> dict[str, Any]:
        response = self.client.post(f"{API}/jobs", json={**spec_body(str(self.clip), **sections), "name": name})
        assert response.status_code == 201, response.text
        return response.json()

    def wait(self, job_id: str) -> dict[str, Any]:
        assert self.manager.wait_idle(WAIT)
        return self.client.get(f"{API}/jobs/{job_id}").json()

    def files_containing(self, text: str) -> list[str]:
        found = []
        for path in (self.root / "jobs").rglob("*"):
            if path.is_file() and text.encode() in path.read_bytes():
                found.append(str(path.relative_to(self.root)))
        return found


@pytest.fixture
def server(tmp_path: Path, demo_clip: Path) -> Iterator[Server]:
    s = Server(tmp_path, demo_clip)
    yield s
    s.manager.close()


class Upstream:
    """Any HTTP service a client might point the server at: answers every request with HTTP 500
    and a body the client must never get to read through us."""

    def __init__(self) -> None:
        from tests.doubles.webui_double import DoubleServer

        self.calls: list[str] = []
        app = FastAPI()

        @app.api_route("/{path:path}", methods=["GET", "POST"])
        async def anything(request: Request, path: str) -> Any:
            self.calls.append(request.url.path)
            return JSONResponse(
                {"error": "Boom", "detail": UPSTREAM_SECRET, "errors": UPSTREAM_SECRET}, status_code=500
            )

        self.server = DoubleServer(app).start()
        self.url = self.server.url

    def stop(self) -> None:
        self.server.stop()


@pytest.fixture
def upstream() -> Iterator[Upstream]:
    u = Upstream()
    yield u
    u.stop()


@pytest.fixture
def webui_with_auth() -> Iterator[Any]:
    from tests.doubles.webui_double import DoubleServer, make_webui_double

    double = DoubleServer(make_webui_double(auth=f"alice:{SECRET}")).start()
    yield double
    double.stop()


def webui_spec(url: str | None) -> dict[str, Any]:
    backend: dict[str, Any] = {"kind": "webui_api", "timeout": 30}
    if url:
        backend["webui_urls"] = [url]
    return {
        "backend": backend,
        "model": {"checkpoint": "v1-5-pruned-emaonly"},
        "controlnet": {"model": "control_v11p_sd15_canny"},
    }


# -- 1. the server policy ---------------------------------------------------------------------
def test_a_client_cannot_send_the_server_to_a_url_of_its_choosing(server: Server, upstream: Upstream) -> None:
    response = server.client.post(f"{API}/jobs", json=spec_body(str(server.clip), **webui_spec(upstream.url)))
    assert response.status_code == 403, response.text
    assert "no WebUI servers" in response.json()["detail"]
    assert server.manager.wait_idle(WAIT)
    assert upstream.calls == [] and server.manager.list_jobs() == []


def test_a_client_picks_only_the_backends_the_operator_allows(tmp_path: Path, demo_clip: Path) -> None:
    s = Server(tmp_path, demo_clip, policy=ServerPolicy(backends=["passthrough"]))
    try:
        refused = s.client.post(f"{API}/jobs", json=spec_body(str(s.clip), backend={"kind": "diffusers"}))
        assert refused.status_code == 403 and "'diffusers' backend" in refused.json()["detail"]
        s.submit("ok")
    finally:
        s.manager.close()


def test_upstream_error_bodies_never_reach_the_client(tmp_path: Path, demo_clip: Path, upstream: Upstream) -> None:
    s = Server(tmp_path, demo_clip, policy=ServerPolicy(webui_urls=[upstream.url]))
    try:
        s.submit("j", **webui_spec(None))  # no URL given: the server's own list is used
        status = s.wait("j")
        assert status["state"] == "failed" and upstream.calls
        assert upstream.url in status["message"]  # our sentence names the server ...
        assert UPSTREAM_SECRET not in json.dumps(status)  # ... never what it answered
        assert UPSTREAM_SECRET not in s.client.get(f"{API}/jobs").text
    finally:
        s.manager.close()


@pytest.mark.parametrize(
    "section, value",
    [
        ("model", {"checkpoint": "/etc/passwd"}),
        ("model", {"checkpoint": "../outside/secret.safetensors"}),
        ("model", {"loras": [{"name": "..\\..\\secret", "weight": 1}]}),
        ("controlnet", {"model": "~/secret.pth"}),
    ],
)
def test_models_are_names_not_paths(server: Server, section: str, value: dict[str, Any]) -> None:
    response = server.client.post(f"{API}/jobs", json=spec_body(str(server.clip), **{section: value}))
    assert response.status_code == 422, response.text
    assert "not a path" in response.json()["detail"]
    assert server.manager.list_jobs() == []


def test_diffusers_model_names_resolve_inside_the_model_folders(tmp_path: Path) -> None:
    from vidstyle.errors import SpecError
    from vidstyle.spec import load_spec

    models = tmp_path / "models"
    (models / "Lora").mkdir(parents=True)
    (models / "anything.safetensors").write_bytes(b"x")
    (models / "Lora" / "zhongli.safetensors").write_bytes(b"x")
    (tmp_path / "secret.safetensors").write_bytes(b"x")
    (models / "escape.safetensors").symlink_to(tmp_path / "secret.safetensors")
    policy = ServerPolicy(model_dirs=[models])
    spec = load_spec(
        None,
        {
            "model.checkpoint": "anything",
            "model.loras": [{"name": "Lora/zhongli"}],
            "controlnet.enabled": False,
            "source.path": "x",
        },
    )
    checked = policy.check_spec(spec)
    assert checked.model.checkpoint == str((models / "anything.safetensors").resolve())
    assert checked.model.loras[0].name == str((models / "Lora" / "zhongli.safetensors").resolve())
    with pytest.raises(SpecError, match="not in this server's model folders"):
        policy.check_spec(spec.with_overrides({"model.checkpoint": "escape"}))  # a symlink that leaves the folder
    with pytest.raises(SpecError, match="not in this server's model folders"):
        ServerPolicy().check_spec(spec)  # no model folders: only the built-in 'tiny'


# -- 2. forged requests -----------------------------------------------------------------------
def test_a_text_plain_post_is_not_read_as_json(server: Server) -> None:
    # What a cross-site <form enctype="text/plain"> or a no-preflight fetch() sends.
    body = json.dumps(spec_body(str(server.clip))).encode()
    response = server.client.post(f"{API}/jobs", content=body, headers={"content-type": "text/plain"})
    assert response.status_code == 415, response.text
    redo = server.client.post(f"{API}/jobs/x/redo", content=b'{"frames": "0"}', headers={"content-type": "text/plain"})
    assert redo.status_code == 415
    assert server.manager.list_jobs() == []


def test_state_changing_routes_need_our_header_or_auth(server: Server) -> None:
    server.submit("j")
    server.wait("j")
    forged = client_for(server.app, header=False)  # what a page on another site can make a browser send
    with open(server.clip, "rb") as handle:
        upload = forged.post(
            f"{API}/jobs/upload",
            files={"video": ("a.mp4", handle, "video/mp4")},
            data={"spec": json.dumps(spec_body("x")["spec"])},
        )
    answers = [
        upload,
        forged.post(f"{API}/jobs/j/cancel"),
        forged.post(f"{API}/jobs/j/resume"),
        forged.post(f"{API}/jobs/j/redo", json={"frames": "0"}),
        forged.post(f"{API}/jobs", json=spec_body(str(server.clip))),
        forged.delete(f"{API}/jobs/j"),
    ]
    for answer in answers:
        assert answer.status_code == 403, answer.text
        assert REQUEST_HEADER in answer.json()["detail"]
    assert [job["id"] for job in server.manager.list_jobs()] == ["j"]
    assert not (server.manager.output_root / "uploads").exists()
    assert forged.get(f"{API}/jobs/j").status_code == 200  # reading needs no header


def test_basic_auth_does_not_replace_the_header(tmp_path: Path, demo_clip: Path) -> None:
    # A browser attaches cached basic-auth credentials to a cross-site multipart form post, so a
    # forged upload or cancel would carry valid auth: the header is required even then.
    s = Server(tmp_path, demo_clip, auth=("ann", "pw"))
    try:
        token = base64.b64encode(b"ann:pw").decode()
        basic = {"Authorization": f"Basic {token}"}
        forged = client_for(s.app, header=False)
        refused = forged.post(f"{API}/jobs/upload", files={"file": ("x.mp4", b"0" * 64, "video/mp4")}, headers=basic)
        assert refused.status_code == 403, refused.text
        assert not (s.manager.output_root / "uploads").exists()
        ours = client_for(s.app)
        response = ours.post(f"{API}/jobs", json=spec_body(str(s.clip)), headers=basic)
        assert response.status_code == 201, response.text
        assert s.manager.wait_idle(WAIT)
    finally:
        s.manager.close()


def test_the_standalone_server_checks_the_host_header(server: Server) -> None:
    # DNS rebinding: a page at http://evil.example:7871 whose name now points at 127.0.0.1.
    rebound = TestClient(server.app, base_url="http://evil.example:7871")
    assert rebound.get(f"{API}/jobs").status_code == 400
    assert client_for(server.app).get(f"{API}/jobs").status_code == 200
    assert TestClient(server.app, base_url="http://localhost:7871").get(f"{API}/jobs").status_code == 200


# -- 3. secrets ---------------------------------------------------------------------------------
def test_credentials_in_a_posted_spec_are_refused_and_never_stored(server: Server) -> None:
    response = server.client.post(
        f"{API}/jobs", json={**spec_body(str(server.clip), backend={"webui_auth": f"alice:{SECRET}"}), "name": "j"}
    )
    assert response.status_code == 422, response.text
    assert "--webui-auth" in response.json()["detail"] and SECRET not in response.text
    assert server.manager.wait_idle(WAIT)
    assert server.files_containing(SECRET) == []
    url_with_password = spec_body(str(server.clip), backend={"webui_urls": [f"http://alice:{SECRET}@127.0.0.1:1"]})
    assert server.client.post(f"{API}/jobs", json=url_with_password).status_code == 422


def test_operator_credentials_reach_the_webui_but_no_file(
    tmp_path: Path, demo_clip: Path, webui_with_auth: Any
) -> None:
    policy = ServerPolicy(webui_urls=[webui_with_auth.url], webui_auth=f"alice:{SECRET}")
    s = Server(tmp_path, demo_clip, policy=policy)
    try:
        s.submit("j", **webui_spec(webui_with_auth.url))
        status = s.wait("j")
        assert status["state"] == "done", status
        assert len(webui_with_auth.state.img2img_requests) == 3
        report = s.client.get(f"{API}/jobs/j/files/report/report.json")
        assert report.status_code == 200 and SECRET not in report.text
        assert s.files_containing(SECRET) == []  # job.toml, ledger, report, logs of the job
        assert "webui_auth" not in (s.manager.output_root / "j" / "job.toml").read_text()
    finally:
        s.manager.close()


def test_a_job_with_a_stored_password_still_resumes(tmp_path: Path, demo_clip: Path, webui_with_auth: Any) -> None:
    from vidstyle.job import create_job
    from vidstyle.spec import load_spec

    s = Server(tmp_path, demo_clip, policy=ServerPolicy(webui_urls=[webui_with_auth.url]))
    try:
        overrides = {
            "source.path": str(s.clip),
            "source.end_frame": 3,
            "size.width": 64,
            "size.height": 64,
            "sampling.seed": 3,
            "sampling.steps": 2,
            "backend.kind": "webui_api",
            "backend.webui_urls": [webui_with_auth.url],
            "model.checkpoint": "v1-5-pruned-emaonly",
            "controlnet.model": "control_v11p_sd15_canny",
        }
        root = s.manager.output_root / "old"
        create_job(load_spec(None, overrides), root).close()
        job_toml = root / "job.toml"  # as an earlier version wrote it
        job_toml.write_text(job_toml.read_text().replace("[backend]\n", f'[backend]\nwebui_auth = "alice:{SECRET}"\n'))
        before = job_toml.read_text()
        response = s.client.post(f"{API}/jobs/old/resume")
        assert response.status_code == 200, response.text
        status = s.wait("old")
        assert status["state"] == "done", status
        assert job_toml.read_text() == before  # read and used, not re-written
        assert SECRET not in (root / "report" / "report.json").read_text()
        assert s.files_containing(SECRET) == ["jobs/old/job.toml"]
    finally:
        s.manager.close()


def test_the_environment_variable_gives_the_credentials(webui_with_auth: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    from vidstyle.backends.webui_api import WebUIApiBackend
    from vidstyle.errors import PreflightError
    from vidstyle.spec import load_spec

    spec = load_spec(
        None,
        {
            "backend.kind": "webui_api",
            "backend.webui_urls": [webui_with_auth.url],
            "model.checkpoint": "v1-5-pruned-emaonly",
            "controlnet.model": "control_v11p_sd15_canny",
        },
    )
    with pytest.raises(PreflightError, match="requires a login"):
        WebUIApiBackend(spec).preflight()
    monkeypatch.setenv("VIDSTYLE_WEBUI_AUTH", f"alice:{SECRET}")
    backend = WebUIApiBackend(spec)
    try:
        backend.preflight()
    finally:
        backend.close()


# -- 4. presets -----------------------------------------------------------------------------------
def test_presets_are_taken_by_exact_name_only(server: Server, tmp_path: Path) -> None:
    outside = tmp_path / "private.toml"
    outside.write_text('database_password_key = "x"\n[size]\nwidth = 64\n')
    for preset in (
        str(outside),
        "../../../" + str(outside).lstrip("/"),
        str(outside.with_suffix("")),
        "../video/anime-canny-sd15",
        "anime-canny-sd15.toml",
    ):
        response = server.client.post(f"{API}/jobs", json={**spec_body(str(server.clip)), "preset": preset})
        assert response.status_code == 400, (preset, response.text)
        detail = response.json()["detail"]
        assert "database_password_key" not in detail and "Unknown preset" in detail
    listed = [p["name"] for p in server.client.get(f"{API}/presets").json()["presets"]]
    for name in listed:
        assert (
            server.client.post(f"{API}/jobs", json={**spec_body(str(server.clip)), "preset": name}).status_code == 201
        )
    assert server.manager.wait_idle(WAIT)


# -- 5. limits --------------------------------------------------------------------------------------
def test_a_huge_redo_frame_list_is_refused_before_expansion(server: Server) -> None:
    server.submit("j")
    server.wait("j")
    tracemalloc.start()
    try:
        response = server.client.post(f"{API}/jobs/j/redo", json={"frames": "0-3000000"})
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert response.status_code == 422 and "outside this job" in response.json()["detail"]
    assert peak < 20 * 1024 * 1024  # expanding the range first takes ~270 MB


def test_status_answers_while_a_submit_probes_the_source(server: Server, monkeypatch: pytest.MonkeyPatch) -> None:
    import vidstyle.job
    import vidstyle.manager

    probing, release = threading.Event(), threading.Event()
    real_probe = vidstyle.job.probe

    def slow_probe(*args: Any, **kwargs: Any) -> Any:
        probing.set()
        release.wait(WAIT)
        return real_probe(*args, **kwargs)

    server.submit("done")
    server.wait("done")
    monkeypatch.setattr(vidstyle.job, "probe", slow_probe)
    monkeypatch.setattr(vidstyle.manager, "probe", slow_probe)
    submitter = threading.Thread(
        target=lambda: client_for(server.app).post(f"{API}/jobs", json=spec_body(str(server.clip)))
    )
    submitter.start()
    answers: list[int] = []
    try:
        assert probing.wait(WAIT)
        poller = threading.Thread(
            target=lambda: answers.append(client_for(server.app).get(f"{API}/jobs/done").status_code)
        )
        poller.start()
        poller.join(60)  # a status call that waits for the probe would still be blocked here
        assert answers == [200]
    finally:
        release.set()
        submitter.join(WAIT)
    assert server.manager.wait_idle(WAIT)


def test_body_upload_and_queue_caps(tmp_path: Path, demo_clip: Path) -> None:
    gate = Gate()
    policy = ServerPolicy(max_body_bytes=4096, max_upload_bytes=4096, max_queued_jobs=1)
    s = Server(tmp_path, demo_clip, policy=policy, backend_factory=gate.factory)
    try:
        padded = {**spec_body(str(s.clip)), "name": "x" * 5000}
        assert s.client.post(f"{API}/jobs", json=padded).status_code == 413
        with open(s.clip, "rb") as handle:  # the clip is larger than 4 KiB
            upload = s.client.post(
                f"{API}/jobs/upload",
                files={"video": ("a.mp4", handle, "video/mp4")},
                data={"spec": json.dumps(spec_body("x")["spec"])},
            )
        assert upload.status_code == 413, upload.text
        assert not list((s.manager.output_root / "uploads").rglob("*.mp4"))

        def chunks(data: bytes) -> Iterator[bytes]:  # no Content-Length: the server counts what arrives
            for start in range(0, len(data), 1024):
                yield data[start : start + 1024]

        streamed = s.client.post(
            f"{API}/jobs", content=chunks(json.dumps(padded).encode()), headers={"content-type": "application/json"}
        )
        assert streamed.status_code == 413, streamed.text
        boundary = "vidstyleboundary"
        form = (
            (
                f'--{boundary}\r\nContent-Disposition: form-data; name="video"; filename="a.mp4"\r\n'
                f"Content-Type: video/mp4\r\n\r\n"
            ).encode()
            + s.clip.read_bytes()
            + f"\r\n--{boundary}--\r\n".encode()
        )
        streamed_upload = s.client.post(
            f"{API}/jobs/upload",
            content=chunks(form),
            headers={"content-type": f"multipart/form-data; boundary={boundary}"},
        )
        assert streamed_upload.status_code == 413, streamed_upload.text
        assert not list((s.manager.output_root / "uploads").rglob("*.mp4"))
        s.submit("first")
        assert gate.started.wait(WAIT)
        second = s.client.post(f"{API}/jobs", json=spec_body(str(s.clip)))
        assert second.status_code == 429, second.text
    finally:
        gate.open.set()
        s.manager.close()


def test_frames_times_pixels_cap(tmp_path: Path, demo_clip: Path) -> None:
    s = Server(tmp_path, demo_clip, policy=ServerPolicy(max_job_megapixels=0.01))  # 3 x 64 x 64 = 0.012
    try:
        response = s.client.post(f"{API}/jobs", json=spec_body(str(s.clip)))
        assert response.status_code == 403 and "3 frames of 64x64" in response.json()["detail"]
        assert s.manager.list_jobs() == []
    finally:
        s.manager.close()


def test_delete_removes_the_job_and_its_upload_but_not_while_it_runs(tmp_path: Path, demo_clip: Path) -> None:
    gate = Gate()
    s = Server(tmp_path, demo_clip, backend_factory=gate.factory)
    try:
        with open(s.clip, "rb") as handle:
            created = s.client.post(
                f"{API}/jobs/upload",
                files={"video": ("mine.mp4", handle, "video/mp4")},
                data={"spec": json.dumps(spec_body("x")["spec"]), "name": "up"},
            )
        assert created.status_code == 201, created.text
        assert gate.started.wait(WAIT)
        running = s.client.delete(f"{API}/jobs/up")
        assert running.status_code == 409 and "cancel" in running.json()["detail"]
        gate.open.set()
        assert s.wait("up")["state"] == "done"
        uploads = s.manager.output_root / "uploads"
        assert list(uploads.rglob("mine.mp4"))
        deleted = s.client.delete(f"{API}/jobs/up")
        assert deleted.status_code == 200 and deleted.json() == {"id": "up", "deleted": True}
        assert not (s.manager.output_root / "up").exists() and list(uploads.iterdir()) == []
        assert s.client.get(f"{API}/jobs/up").status_code == 404
        assert s.client.delete(f"{API}/jobs/up").status_code == 404
    finally:
        gate.open.set()
        s.manager.close()


# -- 6. the redo guard ----------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "overrides, named",
    [
        ({"size": {"width": 128, "height": 64}}, "size.width"),
        ({"size": {"fit": "pad"}}, "size.fit"),
        ({"controlnet": {"weight": 0.5}}, "controlnet.high_threshold"),  # a section reset to its defaults
        ({"sampling": {"steps": 3}}, "seed"),
    ],
)
def test_a_whole_section_override_cannot_change_the_job(server: Server, overrides: dict[str, Any], named: str) -> None:
    server.submit("j", controlnet={"low_threshold": 50, "high_threshold": 120})
    server.wait("j")
    response = server.client.post(f"{API}/jobs/j/redo", json={"frames": "0", "overrides": overrides})
    assert response.status_code == 422, response.text
    assert named in response.json()["detail"]
    ok = server.client.post(
        f"{API}/jobs/j/redo", json={"frames": "1", "overrides": {"sampling": {"seed": 9, "steps": 3}}}
    )
    assert ok.status_code == 200, ok.text
    assert server.wait("j")["state"] == "done"


def test_a_redo_names_models_by_name_too(server: Server) -> None:
    server.submit("j")
    server.wait("j")
    for overrides in ({"model.checkpoint": "/etc/passwd"}, {"model": {"loras": [{"name": "../../x"}]}}):
        response = server.client.post(f"{API}/jobs/j/redo", json={"frames": "0", "overrides": overrides})
        assert response.status_code == 422 and "not a path" in response.json()["detail"], response.text
