"""Issue 10 on the command line: WebUI credentials come from --webui-auth / VIDSTYLE_WEBUI_AUTH and
never reach the job folder; `vidstyle ui --auth`; `vidstyle serve` builds the operator's policy."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from vidstyle import standalone
from vidstyle.cli import build_parser, collect_overrides, main

SECRET = "pw-Zq81"


@pytest.fixture
def webui_with_auth() -> Iterator[Any]:
    from tests.doubles.webui_double import DoubleServer, make_webui_double

    double = DoubleServer(make_webui_double(auth=f"alice:{SECRET}")).start()
    yield double
    double.stop()


def test_stylize_uses_webui_auth_and_stores_it_nowhere(tmp_path: Path, demo_clip: Path, webui_with_auth: Any) -> None:
    out = tmp_path / "job"
    code = main(
        [
            "stylize",
            str(demo_clip),
            "-o",
            str(out),
            "-q",
            "--webui",
            webui_with_auth.url,
            "--webui-auth",
            f"alice:{SECRET}",
            "--model",
            "v1-5-pruned-emaonly",
            "--controlnet-model",
            "control_v11p_sd15_canny",
            "--end-frame",
            "2",
            "--width",
            "64",
            "--height",
            "64",
            "--steps",
            "2",
            "--seed",
            "1",
        ]
    )
    assert code == 0
    assert len(webui_with_auth.state.img2img_requests) == 2
    leaked = [p.name for p in out.rglob("*") if p.is_file() and SECRET.encode() in p.read_bytes()]
    assert leaked == []


def test_webui_auth_is_not_a_spec_setting(capsys: pytest.CaptureFixture) -> None:
    args = build_parser().parse_args(["stylize", "v.mp4", "-o", "out", "--webui-auth", "a:b"])
    assert args.webui_auth == "a:b" and not any("auth" in key for key in collect_overrides(args))
    code = main(["stylize", "v.mp4", "-o", "out", "--set", "backend.webui_auth=a:b"])
    assert code != 0 and "--webui-auth" in capsys.readouterr().err


class FakeBlocks:
    def __init__(self) -> None:
        self.launched: dict[str, Any] = {}

    def launch(self, **kwargs: Any) -> None:
        self.launched = kwargs

    def close(self) -> None:
        pass


def test_ui_takes_auth_and_warns_beyond_loopback(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture
) -> None:
    blocks = FakeBlocks()
    monkeypatch.setattr(standalone, "build_standalone_ui", lambda root: blocks)
    assert main(["ui", "--host", "0.0.0.0", "--output-root", str(tmp_path)]) == 0
    assert "without --auth" in capsys.readouterr().err and blocks.launched["auth"] is None
    assert main(["ui", "--host", "0.0.0.0", "--output-root", str(tmp_path), "--auth", "me:pw"]) == 0
    assert "without --auth" not in capsys.readouterr().err and blocks.launched["auth"] == ("me", "pw")
    assert main(["ui", "--output-root", str(tmp_path)]) == 0
    assert "without --auth" not in capsys.readouterr().err


def test_serve_builds_the_policy_from_its_flags(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import uvicorn

    served: dict[str, Any] = {}
    monkeypatch.setattr(uvicorn, "run", lambda app, **kwargs: served.update(app=app, **kwargs))
    monkeypatch.setattr(standalone, "_check_can_listen", lambda host, port: None)
    assert (
        main(
            [
                "serve",
                "--output-root",
                str(tmp_path / "jobs"),
                "--allow",
                str(tmp_path),
                "--allow-host",
                "gpu-box",
                "--allow-backend",
                "passthrough",
                "--max-queued-jobs",
                "2",
            ]
        )
        == 0
    )
    client = TestClient(served["app"], base_url="http://gpu-box:7871")
    assert client.get("/vidstyle/v1/jobs").status_code == 200
    assert TestClient(served["app"], base_url="http://elsewhere:7871").get("/vidstyle/v1/jobs").status_code == 400
    refused = client.post(
        "/vidstyle/v1/jobs",
        json={"spec": {"source": {"path": "x.mp4"}, "backend": {"kind": "diffusers"}}},
        headers={"X-Vidstyle-Request": "1"},
    )
    assert refused.status_code == 403 and "passthrough" in refused.json()["detail"]
    assert main(["serve", "--output-root", str(tmp_path / "jobs"), "--allow-webui", "ftp://x"]) != 0
