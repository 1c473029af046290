"""Settings preview (no LoRA epochs): `vidstyle preview VIDEO --frames ...`, the tab's Preview, POST /preview.

Renders on the simulated img2img backend (its output depends on init, seed, frame and denoise
like a real sample's, so a flow chain can be told from independent frames) or on passthrough;
no torch, so this also runs under the WebUI's pins.
"""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from fastapi.testclient import TestClient
from PIL import Image

from vidstyle import quality, temporal
from vidstyle.backends.simulated import simulate_img2img
from vidstyle.cli import main
from vidstyle.epoch_preview import HEADER_HEIGHT, LABEL_WIDTH
from vidstyle.errors import Cancelled, UserInputError
from vidstyle.imageio import write_png
from vidstyle.manager import JobManager
from vidstyle.render import CancelToken, RenderEvent
from vidstyle.server import REQUEST_HEADER, create_app
from vidstyle.settings_preview import FLOW_RUN_FRAMES, render_settings_preview
from vidstyle.spec import JobSpec, frame_seed, load_spec

SIZE = 64
API = "/vidstyle/v1"


def make_spec(clip: Path, **extra: Any) -> JobSpec:
    overrides: dict[str, Any] = {
        "source.path": str(clip),
        "size.width": SIZE,
        "size.height": SIZE,
        "backend.kind": "simulated",
        "sampling.seed": 7,
        "coherence.mode": "independent",
    }
    overrides.update(extra)
    return load_spec("anime-canny-sd15", overrides)


def cells(grid: Path, columns: int, rows: int = 3) -> list[list[np.ndarray]]:
    """The grid's cells as arrays, row by row (cells are SIZE x SIZE: small frames are not rescaled)."""
    image = np.asarray(Image.open(grid).convert("RGB"))
    assert image.shape == (HEADER_HEIGHT + rows * SIZE, LABEL_WIDTH + columns * SIZE, 3)
    return [
        [
            image[
                HEADER_HEIGHT + r * SIZE : HEADER_HEIGHT + (r + 1) * SIZE,
                LABEL_WIDTH + c * SIZE : LABEL_WIDTH + (c + 1) * SIZE,
            ]
            for c in range(columns)
        ]
        for r in range(rows)
    ]


def test_grid_has_source_canny_result_per_frame(tmp_path: Path, demo_clip: Path) -> None:
    spec = make_spec(demo_clip)
    result = render_settings_preview(spec, tmp_path / "out", frames="0,12,24")
    assert result.frames == [0, 12, 24] and result.run_frames == [] and result.seed == 7
    source, canny, rendered = cells(result.grid_path, columns=3)
    for n, frame in enumerate(result.frames):
        # The result is what the backend makes of this frame's source with the job's seed and denoise.
        expected = simulate_img2img(
            source[n], canny[n], frame_seed(spec, frame, 0), frame, spec.sampling.denoise, spec.controlnet.weight
        )
        assert np.abs(rendered[n].astype(int) - expected.astype(int)).max() <= 1
        assert set(np.unique(canny[n])) <= {0, 255}  # a canny map, not a photo
    page = result.html_path.read_text(encoding="utf-8")
    assert page.count('src="data:image/png;base64,') == 9 and "frame 12" in page


def mean_warp_error(outputs: list[np.ndarray], sources: list[np.ndarray]) -> float:
    errors = [
        quality.warp_error(outputs[t], outputs[t - 1], temporal.correspond(sources[t], sources[t - 1]))
        for t in range(1, len(outputs))
    ]
    return float(np.mean([e for e in errors if e is not None]))


def test_flow_mode_adds_a_chain_of_consecutive_frames(tmp_path: Path, demo_clip: Path) -> None:
    flow = render_settings_preview(make_spec(demo_clip, **{"coherence.mode": "flow"}), tmp_path / "flow", frames="6,20")
    assert flow.run_mode == "flow" and flow.run_frames == list(range(6, 6 + FLOW_RUN_FRAMES))
    columns = 2 + FLOW_RUN_FRAMES
    source, _, rendered = cells(flow.grid_path, columns)
    chain, chain_sources = rendered[2:], source[2:]
    assert np.array_equal(chain[0], rendered[0])  # the chain starts from frame 6 rendered alone
    alone = render_settings_preview(make_spec(demo_clip), tmp_path / "alone", frames="6,7,8,9")
    _, _, independent = cells(alone.grid_path, FLOW_RUN_FRAMES)
    # Each flow frame continues the previous output: far less flicker than frames rendered alone.
    assert mean_warp_error(chain, chain_sources) < 0.6 * mean_warp_error(independent, chain_sources)
    assert "6 start" in flow.html_path.read_text() and "7 flow" in flow.html_path.read_text()


def test_keyframes_mode_shows_one_interval(tmp_path: Path, demo_clip: Path) -> None:
    spec = make_spec(demo_clip, **{"coherence.mode": "keyframes", "coherence.keyframe_interval": 3})
    result = render_settings_preview(spec, tmp_path / "out", frames="2")
    assert result.run_mode == "keyframes" and result.run_frames == [2, 3, 4, 5]
    page = result.html_path.read_text(encoding="utf-8")
    assert "2 key" in page and "5 key" in page and ("3 fill" in page or "3 fill+i2i" in page)


def test_run_at_the_clip_end_and_run_frames_override(tmp_path: Path, demo_clip: Path) -> None:
    result = render_settings_preview(make_spec(demo_clip, **{"coherence.mode": "flow"}), tmp_path / "a", frames="29")
    assert result.run_frames == [26, 27, 28, 29]  # moved back so the run fits in the clip
    off = render_settings_preview(
        make_spec(demo_clip, **{"coherence.mode": "flow"}), tmp_path / "b", frames="3", run_frames=0
    )
    assert off.run_frames == []
    with pytest.raises(UserInputError, match="0-9 frames"):
        render_settings_preview(make_spec(demo_clip), tmp_path / "c", frames="3", run_frames=50)


def test_one_frame_clip_says_there_is_no_run(tmp_path: Path, demo_clip: Path) -> None:
    folder = tmp_path / "one"
    folder.mkdir()
    write_png(folder / "000000.png", np.full((48, 48, 3), 120, np.uint8))
    result = render_settings_preview(make_spec(folder, **{"coherence.mode": "flow"}), tmp_path / "out")
    assert result.frames == [0] and result.run_frames == [] and "one frame" in result.notes[0]


def test_cancelled_preview_writes_nothing(tmp_path: Path, demo_clip: Path) -> None:
    cancel = CancelToken()

    def on_event(event: RenderEvent) -> None:
        if event.kind == "frame":
            cancel.cancel()

    with pytest.raises(Cancelled):
        render_settings_preview(
            make_spec(demo_clip), tmp_path / "out", frames="1,2,3", cancel=cancel, on_event=on_event
        )
    assert not (tmp_path / "out").exists() or not list((tmp_path / "out").iterdir())


# -- CLI ------------------------------------------------------------------------------------------
def run_cli(capsys: pytest.CaptureFixture, *args: Any) -> tuple:
    code = main([str(a) for a in args])
    out, err = capsys.readouterr()
    return code, out, err


def test_cli_preview_without_lora_epochs(tmp_path: Path, demo_clip: Path, capsys: pytest.CaptureFixture) -> None:
    out = tmp_path / "grid"
    code, stdout, stderr = run_cli(
        capsys,
        "preview",
        demo_clip,
        "--frames",
        "0,10",
        "-o",
        out,
        "--backend",
        "simulated",
        "--width",
        SIZE,
        "--height",
        SIZE,
        "--seed",
        3,
        "--set",
        "coherence.mode=flow",
        "-q",
    )
    assert code == 0, stderr
    assert "frames 0, 10; flow run 0-3 (seed 3)" in stdout
    cells(out / "preview.png", columns=2 + FLOW_RUN_FRAMES)
    assert (out / "preview.html").is_file()


@pytest.mark.parametrize(
    "args, message",
    [
        (["--frames", "0,400"], "Frame 400 is outside the clip"),
        (["--lora-weight", "0.5"], "add --lora-epochs RUN"),
        (["--run-frames", "30"], "0-9 frames"),
    ],
)
def test_cli_preview_errors_are_one_sentence(
    tmp_path: Path, demo_clip: Path, capsys: pytest.CaptureFixture, args: list[str], message: str
) -> None:
    out = tmp_path / "grid"
    code, _, stderr = run_cli(
        capsys, "preview", demo_clip, "-o", out, "--backend", "simulated", "--width", SIZE, "--height", SIZE, *args
    )
    assert code != 0 and message in stderr and "Traceback" not in stderr
    assert not (out / "preview.png").exists()


# -- API ------------------------------------------------------------------------------------------
class Api:
    def __init__(self, root: Path, clip: Path) -> None:
        self.media = root / "media"
        self.media.mkdir()
        self.clip = self.media / "clip.mp4"
        shutil.copyfile(clip, self.clip)
        self.outside = root / "outside"
        self.outside.mkdir()
        shutil.copyfile(clip, self.outside / "secret.mp4")
        self.manager = JobManager(root / "jobs")
        self.client = TestClient(create_app(self.manager, [self.media]), base_url="http://127.0.0.1")

    def post(self, body: dict[str, Any], headers: Any = None) -> Any:
        return self.client.post(
            f"{API}/preview", json=body, headers={REQUEST_HEADER: "1"} if headers is None else headers
        )

    def grids(self) -> list[Path]:
        return list((self.manager.output_root / ".previews").glob("grid-*/preview.png"))


def body(path: str, **spec: Any) -> dict[str, Any]:
    data: dict[str, Any] = {
        "source": {"path": path},
        "size": {"width": SIZE, "height": SIZE},
        "sampling": {"seed": 3},
        "backend": {"kind": "passthrough"},
        "coherence": {"mode": "flow"},
    }
    data.update(spec)
    return {"spec": data, "frames": "0,9", "count": 2}


@pytest.fixture
def api(tmp_path: Path, demo_clip: Path) -> Iterator[Api]:
    a = Api(tmp_path, demo_clip)
    yield a
    a.manager.close()


def test_api_preview_returns_the_grid(api: Api) -> None:
    answer = api.post(body("clip.mp4"))
    assert answer.status_code == 200, answer.text
    data = answer.json()
    assert data["frames"] == [0, 9] and data["run_frames"] == [0, 1, 2, 3] and data["run_mode"] == "flow"
    grid = api.client.get(data["grid"])
    assert grid.status_code == 200 and grid.headers["content-type"] == "image/png"
    with Image.open(api.grids()[0]) as image:
        assert image.size == (LABEL_WIDTH + 6 * SIZE, HEADER_HEIGHT + 3 * SIZE)
    page = api.client.get(data["page"])
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    assert "default-src 'none'" in page.headers["content-security-policy"]


def test_api_preview_refuses_a_forged_request(api: Api) -> None:
    forged = api.post(body("clip.mp4"), headers={})  # a cross-site form or fetch cannot add the header
    assert forged.status_code == 403 and REQUEST_HEADER in forged.json()["detail"]
    plain = api.client.post(
        f"{API}/preview", content=b'{"spec": {}}', headers={REQUEST_HEADER: "1", "Content-Type": "text/plain"}
    )
    assert plain.status_code == 415
    assert api.grids() == []


@pytest.mark.parametrize("path", ["../outside/secret.mp4", "{outside}/secret.mp4", "/etc/passwd"])
def test_api_preview_refuses_sources_outside_the_allowed_folders(api: Api, path: str) -> None:
    answer = api.post(body(path.format(outside=api.outside)))
    assert answer.status_code == 403 and "outside the folders" in answer.json()["detail"]
    assert api.grids() == []


def test_api_preview_applies_the_server_policy(api: Api) -> None:
    webui = api.post(body("clip.mp4", backend={"kind": "webui_api", "webui_urls": ["http://10.0.0.1:7860"]}))
    assert webui.status_code == 403
    model = api.post(body("clip.mp4", backend={"kind": "diffusers"}, model={"checkpoint": "/etc/passwd"}))
    assert model.status_code == 422
    extra = api.post({**body("clip.mp4"), "output": "/tmp/elsewhere"})
    assert extra.status_code == 422
    too_many = api.post({**body("clip.mp4"), "count": 500})
    assert too_many.status_code == 422
    assert api.grids() == []


@pytest.mark.parametrize(
    "url",
    [
        "/previews/..%2F..%2Fjobs/preview.png",
        "/previews/grid-20240101-000000-1/job.toml",
        "/previews/../../etc/passwd",
        "/previews/grid-1/preview.png",
    ],
)
def test_api_preview_files_only_from_previews(api: Api, url: str) -> None:
    assert api.client.get(f"{API}{url}").status_code == 404
