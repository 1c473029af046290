"""Operator limits on what API clients may ask for: torch.compile, memory modes, and repair work
counted in the frames x pixels cap (vidstyle.policy.ServerPolicy).

Attack tests: a client turning on torch.compile (minutes of the server's CPU/GPU), or
hiding extra renders behind repair (up to repair.max_attempts re-renders per frame, plus a
re-render of the frames that follow a repaired one) or behind a redo of a job the cap never
saw. Passthrough backend only for what runs, so this file also runs under the WebUI's pins.
"""

from __future__ import annotations

import typing
from pathlib import Path
from typing import Any

import pytest
from test_server_security import API, Server, client_for, spec_body

from vidstyle.cli import _policy_values, build_parser
from vidstyle.policy import MEMORY_MODES, PolicyError, ServerPolicy, renders_per_frame
from vidstyle.server import create_app
from vidstyle.spec import BackendSpec, JobSpec

FRAMES_3 = 3 * 64 * 64 / 1e6  # the megapixels of spec_body's job: 3 frames of 64x64


def diffusers_spec(**backend: Any) -> JobSpec:
    return JobSpec.parse_obj(
        {"model": {"checkpoint": "tiny"}, "controlnet": {"enabled": False}, "backend": {"kind": "diffusers", **backend}}
    )


# -- torch.compile and memory modes ----------------------------------------------------------------
def test_compile_is_refused_unless_the_operator_allows_it() -> None:
    with pytest.raises(PolicyError) as caught:
        ServerPolicy().check_spec(diffusers_spec(compile=True))
    assert str(caught.value) == (
        "This server does not let clients turn on backend.compile (torch.compile costs minutes of its CPU/GPU); "
        "set it to false, or ask its operator (vidstyle serve --allow-compile)."
    )
    assert ServerPolicy(allow_compile=True).check_spec(diffusers_spec(compile=True)).backend.compile is True
    assert ServerPolicy().check_spec(diffusers_spec()).backend.compile is False


def test_memory_modes_are_all_allowed_by_default_and_can_be_narrowed() -> None:
    for mode in MEMORY_MODES:
        assert ServerPolicy().check_spec(diffusers_spec(memory_mode=mode)).backend.memory_mode == mode
    narrow = ServerPolicy(memory_modes=["model_offload", "sequential_offload"])
    with pytest.raises(PolicyError, match="memory_mode 'none'; use one of: model_offload, sequential_offload"):
        narrow.check_spec(diffusers_spec(memory_mode="none"))
    assert narrow.check_spec(diffusers_spec(memory_mode="model_offload")).backend.memory_mode == "model_offload"


def test_the_policy_knows_every_memory_mode_of_the_spec() -> None:
    modes = typing.get_args(BackendSpec.__fields__["memory_mode"].outer_type_)
    assert set(modes) == set(MEMORY_MODES)


def test_backends_that_ignore_the_options_are_not_refused_for_them() -> None:
    # webui_api / passthrough never compile: a spec copied from a diffusers job still runs there.
    spec = JobSpec.parse_obj({"backend": {"kind": "passthrough", "compile": True, "memory_mode": "none"}})
    assert ServerPolicy(memory_modes=["auto"]).check_spec(spec).backend.kind == "passthrough"


def test_a_client_cannot_turn_on_compile_over_http(tmp_path: Path, demo_clip: Path) -> None:
    s = Server(tmp_path, demo_clip)
    try:
        body = spec_body(str(s.clip), backend={"kind": "diffusers", "compile": True})
        response = s.client.post(f"{API}/jobs", json=body)
        assert response.status_code == 403, response.text
        assert "backend.compile" in response.json()["detail"]
        assert s.manager.list_jobs() == []
    finally:
        s.manager.close()


def test_serve_flags_set_the_options() -> None:
    parser = build_parser()
    default = ServerPolicy(**_policy_values(parser.parse_args(["serve"])))
    assert default.allow_compile is False and default.memory_modes == list(MEMORY_MODES)
    args = parser.parse_args(["serve", "--allow-compile", "--allow-memory-mode", "none", "--allow-memory-mode", "auto"])
    chosen = ServerPolicy(**_policy_values(args))
    assert chosen.allow_compile is True and chosen.memory_modes == ["none", "auto"]


# -- repair in the frames x pixels cap -------------------------------------------------------------
def test_renders_per_frame_counts_repair_attempts_and_followers() -> None:
    assert renders_per_frame(JobSpec()) == 1
    assert renders_per_frame(JobSpec.parse_obj({"repair": {"enabled": True}})) == 4  # 1 + 2 attempts + 1 follower
    assert renders_per_frame(JobSpec.parse_obj({"repair": {"enabled": True, "max_attempts": 10}})) == 12


def test_a_repair_job_counts_its_worst_case_against_the_cap(tmp_path: Path, demo_clip: Path) -> None:
    # 3 frames of 64x64 fit in 3x their megapixels; with repair (4 renders each) they do not.
    s = Server(tmp_path, demo_clip, policy=ServerPolicy(max_job_megapixels=3 * FRAMES_3))
    try:
        refused = s.client.post(f"{API}/jobs", json=spec_body(str(s.clip), repair={"enabled": True}))
        assert refused.status_code == 403, refused.text
        detail = refused.json()["detail"]
        assert "3 frames of 64x64 with repair on, which counts each frame 4 times" in detail
        assert "lower repair.max_attempts, turn repair off" in detail
        assert s.manager.list_jobs() == []
        one_attempt = s.client.post(
            f"{API}/jobs", json={**spec_body(str(s.clip), repair={"enabled": True, "max_attempts": 1}), "name": "r1"}
        )
        assert one_attempt.status_code == 201, one_attempt.text  # 3 renders each: just fits
        assert s.wait("r1")["state"] == "done"
    finally:
        s.manager.close()


def test_a_redo_is_held_to_the_cap_of_the_server_it_comes_through(tmp_path: Path, demo_clip: Path) -> None:
    s = Server(tmp_path, demo_clip)  # default policy: the job is made where the cap is wide
    try:
        s.submit("j", repair={"enabled": True})
        assert s.wait("j")["state"] == "done"
        strict = client_for(create_app(s.manager, [s.media], policy=ServerPolicy(max_job_megapixels=3 * FRAMES_3)))
        response = strict.post(f"{API}/jobs/j/redo", json={"frames": "0"})
        assert response.status_code == 403, response.text
        assert "with repair on" in response.json()["detail"]
        assert s.manager.wait_idle(10)
        assert s.client.post(f"{API}/jobs/j/redo", json={"frames": "0"}).status_code == 200  # the wide server
        assert s.wait("j")["state"] == "done"
    finally:
        s.manager.close()
