"""`trainer prep --tagger webui:URL`: captions from a running WebUI's DeepBooru through
/sdapi/v1/interrogate (issue 13), against the WebUI double on loopback: the request and answer
format of A1111 v1.10.1, the shared tag cleanup, concurrency, the video backend's auth, and
one clear sentence for each way the WebUI can fail. Also the double's route itself."""

from __future__ import annotations

import base64
import io
import json
import socket
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import trainer_media as tm  # tests/trainer_media.py
from PIL import Image

from trainer.dataset import prepare
from trainer.prep import main as prep_main
from trainer.prep_options import build_options
from trainer.webui_tagger import WebUITagger, caption_tags, webui_url
from vidstyle.errors import PreflightError, UserInputError

try:
    from tests.doubles.webui_double import DoubleServer, make_webui_double
except ImportError:  # pytest run with tests/ (not the repo root) on sys.path
    from doubles.webui_double import DoubleServer, make_webui_double

COLOURS = {"red": (220, 40, 40), "green": (40, 200, 60), "blue": (40, 60, 220)}


@pytest.fixture
def webui() -> Iterator[Callable[..., DoubleServer]]:
    servers: list[DoubleServer] = []

    def start(**options: Any) -> DoubleServer:
        server = DoubleServer(make_webui_double(**options)).start()
        servers.append(server)
        return server

    yield start
    for server in servers:
        server.stop()


def png_b64(colour: Any = (200, 30, 30)) -> str:
    buffer = io.BytesIO()
    Image.new("RGB", (32, 32), colour).save(buffer, "PNG")
    return base64.b64encode(buffer.getvalue()).decode("ascii")


def sources(folder: Path) -> Path:
    """Three sharp pictures of different dominant colours (the double's DeepBooru names it)."""
    for name, colour in COLOURS.items():
        picture = tm.scene(len(name), (320, 256))
        picture[:] = (picture * 0.15 + [c * 0.85 for c in colour]).astype("uint8")  # mostly that colour, edges kept
        tm.save(folder / f"{name}.png", picture)
    return folder


def options(src: Path, out: Path, url: str, **extra: Any):  # type: ignore[no-untyped-def]
    values = dict(
        sources=[str(src)],
        out=str(out),
        name="miko",
        workers=1,
        face_detector="none",
        size=256,
        val_fraction=0,
        dedupe=False,
        blur_threshold=0,
        drop_monochrome=False,
        caption_source="webui",
        tagger="webui:" + url,
    )
    values.update(extra)
    return build_options(**values)


# --------------------------------------------------------------------------- the double's route (A1111 v1.10.1)


def test_interrogate_route_follows_the_webui_api(webui: Callable[..., DoubleServer]) -> None:
    server = webui()
    with httpx.Client(base_url=server.url) as client:
        answer = client.post("/sdapi/v1/interrogate", json={"image": png_b64(), "model": "deepdanbooru"})
        assert answer.status_code == 200 and set(answer.json()) == {"caption"}
        assert answer.json()["caption"] == "1girl, solo, red theme, smile, star \\(symbol\\), simple background"
        assert client.post("/sdapi/v1/interrogate", json={"image": png_b64()}).json() == {
            "caption": "a picture of a person with a smile"
        }  # model defaults to clip
        missing = client.post("/sdapi/v1/interrogate", json={"image": png_b64(), "model": "wd14"})
        assert missing.status_code == 404 and missing.json()["detail"] == "Model not found"
        broken = client.post("/sdapi/v1/interrogate", json={"image": "bm90IGFuIGltYWdl", "model": "deepdanbooru"})
        assert broken.status_code == 500 and broken.json()["detail"] == "Invalid encoded image"
        assert (
            client.post("/sdapi/v1/interrogate", json={"image": png_b64(), "model": "clip", "extra": 1}).status_code
            == 422
        )


def test_interrogate_route_needs_api_and_auth_like_the_webui(webui: Callable[..., DoubleServer]) -> None:
    no_api = webui(api_enabled=False)
    assert httpx.post(no_api.url + "/sdapi/v1/interrogate", json={"image": png_b64()}).status_code == 404
    locked = webui(auth="ann:s3cret")
    assert httpx.post(locked.url + "/sdapi/v1/interrogate", json={"image": png_b64()}).status_code == 401
    assert (
        httpx.post(locked.url + "/sdapi/v1/interrogate", json={"image": png_b64()}, auth=("ann", "s3cret")).status_code
        == 200
    )


# --------------------------------------------------------------------------- captions from the WebUI


def test_prep_captions_through_the_webui_with_the_usual_cleanup(
    webui: Callable[..., DoubleServer], tmp_path: Path
) -> None:
    server = webui()
    result = prepare(options(sources(tmp_path / "src"), tmp_path / "ds", server.url, tagger_workers=3))
    files = {f["relative"]: f for f in result.manifest["files"]}
    for name in COLOURS:
        caption = (
            (tmp_path / "ds" / files[f"{name}.png"]["output"]).with_suffix(".txt").read_text(encoding="utf-8").strip()
        )
        # trigger first, escapes undone, the same tags as any tagger would give
        assert caption == f"miko, 1girl, solo, {name} theme, smile, star (symbol), simple background"
    assert [r["model"] for r in server.state.interrogate_requests] == [
        "deepdanbooru"
    ] * 4  # the check, then one per image
    assert {f["caption_from"] for f in files.values()} == {"webui deepdanbooru"}


def test_the_video_backends_auth_reaches_the_tagger(webui: Callable[..., DoubleServer], tmp_path: Path,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:  # fmt: skip
    server = webui(auth="ann:pa:ss")  # the password may hold ':' (parse_auth splits at the first)
    src = sources(tmp_path / "src")
    monkeypatch.delenv("VIDSTYLE_WEBUI_AUTH", raising=False)
    with pytest.raises(PreflightError, match="refused the login; pass the user:password of its --api-auth"):
        prepare(options(src, tmp_path / "no", server.url))
    assert not (tmp_path / "no").exists()  # nothing half-written
    prepare(options(src, tmp_path / "flag", server.url), webui_auth="ann:pa:ss")
    monkeypatch.setenv("VIDSTYLE_WEBUI_AUTH", "ann:pa:ss")
    prepare(options(src, tmp_path / "env", server.url))
    assert "pa:ss" not in (tmp_path / "env" / "prep.json").read_text(encoding="utf-8")


def test_prep_command_line_takes_tagger_and_webui_auth(
    webui: Callable[..., DoubleServer], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    server = webui(auth="ann:s3cret")
    src = sources(tmp_path / "src")
    argv = [
        "prep",
        str(src),
        "--out",
        str(tmp_path / "ds"),
        "--name",
        "miko",
        "--size",
        "256",
        "--val-fraction",
        "0",
        "--workers",
        "1",
        "--face-detector",
        "none",
        "--keep-monochrome",
        "--tagger",
        "webui:" + server.url,
        "--webui-auth",
        "ann:s3cret",
        "--quiet",
    ]
    assert prep_main(argv) == 0
    manifest = json.loads((tmp_path / "ds" / "prep.json").read_text(encoding="utf-8"))
    assert manifest["options"]["caption_source"] == "webui" and manifest["options"]["tagger"] == "webui:" + server.url
    assert "s3cret" not in json.dumps(manifest)


@pytest.mark.parametrize(
    "case, fragment",
    [
        ("no_api", "does not serve /sdapi/v1/interrogate: restart it with the --api command-line flag"),
        ("no_deepbooru", "could not run DeepBooru"),
        ("down", "Cannot reach the WebUI at"),
    ],
)
def test_each_webui_failure_is_one_sentence(
    webui: Callable[..., DoubleServer], tmp_path: Path, case: str, fragment: str, capsys: pytest.CaptureFixture[str]
) -> None:
    if case == "down":
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            url = f"http://127.0.0.1:{sock.getsockname()[1]}"  # closed again: nothing listens there
    else:
        server = webui(api_enabled=case != "no_api")
        server.state.deepbooru_available = case != "no_deepbooru"
        url = server.url
    src = sources(tmp_path / "src")
    argv = [
        "prep",
        str(src),
        "--out",
        str(tmp_path / "ds"),
        "--name",
        "miko",
        "--workers",
        "1",
        "--face-detector",
        "none",
        "--tagger",
        "webui:" + url,
        "--quiet",
    ]
    assert prep_main(argv) == PreflightError.exit_code
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and fragment in err[0] and "Traceback" not in err[0]
    assert not (tmp_path / "ds").exists()


def test_a_webui_without_deepbooru_model_name_is_explained() -> None:
    tagger = WebUITagger("http://127.0.0.1:9")
    from vidstyle.backends.webui_http import NOT_FOUND, WebUIHTTPError

    error = tagger._explain(
        WebUIHTTPError(
            NOT_FOUND,
            "POST /sdapi/v1/interrogate answered HTTP 404",
            404,
            {"error": "HTTPException", "detail": "Model not found", "body": "", "errors": "404: Model not found"},
        )
    )
    tagger.close()
    assert "has no DeepBooru interrogator" in str(error)


def test_tagger_urls_and_caption_parsing() -> None:
    assert webui_url("webui:127.0.0.1:7860/") == "http://127.0.0.1:7860"
    with pytest.raises(UserInputError, match="--webui-auth"):
        webui_url("webui:http://ann:s3cret@127.0.0.1:7860")
    with pytest.raises(UserInputError, match="webui:URL"):
        webui_url("http://127.0.0.1:7860")
    with pytest.raises(UserInputError, match="tagger"):
        build_options(sources=["/x"], out="/y", name="n", caption_source="webui")
    # ranks on, escapes on, as DeepBooru writes them with those WebUI settings
    assert caption_tags("(1girl:0.998), (star \\(symbol\\):0.871), solo") == [
        "(1girl:0.998)",
        " (star (symbol):0.871)",
        " solo",
    ]


def test_images_are_interrogated_concurrently(monkeypatch: pytest.MonkeyPatch) -> None:
    tagger = WebUITagger("http://127.0.0.1:9", workers=3)
    together = threading.Barrier(3, timeout=20)  # breaks unless three requests are in flight at once

    def interrogate(rgb: Any) -> list[str]:
        together.wait()
        return ["tag"]

    monkeypatch.setattr(tagger, "_interrogate", interrogate)
    assert tagger.tag([None] * 6) == [["tag"]] * 6  # type: ignore[list-item]
    tagger.close()
