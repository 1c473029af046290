"""Review attacks the other server test files do not make: deeply nested JSON (a RecursionError,
not a ValueError), job names and ids that try to leave the jobs folder, huge numbers, and a
text/plain upload. Passthrough backend only, so this file also runs under the WebUI's pins.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
from test_server_security import API, Server, spec_body

NESTED = b"[" * 200_000 + b"]" * 200_000  # within the 1 MiB body cap, past Python's recursion limit


@pytest.fixture
def server(tmp_path: Path, demo_clip: Path) -> Iterator[Server]:
    s = Server(tmp_path, demo_clip)
    yield s
    s.manager.close()


@pytest.mark.parametrize("route", ["/jobs", "/preview", "/jobs/x/redo"])
def test_deeply_nested_json_is_a_400_sentence_not_a_500(server: Server, route: str) -> None:
    response = server.client.post(f"{API}{route}", content=NESTED, headers={"content-type": "application/json"})
    assert response.status_code == 400, response.text
    assert "JSON" in response.json()["detail"]


def test_a_deeply_nested_upload_spec_is_a_400_sentence(server: Server) -> None:
    files = {"video": ("clip.mp4", b"0" * 64, "video/mp4")}
    response = server.client.post(f"{API}/jobs/upload", files=files, data={"spec": NESTED.decode()})
    assert response.status_code == 400, response.text
    assert "JSON" in response.json()["detail"]


def test_a_text_plain_upload_is_refused(server: Server) -> None:
    response = server.client.post(f"{API}/jobs/upload", content=b"video", headers={"content-type": "text/plain"})
    assert response.status_code == 415
    assert not (server.root / "jobs" / "uploads").exists() or not any((server.root / "jobs" / "uploads").iterdir())


@pytest.mark.parametrize("name", ["../../escaped", "/tmp/escaped", "..", "a/../../escaped"])
def test_a_job_name_cannot_leave_the_jobs_folder(server: Server, name: str) -> None:
    response = server.client.post(f"{API}/jobs", json={**spec_body(str(server.clip)), "name": name})
    assert response.status_code in (201, 400), response.text
    if response.status_code == 201:
        job_dir = (server.root / "jobs" / response.json()["id"]).resolve()
        assert job_dir.parent == (server.root / "jobs").resolve()
    assert not (server.root / "escaped").exists() and not Path("/tmp/escaped").exists()
    server.manager.wait_idle(60)


@pytest.mark.parametrize("job_id", ["..", "..%2F..%2Fmedia", "%2E%2E", "uploads"])
def test_a_job_id_cannot_name_another_folder(server: Server, job_id: str) -> None:
    assert server.client.get(f"{API}/jobs/{job_id}").status_code in (400, 404)
    assert server.client.delete(f"{API}/jobs/{job_id}").status_code in (400, 404, 405)
    assert server.clip.is_file() and (server.root / "jobs").is_dir()


@pytest.mark.parametrize(
    "section",
    [{"size": {"width": 10**30, "height": 64}}, {"sampling": {"steps": 10**30}}, {"sampling": {"seed": 2**200}}],
)
def test_huge_numbers_are_one_sentence(server: Server, section: dict[str, dict[str, int]]) -> None:
    body = spec_body(str(server.clip), **section)
    response = server.client.post(f"{API}/jobs", content=json.dumps(body), headers={"content-type": "application/json"})
    assert response.status_code in (403, 413, 422), response.text
    assert "Traceback" not in response.text and "Internal error" not in response.text


def test_a_huge_preview_count_is_refused(server: Server) -> None:
    body = {**spec_body(str(server.clip)), "count": 10**12}
    response = server.client.post(f"{API}/preview", json=body)
    assert response.status_code == 422, response.text


def test_a_long_file_name_is_not_echoed_back_whole(server: Server) -> None:
    response = server.client.get(f"{API}/jobs/x/files/{'a' * 5000}")
    assert response.status_code == 404
    assert len(response.json()["detail"]) < 400
