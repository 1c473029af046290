"""Attacks on the routes and fields test_server_security.py does not reach: the preview route
(forged, text/plain, listed frames past the size cap, a huge range), the file routes' names,
and the backend kinds a client must never pick (ray: its cluster address; simulated).
Passthrough backend only, so this file also runs under the WebUI's pins.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from test_server_security import API, Server, client_for, spec_body

from vidstyle.policy import ServerPolicy


@pytest.fixture
def server(tmp_path: Path, demo_clip: Path) -> Iterator[Server]:
    s = Server(tmp_path, demo_clip)
    yield s
    s.manager.close()


def preview_body(server: Server, **fields: Any) -> dict[str, Any]:
    body = spec_body(str(server.clip))
    body["spec"]["source"].pop("end_frame")
    return {**body, "run_frames": 0, **fields}


def test_a_forged_or_text_plain_preview_is_refused(server: Server) -> None:
    forged = client_for(server.app, header=False)
    assert forged.post(f"{API}/preview", json=preview_body(server)).status_code == 403
    text = json.dumps(preview_body(server)).encode()
    plain = server.client.post(f"{API}/preview", content=text, headers={"content-type": "text/plain"})
    assert plain.status_code == 415
    assert not (server.manager.output_root / ".previews").exists()


def test_a_huge_preview_frame_range_is_refused(server: Server) -> None:
    response = server.client.post(f"{API}/preview", json=preview_body(server, frames="0-999999999"))
    assert response.status_code == 400 and "outside the clip" in response.json()["detail"]


def test_the_preview_size_cap_counts_the_listed_frames(tmp_path: Path, demo_clip: Path) -> None:
    # 4 frames of 64x64 (the default count) fit in 0.03 megapixels; the 12 listed do not.
    s = Server(tmp_path, demo_clip, policy=ServerPolicy(max_job_megapixels=0.03))
    try:
        listed = ",".join(str(n) for n in range(12))
        response = s.client.post(f"{API}/preview", json=preview_body(s, frames=listed))
        assert response.status_code == 403, response.text
        assert "12 frames of 64x64" in response.json()["detail"]
    finally:
        s.manager.close()


@pytest.mark.parametrize(
    "backend",
    [{"kind": "ray", "ray_address": "10.9.9.9:6379"}, {"kind": "simulated"}],
)
def test_a_client_cannot_pick_ray_or_simulated(server: Server, backend: dict[str, Any]) -> None:
    response = server.client.post(f"{API}/jobs", json=spec_body(str(server.clip), backend=backend))
    assert response.status_code == 403, response.text
    assert server.manager.list_jobs() == []


@pytest.mark.parametrize(
    "name",
    ["../job.toml", "report/../../job.toml", "report/../job.toml", "%2e%2e/job.toml", "/etc/passwd", "job.toml"],
)
def test_job_file_names_stay_among_the_results(server: Server, name: str) -> None:
    server.submit("j")
    server.wait("j")
    response = server.client.get(f"{API}/jobs/j/files/{name}")
    assert response.status_code in (400, 404), response.text
    assert "[source]" not in response.text


@pytest.mark.parametrize(
    ("preview_id", "name"),
    [("..", "grid.png"), ("grid-20260101-000000-1", "..%2fjob.toml"), ("grid-20260101-000000-1", "grid.txt")],
)
def test_preview_file_names_stay_among_the_previews(server: Server, preview_id: str, name: str) -> None:
    response = server.client.get(f"{API}/previews/{preview_id}/{name}")
    assert response.status_code in (400, 404), response.text


@pytest.mark.parametrize("filename", ["../../../escaped.mp4", "/tmp/abs.mp4", "..\\..\\win.mp4"])
def test_an_upload_name_cannot_place_the_file_elsewhere(server: Server, filename: str) -> None:
    with open(server.clip, "rb") as handle:
        response = server.client.post(
            f"{API}/jobs/upload",
            files={"video": (filename, handle, "video/mp4")},
            data={"spec": json.dumps(spec_body("x")["spec"])},
        )
    assert response.status_code == 201, response.text
    uploads = (server.manager.output_root / "uploads").resolve()
    job_id = response.json()["id"]
    server.wait(job_id)  # job.toml is written when the job starts
    stored = Path(server.manager.job_spec(job_id).source.path).resolve()
    assert stored.is_relative_to(uploads) and stored.is_file()
    planted = ("escaped.mp4", "abs.mp4", "win.mp4")
    outside = [p for p in server.root.rglob("*") if p.name.endswith(planted) and not p.is_relative_to(uploads)]
    assert outside == [] and not Path("/tmp/abs.mp4").exists()
