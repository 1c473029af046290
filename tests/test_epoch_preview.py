"""Issue 15: every saved epoch of a run rendered on telling frames of the user's video.

The clip is made here: a striped figure on a plain background, large and drifting slowly,
except that it is small in one frame and jumps in another; those are the frames automatic
choice must prefer. Grids are checked by size, cell contents and labels (PNG and HTML);
the WebUI double's Lora folder must hold exactly the user's files afterwards, whatever
happened; bad inputs give one sentence each.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import train_helpers as th  # tests/train_helpers.py
from PIL import Image

from trainer import commands
from trainer.epoch_video import lora_family, preview_run_on_video
from vidstyle.epoch_frames import choose_frames, pick_spread, score_frames
from vidstyle.epoch_preview import HEADER_HEIGHT, HTTP_NEEDS_FOLDER, LABEL_WIDTH, EpochLora, render_epoch_preview
from vidstyle.errors import BackendError, Cancelled, PreflightError, UserInputError
from vidstyle.render import CancelToken, RenderEvent
from vidstyle.spec import JobSpec, load_spec

try:
    from tests.doubles.webui_double import DoubleServer, make_webui_double
except ImportError:  # pytest run with tests/ (not the repo root) on sys.path
    from doubles.webui_double import DoubleServer, make_webui_double

FRAMES = 32
SMALL_FRAME = 13  # the figure is far away
JUMP_FRAME = 26  # the figure moves fast (and stays where it jumped to)
CLIP_SIZE = (128, 96)
SIZE = 64
VAL = [0.20, 0.16, 0.17]


def _figure(canvas: np.ndarray, cx: int, cy: int, scale: float) -> None:
    """A striped 'body' with a 'head': plenty of edges, like a rendered character."""
    h, w = int(60 * scale), int(24 * scale)
    top, left = cy - h // 2, cx - w // 2
    canvas[top : top + h, left : left + w] = 230
    canvas[top : top + h : max(2, int(6 * scale)), left : left + w] = 40
    head = max(2, int(8 * scale))
    canvas[top - head - 1 : top - 1, cx - head // 2 : cx + head // 2] = 200


def make_clip(folder: Path) -> Path:
    folder.mkdir(parents=True)
    for index in range(FRAMES):
        canvas = np.full((CLIP_SIZE[1], CLIP_SIZE[0]), 90, np.uint8)
        cx = 40 + index // 2 + (36 if index >= JUMP_FRAME else 0)
        _figure(canvas, cx, 52, 0.25 if index == SMALL_FRAME else 1.0)
        Image.fromarray(np.stack([canvas] * 3, axis=-1)).save(folder / f"{index:04d}.png")
    return folder


@pytest.fixture(scope="module")
def clip(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_clip(tmp_path_factory.mktemp("clip") / "dance")


def preview_spec(clip: Path, **overrides: object) -> JobSpec:
    values: dict[str, object] = {
        "source.path": str(clip),
        "backend.kind": "passthrough",
        "size.width": SIZE,
        "size.height": SIZE,
        "sampling.seed": 7,
    }
    values.update(overrides)
    return load_spec("anime-canny-sd15", values)


def make_run(tmp_path: Path, lora_files: dict[int, Path] | None = None, epochs: int = 3) -> Path:
    """A run folder as `trainer config` writes it, with epochs saved as sd-scripts names them."""
    run = tmp_path / "run"
    argv = th.config_argv(
        th.make_dataset(tmp_path / "ds"),
        th.make_checkpoint(tmp_path),
        run,
        extra=["--set", f"max_train_epochs={epochs}"],
    )
    assert commands.main(argv) == 0
    output = run / "output"
    output.mkdir(exist_ok=True)
    for epoch in range(1, epochs + 1):
        target = output / f"mikuchan-{epoch:06d}.safetensors"
        if lora_files:
            target.write_bytes(lora_files[epoch].read_bytes())
        else:
            th.write_safetensors_header(
                target,
                [
                    "lora_unet_down_blocks_0_attentions_0_proj_in.lora_down.weight",
                    "lora_te_text_model_encoder_layers_0_mlp_fc1.lora_down.weight",
                ],
                {"ss_base_model_version": "sd_v1", "ss_output_name": "mikuchan"},
            )
    # Losses as the launcher keeps them when TensorBoard wrote nothing.
    progress = {"epochs": {str(e): {"train_loss": 0.1, "val_loss": v} for e, v in enumerate(VAL[:epochs], start=1)}}
    (run / "progress.json").write_text(json.dumps(progress), encoding="utf-8")
    return run


# --------------------------------------------------------------------------- frame choice


def test_automatic_frames_prefer_the_small_figure_and_the_fast_motion(clip: Path) -> None:
    spec = preview_spec(clip)
    chosen = choose_frames(str(clip), spec.source, spec.controlnet, "auto", 4)
    assert SMALL_FRAME in chosen and JUMP_FRAME in chosen
    assert len(chosen) == 4 and chosen == sorted(chosen)
    # Not what an even spread gives: the hard frames were found, not landed on.
    even_spread = {round(i * (FRAMES - 1) / 3) for i in range(4)}
    assert SMALL_FRAME not in even_spread and JUMP_FRAME not in even_spread
    assert choose_frames(str(clip), spec.source, spec.controlnet, "auto", 4) == chosen  # deterministic


def test_frame_scores_measure_size_and_motion(clip: Path) -> None:
    spec = preview_spec(clip)
    scores = {s.index: s for s in score_frames(str(clip), spec.source, spec.controlnet)}
    assert scores[SMALL_FRAME].extent < 0.5 * scores[SMALL_FRAME - 2].extent
    assert scores[JUMP_FRAME].motion > 4 * scores[JUMP_FRAME + 2].motion
    assert max(scores.values(), key=lambda s: s.hardness).index in (SMALL_FRAME, JUMP_FRAME)
    # Spans without a hard frame still give one frame each: the picks cover the clip.
    assert len(pick_spread(list(scores.values()), 8)) == 8


def test_frames_outside_the_clip_are_one_sentence(clip: Path) -> None:
    spec = preview_spec(clip)
    with pytest.raises(UserInputError) as info:
        choose_frames(str(clip), spec.source, spec.controlnet, "0,12,40")
    assert str(info.value) == (
        "Frame 40 is outside the clip, which has frames 0-31; pick frames in that range or use --frames auto."
    )
    assert choose_frames(str(clip), spec.source, spec.controlnet, "0,12,31") == [0, 12, 31]


# --------------------------------------------------------------------------- grid and page


def test_grid_has_source_canny_and_one_row_per_epoch(clip: Path, tmp_path: Path) -> None:
    run = make_run(tmp_path)
    result = preview_run_on_video(run, preview_spec(clip), frames="0,13,26")
    assert result.grid_path == run / "report" / "video-dance.png" and result.html_path.suffix == ".html"
    assert result.epochs == [1, 2, 3] and result.frames == [0, 13, 26] and result.seed == 7
    with Image.open(result.grid_path) as grid:
        assert grid.size == (LABEL_WIDTH + 3 * SIZE, HEADER_HEIGHT + (2 + 3) * SIZE)
        pixels = np.asarray(grid.convert("RGB")).astype(int)

    def cell(row: int, col: int) -> np.ndarray:
        return pixels[
            HEADER_HEIGHT + row * SIZE : HEADER_HEIGHT + (row + 1) * SIZE,
            LABEL_WIDTH + col * SIZE : LABEL_WIDTH + (col + 1) * SIZE,
        ]

    canny = cell(1, 0)
    assert set(np.unique(canny)) <= {0, 255} and canny.max() == 255  # a white-on-black edge map
    for epoch_row in (2, 3, 4):  # passthrough returns the init image: every epoch row equals the source row
        assert np.abs(cell(epoch_row, 1) - cell(0, 1)).max() <= 2
    assert np.abs(cell(0, 0) - cell(0, 2)).max() > 50  # columns are different frames
    page = result.html_path.read_text(encoding="utf-8")
    for text in (
        "frame 0",
        "frame 13",
        "frame 26",
        "epoch 1",
        "epoch 2",
        "epoch 3",
        "val loss 0.2000",
        "val loss 0.1600",
        "val loss 0.1700",
        "seed 7",
        "--epoch 2",
    ):
        assert text in page
    assert page.count("<img ") == 5 * 3 and page.count('src="data:image/png;base64,') == 15  # self-contained
    assert "recommend" not in page.lower()  # evidence, not a verdict
    assert sorted(p.name for p in (run / "report").iterdir()) == ["video-dance.html", "video-dance.png"]


def recording_backend(seen: list[tuple]) -> type:
    """A backend double that returns the init image and records each request's frame, seed, prompt and LoRAs."""

    class Recorder:
        name, concurrency = "recorder", 1

        def __init__(self, spec: JobSpec, on_status: object = None) -> None:
            pass

        def preflight(self) -> None:
            pass

        def img2img(self, request):  # type: ignore[no-untyped-def]
            from vidstyle.backends.base import Img2ImgResult

            seen.append(
                (request.frame_index, request.seed, request.prompt, [(r.name, r.weight) for r in request.loras])
            )
            return Img2ImgResult(request.init_image)

        def interrupt(self) -> None:
            pass

        def close(self) -> None:
            pass

    return Recorder


def test_the_trigger_word_leads_the_prompt_and_the_seed_is_shared(clip: Path, tmp_path: Path) -> None:
    run = make_run(tmp_path)
    seen: list[tuple] = []
    preview_run_on_video(
        run,
        preview_spec(clip, **{"sampling.seed_policy": "per_frame"}),
        frames="3,20",
        backend_factory=recording_backend(seen),
    )
    assert len(seen) == 3 * 2
    assert all(prompt.startswith("mikuchan, masterpiece") for _, _, prompt, _ in seen)
    assert {frame: seed for frame, seed, _, _ in seen} == {3: 10, 20: 27}  # per-frame policy, same for every epoch
    files = [loras[-1][0] for _, _, _, loras in seen]
    assert [Path(f).name for f in files[::2]] == [f"mikuchan-{e:06d}.safetensors" for e in (1, 2, 3)]


def test_other_loras_stay_and_the_runs_own_files_are_left_out(clip: Path, tmp_path: Path) -> None:
    """The CLI and the tab share this rule: a style LoRA the video uses stays in every row; the
    run's own files (the installed final LoRA, an epoch by name, by path, or staged) are left out."""
    run = make_run(tmp_path)
    seen: list[tuple] = []
    events: list[RenderEvent] = []
    loras = [
        {"name": "anime-lineart", "weight": 0.6},
        {"name": "mikuchan", "weight": 1.0},
        {"name": "mikuchan-000002", "weight": 1.0},
        {"name": str(run / "output" / "mikuchan-000001.safetensors"), "weight": 0.9},
        {"name": "vidstyle-mikuchan-e0003", "weight": 0.7},
        {"name": "mikuchan_v2", "weight": 0.5},  # another LoRA whose name only starts the same
    ]
    spec = preview_spec(clip, **{"model.loras": loras})
    preview_run_on_video(run, spec, frames="3", backend_factory=recording_backend(seen), on_event=events.append)
    assert len(seen) == 3
    for _, _, _, used in seen:
        assert used[:2] == [("anime-lineart", 0.6), ("mikuchan_v2", 0.5)] and len(used) == 3
    assert [Path(used[-1][0]).name for _, _, _, used in seen] == [f"mikuchan-{e:06d}.safetensors" for e in (1, 2, 3)]
    notes = [e.message for e in events if e.kind == "status" and e.message.startswith("left out LoRA")]
    assert len(notes) == 1 and "mikuchan, mikuchan-000002" in notes[0] and "anime-lineart" not in notes[0]


# --------------------------------------------------------------------------- bad input


def test_a_run_without_saved_epochs_is_one_sentence(clip: Path, tmp_path: Path) -> None:
    run = make_run(tmp_path)
    for path in (run / "output").glob("*.safetensors"):
        path.unlink()
    with pytest.raises(UserInputError) as info:
        preview_run_on_video(run, preview_spec(clip))
    assert (
        str(info.value)
        == f"{run.resolve()} has no saved epochs yet; train it first with `python -m trainer train {run.resolve()}`."
    )
    assert not (run / "report").exists()


def test_lora_family_is_read_from_the_header(tmp_path: Path) -> None:
    sdxl = th.write_safetensors_header(
        tmp_path / "xl.safetensors",
        ["lora_te1_text_model_encoder_layers_0_mlp_fc1.alpha", "lora_unet_input_blocks_4_1_proj_in.alpha"],
    )
    sd15 = th.write_safetensors_header(
        tmp_path / "v1.safetensors", ["lora_te_text_model_encoder_layers_0_mlp_fc1.alpha"]
    )
    tagged = th.write_safetensors_header(tmp_path / "t.safetensors", ["x"], {"ss_base_model_version": "sdxl_base_v1-0"})
    assert (lora_family(sdxl), lora_family(sd15), lora_family(tagged)) == ("sdxl", "sd15", "sdxl")


def test_wrong_base_model_is_refused_before_rendering(
    clip: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import vidstyle.epoch_preview as engine

    monkeypatch.setattr(engine, "checkpoint_family", lambda spec: "sd15")  # the real reader: see the diffusers test
    lora = th.write_safetensors_header(
        tmp_path / "xl.safetensors", ["lora_te1_text_model_encoder_layers_0_mlp_fc1.alpha"]
    )
    epochs = [EpochLora(1, lora, family=lora_family(lora))]
    with pytest.raises(UserInputError) as info:
        render_epoch_preview(preview_spec(clip), epochs, tmp_path / "out", "x")
    assert str(info.value) == (
        "The LoRA of epoch 1 (xl.safetensors) was trained for SDXL but the checkpoint "
        "'anything-v5' is SD1.5; render with a checkpoint of the LoRA's base model (--model)."
    )
    assert not (tmp_path / "out").exists()


# --------------------------------------------------------------------------- WebUI over HTTP


@pytest.fixture()
def lora_dir(tmp_path: Path) -> Path:
    folder = tmp_path / "webui" / "models" / "Lora"
    folder.mkdir(parents=True)
    # The user's own files, one of them with the name our first epoch would get.
    (folder / "vidstyle-mikuchan-e0001.safetensors").write_bytes(b"the user's file")
    (folder / "zhongli.safetensors").write_bytes(b"another user file")
    return folder


@pytest.fixture()
def webui(lora_dir: Path) -> Iterator[DoubleServer]:
    server = DoubleServer(make_webui_double(lora_dir=lora_dir)).start()
    yield server
    server.stop()


def webui_spec(clip: Path, server: DoubleServer) -> JobSpec:
    return preview_spec(
        clip,
        **{
            "backend.kind": "webui_api",
            "backend.webui_urls": [server.url],
            "model.checkpoint": "v1-5-pruned-emaonly",
            "sampling.sampler": "Euler a",
        },
    )


def user_files(folder: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def test_webui_epochs_are_offered_under_new_names_and_removed(
    clip: Path, tmp_path: Path, lora_dir: Path, webui: DoubleServer
) -> None:
    run = make_run(tmp_path)
    before = user_files(lora_dir)
    result = preview_run_on_video(run, webui_spec(clip, webui), frames="0,26", webui_lora_dir=lora_dir)
    assert result.staged_names == ["vidstyle-mikuchan-e0001-2", "vidstyle-mikuchan-e0002", "vidstyle-mikuchan-e0003"]
    tags = [request["prompt"].split("<lora:")[-1] for request in webui.state.img2img_requests]
    assert tags == [f"{name}:0.8>" for name in result.staged_names for _ in (0, 26)]
    assert user_files(lora_dir) == before  # nothing left, nothing replaced
    assert ("POST", "/sdapi/v1/refresh-loras") in webui.state.calls
    assert [e["name"] for e in webui.state.all_loras()] == ["vidstyle-mikuchan-e0001", "zhongli"]  # refreshed after
    with Image.open(result.grid_path) as grid:
        rows = np.asarray(grid.convert("RGB")).astype(int)
    first, second = (rows[HEADER_HEIGHT + r * SIZE : HEADER_HEIGHT + (r + 1) * SIZE, LABEL_WIDTH:] for r in (2, 3))
    assert np.abs(first - second).max() > 0  # the double tints by prompt: each row used its own epoch


def test_webui_copies_are_removed_after_a_failure_and_a_cancel(clip: Path, tmp_path: Path, lora_dir: Path) -> None:
    run = make_run(tmp_path)
    before = user_files(lora_dir)
    with DoubleServer(make_webui_double(lora_dir=lora_dir, fail_every=1)) as failing:
        with pytest.raises(BackendError, match="500"):
            preview_run_on_video(run, webui_spec(clip, failing), frames="0", webui_lora_dir=lora_dir)
    assert user_files(lora_dir) == before
    cancel = CancelToken()

    def cancel_after_first(event: RenderEvent) -> None:
        if event.kind == "frame":
            cancel.cancel()

    with DoubleServer(make_webui_double(lora_dir=lora_dir)) as server:
        with pytest.raises(Cancelled):
            preview_run_on_video(
                run,
                webui_spec(clip, server),
                frames="0,26",
                webui_lora_dir=lora_dir,
                cancel=cancel,
                on_event=cancel_after_first,
            )
        assert len(server.state.img2img_requests) == 1
    assert user_files(lora_dir) == before
    assert not (run / "report").exists()


def test_http_needs_a_folder_the_webui_reads(clip: Path, tmp_path: Path, webui: DoubleServer) -> None:
    run = make_run(tmp_path)
    with pytest.raises(UserInputError) as info:
        preview_run_on_video(run, webui_spec(clip, webui), frames="0")
    assert str(info.value) == HTTP_NEEDS_FOLDER
    elsewhere = tmp_path / "not-the-webui-folder"
    elsewhere.mkdir()
    with pytest.raises(PreflightError, match="does not list vidstyle-mikuchan-e0001-2 after a refresh"):
        preview_run_on_video(run, webui_spec(clip, webui), frames="0", webui_lora_dir=elsewhere)
    assert list(elsewhere.iterdir()) == [] and webui.state.img2img_requests == []


# --------------------------------------------------------------------------- diffusers with the tiny model


@pytest.fixture(scope="module")
def tiny_loras(tmp_path_factory: pytest.TempPathFactory) -> dict[int, Path]:
    pytest.importorskip("torch", reason="the diffusers backend needs torch")
    pytest.importorskip("diffusers", reason="the diffusers backend needs diffusers")
    pytest.importorskip("peft", reason="LoRAs in diffusers need peft")
    from tiny_builders import make_tiny_kohya_lora, tiny_components  # tests/tiny_builders.py

    parts = tiny_components()
    folder = tmp_path_factory.mktemp("tiny-loras")
    files = {}
    for epoch in (1, 2):
        files[epoch] = folder / f"e{epoch}.safetensors"
        make_tiny_kohya_lora(files[epoch], parts["unet"], parts["text_encoder"], rank=4, seed=epoch)
    return files


def tiny_spec(clip: Path) -> JobSpec:
    return preview_spec(
        clip,
        **{
            "backend.kind": "diffusers",
            "backend.device": "cpu",
            "model.checkpoint": "tiny",
            "controlnet.model": "tiny",
            "sampling.steps": 4,
            "sampling.denoise": 0.75,
        },
    )


def test_diffusers_renders_each_epoch_file(clip: Path, tmp_path: Path, tiny_loras: dict[int, Path]) -> None:
    run = make_run(tmp_path, lora_files=tiny_loras, epochs=2)
    result = preview_run_on_video(run, tiny_spec(clip), frames="13,26", weight=1.0)
    with Image.open(result.grid_path) as grid:
        assert grid.size == (LABEL_WIDTH + 2 * SIZE, HEADER_HEIGHT + (2 + 2) * SIZE)
        pixels = np.asarray(grid.convert("RGB")).astype(int)
    row = lambda r: pixels[HEADER_HEIGHT + r * SIZE : HEADER_HEIGHT + (r + 1) * SIZE, LABEL_WIDTH:]  # noqa: E731
    assert np.abs(row(2) - row(3)).mean() > 1.0  # the two epochs' LoRAs render differently
    assert np.abs(row(2) - row(0)).mean() > 1.0  # and neither is the source
    again = preview_run_on_video(run, tiny_spec(clip), out_dir=tmp_path / "again", frames="13,26", weight=1.0)
    with Image.open(again.grid_path) as grid:
        assert np.array_equal(np.asarray(grid.convert("RGB")).astype(int), pixels)  # same seed, same pixels


def test_an_sdxl_lora_on_the_sd15_tiny_model_is_one_sentence(
    clip: Path, tmp_path: Path, tiny_loras: dict[int, Path]
) -> None:
    sdxl = th.write_safetensors_header(
        tmp_path / "xl.safetensors",
        ["lora_te1_text_model_encoder_layers_0_mlp_fc1.alpha"],
        {"ss_base_model_version": "sdxl_base_v1-0"},
    )
    run = make_run(tmp_path, lora_files={1: tiny_loras[1], 2: sdxl}, epochs=2)
    with pytest.raises(UserInputError) as info:
        preview_run_on_video(run, tiny_spec(clip), frames="0")
    assert str(info.value) == (
        "The LoRA of epoch 2 (mikuchan-000002.safetensors) was trained for SDXL but the checkpoint "
        "'tiny' is SD1.5; render with a checkpoint of the LoRA's base model (--model)."
    )


# --------------------------------------------------------------------------- command lines


def test_vidstyle_preview_and_trainer_report_video(clip: Path, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    from vidstyle.cli import main as vidstyle_main

    run = make_run(tmp_path)
    common = ["--backend", "passthrough", "--width", "64", "--height", "64", "--seed", "3", "-q"]
    assert vidstyle_main(["preview", str(clip), "--lora-epochs", str(run), "--frames", "0,13", *common]) == 0
    out = capsys.readouterr().out
    assert "frames 0, 13 x epochs 1, 2, 3 (seed 3)" in out and (run / "report" / "video-dance.png").is_file()
    assert vidstyle_main(["preview", str(clip), "--lora-epochs", str(run), "--frames", "0,99", *common]) == 2
    err = capsys.readouterr().err
    assert [line for line in err.splitlines() if line] == [
        "error: Frame 99 is outside the clip, which has frames 0-31; pick frames in that range or use --frames auto."
    ]
    (run / "report" / "video-dance.png").unlink()
    assert commands.main(["report", str(run), "--video", str(clip), "--count", "2", *common]) == 0
    assert {"index.html", "video-dance.png", "video-dance.html"} <= {p.name for p in (run / "report").iterdir()}
    assert commands.main(["install", str(run), "--epoch", "2", "--lora-dir", str(tmp_path)]) == 0
    assert (tmp_path / "mikuchan.safetensors").read_bytes() == (
        run / "output" / "mikuchan-000002.safetensors"
    ).read_bytes()


# --------------------------------------------------------------------------- the tab


def test_the_tab_shows_the_grid_of_a_run_folder(clip: Path, tmp_path: Path) -> None:
    pytest.importorskip("gradio", reason="the tab needs gradio")
    from vidstyle.manager import JobManager
    from vidstyle.spec import SAMPLERS
    from vidstyle.ui import UPLOAD, UiChoices, build_tab_parts

    run = make_run(tmp_path)
    manager = JobManager(tmp_path / "jobs")
    try:
        choices = UiChoices(
            checkpoints=lambda: ["anything-v5"],
            loras=lambda: ["zhongli"],
            controlnet_models=lambda: ["control_v11p_sd15_canny"],
            samplers=lambda: list(SAMPLERS),
        )
        _, parts = build_tab_parts(manager, choices)
        values = {key: widget.value for key, widget in parts.widgets.items()}
        values.update(
            {UPLOAD: str(clip), "size.width": 64, "size.height": 64, "backend.kind": "passthrough", "sampling.seed": 11}
        )
        ordered = [values[key] for key in parts.keys]
        grid, page, status = parts.on_epoch_preview(str(run), "auto", 2, "", *ordered)
        assert Path(grid) == run / "report" / "video-dance.png" and Path(page).suffix == ".html"
        assert "epochs 1, 2, 3" in status and "seed 11" in status
        with Image.open(grid) as image:
            assert image.size == (LABEL_WIDTH + 2 * SIZE, HEADER_HEIGHT + 5 * SIZE)
        _, _, status = parts.on_epoch_preview(str(run), "0,77", 2, "", *ordered)
        assert "Frame 77 is outside the clip" in status and "Error" in status
    finally:
        manager.close()


# --------------------------------------------------------------------------- WebUI in-process


@pytest.fixture()
def webui_modules() -> Iterator[None]:
    """The WebUI module doubles on sys.path, as tests/test_webui_glue.py loads them; removed after."""
    import sys

    from test_webui_glue import DOUBLE_NAMES, DOUBLES, _SysModules

    names = _SysModules(DOUBLE_NAMES)
    names.clear()
    syspath = list(sys.path)
    sys.path[:0] = [str(DOUBLES), str(DOUBLES / "Lora")]
    try:
        yield
    finally:
        sys.path[:] = syspath
        names.restore()


def test_in_process_webui_gets_the_epochs_through_its_lora_folder(
    clip: Path, tmp_path: Path, webui_modules: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    import networks
    from modules import shared

    folder = tmp_path / "webui" / "models" / "Lora"
    (folder / "styles").mkdir(parents=True)
    (folder / "styles" / "vidstyle-mikuchan-e0002.safetensors").write_bytes(b"a user file in a subfolder")
    monkeypatch.setattr(shared.cmd_opts, "lora_dir", str(folder), raising=False)  # the Lora extension's --lora-dir
    networks.list_available_networks()
    before = user_files(folder)
    listed_while_rendering: list[tuple] = []

    class InWebUI:
        """Stands in for the webui_local backend: records which LoRA each frame asked the WebUI for."""

        name, concurrency = "webui_local", 1

        def __init__(self, spec: JobSpec, on_status: object = None) -> None:
            pass

        def preflight(self) -> None:
            pass

        def img2img(self, request):  # type: ignore[no-untyped-def]
            from vidstyle.backends.base import Img2ImgResult

            wanted = request.loras[-1].name
            listed_while_rendering.append((wanted, wanted in networks.available_networks))
            return Img2ImgResult(request.init_image)

        def interrupt(self) -> None:
            pass

        def close(self) -> None:
            pass

    result = preview_run_on_video(
        run := make_run(tmp_path),
        preview_spec(clip, **{"backend.kind": "webui_local"}),
        frames="0",
        backend_factory=InWebUI,
    )
    assert result.staged_names == ["vidstyle-mikuchan-e0001", "vidstyle-mikuchan-e0002-2", "vidstyle-mikuchan-e0003"]
    assert listed_while_rendering == [(name, True) for name in result.staged_names]
    assert user_files(folder) == before
    assert sorted(networks.available_networks) == ["vidstyle-mikuchan-e0002"]  # the user's; ours are forgotten
    assert (run / "report" / "video-dance.png").is_file()
