"""Coherence modes (independent, flow, keyframes) in the real render loop, on the SIMULATED img2img
backend (vidstyle/backends/simulated.py) and clips with known motion (tests/motion_media.py)."""

from __future__ import annotations

import base64
import io
import json
import os
import signal
import subprocess
import sys
import textwrap
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import pytest
from PIL import Image

from vidstyle import quality, temporal
from vidstyle.backends.base import Img2ImgRequest, Img2ImgResult
from vidstyle.backends.simulated import SimulatedImg2ImgBackend
from vidstyle.cli import main
from vidstyle.coherence import plan_frames
from vidstyle.errors import Cancelled, SpecError
from vidstyle.imageio import read_png
from vidstyle.job import Job, create_job, open_job
from vidstyle.render import CancelToken, RenderEvent, run_job, schedule_redo
from vidstyle.spec import CoherenceSpec, load_spec

try:
    from tests import motion_media as mm
    from tests.media import decode_video
    from tests.test_webui_glue import backend_for, doubles, job_spec, request_for, webui  # noqa: F401  (fixtures)
except ImportError:  # tests/ itself on sys.path
    import motion_media as mm  # type: ignore
    from media import decode_video  # type: ignore
    from test_webui_glue import backend_for, doubles, job_spec, request_for, webui  # type: ignore  # noqa: F401

SIZE = 128
ROOT = Path(__file__).resolve().parent.parent


def frame_folder(folder: Path, frames: Sequence[np.ndarray]) -> Path:
    folder.mkdir(parents=True)
    for index, frame in enumerate(frames):
        cv2.imwrite(str(folder / f"{index:04d}.png"), cv2.cvtColor(frame, cv2.COLOR_RGB2BGR))
    return folder


@pytest.fixture(scope="module")
def pan_clip(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return frame_folder(tmp_path_factory.mktemp("clips") / "pan", mm.pan_frames(13, SIZE, (3, 1)))


@pytest.fixture(scope="module")
def cut_clip(tmp_path_factory: pytest.TempPathFactory) -> Path:
    frames, _ = mm.cut_clip(6, 6, SIZE)
    return frame_folder(tmp_path_factory.mktemp("clips") / "cut", frames)


def spec_for(clip: Path, mode: str, **extra: Any):
    overrides = {
        "source.path": str(clip),
        "size.width": SIZE,
        "size.height": SIZE,
        "backend.kind": "simulated",
        "sampling.seed": 7,
        "coherence.mode": mode,
    }
    overrides.update(extra)
    return load_spec("anime-canny-sd15", overrides)


class RecordingBackend(SimulatedImg2ImgBackend):
    """The simulation, keeping what each call was given (index, denoise, init, source)."""

    def __init__(self, spec: Any = None) -> None:
        super().__init__(spec)
        self.requests: dict[int, Img2ImgRequest] = {}

    def img2img(self, request: Img2ImgRequest) -> Img2ImgResult:
        self.requests[request.frame_index] = request
        return super().img2img(request)


def render(clip: Path, root: Path, mode: str, backend: Any = None, **extra: Any) -> Job:
    spec = spec_for(clip, mode, **extra)
    job = create_job(spec, root)
    run_job(job, backend or SimulatedImg2ImgBackend(spec))
    return job


def outputs(job: Job) -> list[np.ndarray]:
    return [read_png(job.out_path(i)) for i in range(job.ledger.frame_count())]


def mean_warp_error(job: Job) -> float:
    out = outputs(job)
    errors = []
    for t in range(1, len(out)):
        link = temporal.correspond(read_png(job.src_path(t)), read_png(job.src_path(t - 1)))
        errors.append(quality.warp_error(out[t], out[t - 1], link))
    return float(np.mean([e for e in errors if e is not None]))


# --------------------------------------------------------------------------- each mode end to end


@pytest.mark.parametrize("mode", ["independent", "flow", "keyframes"])
def test_each_mode_renders_a_whole_job(tmp_path: Path, pan_clip: Path, mode: str) -> None:
    with render(pan_clip, tmp_path / "job", mode) as job:
        assert job.ledger.counts()["done"] == 13
        report = json.loads((job.report_dir / "report.json").read_text())
        assert report["coherence"]["mode"] == mode
        assert (job.root / "result.mp4").stat().st_size > 0
        made_by = [row.info.get("made_by") for row in job.ledger.frames()]
        if mode == "keyframes":
            assert "fill" in made_by and report["coherence"]["filled_frames"] == made_by.count("fill")
        else:
            assert "fill" not in made_by


def test_flow_mode_carries_the_previous_output_and_lowers_warp_error(tmp_path: Path, pan_clip: Path) -> None:
    backend = RecordingBackend()
    with (
        render(pan_clip, tmp_path / "indep", "independent") as independent,
        render(pan_clip, tmp_path / "flow", "flow", backend=backend) as flow,
    ):
        assert mean_warp_error(flow) < 0.8 * mean_warp_error(independent)
        first, later = backend.requests[0], backend.requests[5]
        assert first.denoise == 0.5 and first.source_image is None  # a chain's start renders from the source
        assert later.denoise == flow.spec.coherence.flow_denoise
        # The init is built from the previous output, but the source frame travels with it.
        assert np.array_equal(np.asarray(later.source_image), read_png(flow.src_path(5)))
        assert not np.array_equal(np.asarray(later.init_image), read_png(flow.src_path(5)))


def test_keyframes_mode_calls_img2img_for_few_frames(tmp_path: Path, pan_clip: Path) -> None:
    backend = SimulatedImg2ImgBackend()
    with render(pan_clip, tmp_path / "job", "keyframes", backend=backend) as job:
        # K=4 over 13 frames: keyframes 0, 4, 8, 12; a steady pan leaves every fill well covered.
        assert backend.calls / 13 <= 0.31
        rows = job.ledger.frames()
        assert [r.idx for r in rows if r.info.get("made_by") != "fill"] == [0, 4, 8, 12]
        assert all(r.info["coverage"] >= 0.9 for r in rows if r.info.get("made_by") == "fill")


def test_low_coverage_in_between_frames_go_to_img2img(tmp_path: Path, pan_clip: Path) -> None:
    backend = RecordingBackend()
    with render(pan_clip, tmp_path / "job", "keyframes", backend=backend, **{"coherence.coverage_threshold": 1.0}):
        assert sorted(backend.requests) == list(range(13))  # nothing covers 100 %: every frame is rendered
        assert backend.requests[1].denoise == 0.3 and backend.requests[1].source_image is not None


def test_a_scene_cut_restarts_the_flow_chain(tmp_path: Path, cut_clip: Path) -> None:
    backend = RecordingBackend()
    with render(cut_clip, tmp_path / "job", "flow", backend=backend) as job:
        cut = backend.requests[6]
        assert cut.source_image is None and cut.denoise == job.spec.sampling.denoise
        assert np.array_equal(np.asarray(cut.init_image), read_png(job.src_path(6)))
        assert backend.requests[7].denoise == job.spec.coherence.flow_denoise
        assert job.ledger.frame(6).info["coherence"] == "alone"


def test_colour_matching_pulls_outputs_to_the_scene_start(tmp_path: Path, pan_clip: Path) -> None:
    with (
        render(pan_clip, tmp_path / "off", "independent") as plain,
        render(pan_clip, tmp_path / "on", "independent", **{"coherence.color_match": "first_frame"}) as matched,
    ):

        def spread(job: Job) -> float:
            means = [temporal.lab_stats(out)[0] for out in outputs(job)]
            return float(np.linalg.norm(np.std(means, axis=0)))

        assert np.array_equal(outputs(plain)[0], outputs(matched)[0])  # the reference itself is not changed
        assert spread(matched) < 0.5 * spread(plain)


def test_deflicker_evens_out_result_video_brightness(tmp_path: Path, pan_clip: Path) -> None:
    def brightness_jumps(job: Job) -> float:
        means = [frame.mean() for _, frame in decode_video(job.result_path)]
        return float(np.abs(np.diff(means)).mean())

    with (
        render(pan_clip, tmp_path / "off", "independent") as plain,
        render(pan_clip, tmp_path / "on", "independent", **{"coherence.deflicker": True}) as smooth,
    ):
        assert np.array_equal(outputs(plain)[3], outputs(smooth)[3])  # out/ keeps the frames as rendered
        assert brightness_jumps(smooth) < brightness_jumps(plain)


# --------------------------------------------------------------------------- resume


def render_with_kill(clip: Path, root: Path, mode: str, after_frames: int) -> None:
    """Stop the render the way a crash would leave it: after N frames, nothing finished."""
    spec = spec_for(clip, mode)
    cancel = CancelToken()
    seen = []

    def on_event(event: RenderEvent) -> None:
        if event.kind == "frame":
            seen.append(event.frame_index)
            if len(seen) >= after_frames:
                cancel.cancel()

    with create_job(spec, root) as job, pytest.raises(Cancelled):
        run_job(job, SimulatedImg2ImgBackend(spec), on_event=on_event, cancel=cancel)


@pytest.mark.parametrize("mode", ["flow", "keyframes"])
def test_resume_after_a_stop_gives_the_same_pixels(tmp_path: Path, pan_clip: Path, mode: str) -> None:
    with render(pan_clip, tmp_path / "whole", mode) as whole:
        expected = outputs(whole)
        seed = whole.spec.sampling.seed
    render_with_kill(pan_clip, tmp_path / "stopped", mode, after_frames=5)
    with open_job(tmp_path / "stopped") as job:
        assert 0 < job.ledger.counts()["done"] < 13
        assert job.spec.sampling.seed == seed
        run_job(job, SimulatedImg2ImgBackend(job.spec))
        assert all(np.array_equal(a, b) for a, b in zip(outputs(job), expected, strict=False))


KILLED_RENDER = textwrap.dedent("""
    import sys, time
    from pathlib import Path
    from vidstyle.backends.simulated import SimulatedImg2ImgBackend
    from vidstyle.job import open_job
    from vidstyle.render import run_job

    class Slow(SimulatedImg2ImgBackend):
        def img2img(self, request):
            time.sleep(0.3)  # leaves time to kill the process between frames, or inside one
            return super().img2img(request)

    def on_event(event):
        if event.kind == "frame":
            print("frame", event.frame_index, flush=True)

    with open_job(Path(sys.argv[1])) as job:
        run_job(job, Slow(job.spec), on_event=on_event)
""")


def test_resume_after_sigkill_in_a_flow_chain_gives_the_same_pixels(tmp_path: Path, pan_clip: Path) -> None:
    with render(pan_clip, tmp_path / "whole", "flow") as whole:
        expected = outputs(whole)
    create_job(spec_for(pan_clip, "flow"), tmp_path / "killed").close()
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    child = subprocess.Popen(
        [sys.executable, "-c", KILLED_RENDER, str(tmp_path / "killed")],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        lines = [child.stdout.readline() for _ in range(4)]
        assert all(line.startswith("frame") for line in lines), (lines, child.stderr.read() if child.poll() else "")
        os.kill(child.pid, signal.SIGKILL)
    finally:
        child.wait(timeout=60)
        child.stdout.close()
        child.stderr.close()
    assert child.returncode == -signal.SIGKILL
    with open_job(tmp_path / "killed") as job:
        assert 4 <= job.ledger.counts()["done"] < 13
        run_job(job, SimulatedImg2ImgBackend(job.spec))
        assert all(np.array_equal(a, b) for a, b in zip(outputs(job), expected, strict=False))


# --------------------------------------------------------------------------- redo inside a chain


def test_cli_redo_in_a_flow_chain_rerenders_its_followers(tmp_path: Path, pan_clip: Path, capsys: Any) -> None:
    root = tmp_path / "job"
    code = main(
        [
            "stylize",
            str(pan_clip),
            "-o",
            str(root),
            "-q",
            "--backend",
            "simulated",
            "--coherence",
            "flow",
            "--width",
            str(SIZE),
            "--height",
            str(SIZE),
            "--seed",
            "7",
            "--end-frame",
            "8",
        ]
    )
    assert code == 0
    with open_job(root) as job:
        before = outputs(job)
    capsys.readouterr()
    assert main(["redo", str(root), "--frames", "3", "--seed", "99", "-q"]) == 0
    assert "frames 4–7 follow frame 3 in its flow chain and will be re-rendered" in capsys.readouterr().err
    with open_job(root) as job:
        after = outputs(job)
        assert [np.array_equal(a, b) for a, b in zip(before, after, strict=False)] == [True] * 3 + [False] * 5
        assert [job.ledger.frame(i).attempt for i in range(8)] == [0, 0, 0, 1, 1, 1, 1, 1]
        assert (root / "history" / "000005_a0.png").is_file()  # followers' earlier outputs are kept too
        # Followers render with their own settings: only frame 3 took the new seed.
        assert list(job.ledger.frame(3).overrides) == ["sampling.seed"] and job.ledger.frame(5).overrides == {}
    assert main(["redo", str(root), "--frames", "5", "--only", "-q"]) == 0
    err = capsys.readouterr().err
    assert "warning: frames 6–7 follow frame 5" in err and "--frames 6-7" in err
    with open_job(root) as job:
        assert [job.ledger.frame(i).attempt for i in range(8)] == [0, 0, 0, 1, 1, 2, 1, 1]


def test_redo_of_a_keyframe_refills_its_segment(tmp_path: Path, pan_clip: Path) -> None:
    backend = SimulatedImg2ImgBackend()
    with render(pan_clip, tmp_path / "job", "keyframes") as job:
        followers = schedule_redo(job, [4], {}, followers=True)
        assert followers == [1, 2, 3, 5, 6, 7]  # the fills on both sides of keyframe 4
        run_job(job, backend)
        assert backend.calls == 1  # the keyframe; its neighbours are filled again, not rendered
        assert all(job.ledger.frame(i).info["made_by"] == "fill" for i in followers)
        # A redo asked for on an in-between frame itself renders it (a fill would come out the same).
        schedule_redo(job, [2], {})
        run_job(job, backend)
        assert backend.calls == 2 and job.ledger.frame(2).info["made_by"] == "img2img"


# --------------------------------------------------------------------------- the WebUI's server-side canny


def test_webui_server_side_canny_gets_the_source_frame_in_flow_mode(tmp_path: Path, pan_clip: Path) -> None:
    try:
        from tests.doubles.webui_double import DoubleServer, make_webui_double
    except ImportError:
        from doubles.webui_double import DoubleServer, make_webui_double
    from vidstyle.backends.webui_api import WebUIApiBackend

    server = DoubleServer(make_webui_double()).start()
    try:
        spec = spec_for(
            pan_clip,
            "flow",
            **{
                "backend.kind": "webui_api",
                "backend.webui_urls": [server.url],
                "model.checkpoint": "v1-5-pruned-emaonly",
                "controlnet.preprocessor": "server",
                "source.end_frame": 4,
            },
        )
        backend = WebUIApiBackend(spec)
        try:
            with create_job(spec, tmp_path / "job") as job:
                run_job(job, backend)
                requests = server.state.img2img_requests  # a flow chain: one frame after the other, in order
                assert len(requests) == 4
                for idx, payload in enumerate(requests):
                    unit = payload["alwayson_scripts"]["controlnet"]["args"][0]
                    assert unit["module"] == "canny"
                    decode = lambda b64: np.asarray(Image.open(io.BytesIO(base64.b64decode(b64))).convert("RGB"))  # noqa: E731
                    assert np.array_equal(decode(unit["image"]), read_png(job.src_path(idx))), idx
                    if idx > 0:  # the init is the warped previous output, not the source
                        assert not np.array_equal(decode(payload["init_images"][0]), read_png(job.src_path(idx)))
        finally:
            backend.close()
    finally:
        server.stop()


# --------------------------------------------------------------------------- settings that cannot work


def test_impossible_settings_are_one_sentence_or_a_stated_fallback(tmp_path: Path, pan_clip: Path) -> None:
    with pytest.raises(SpecError, match="deflicker_window"):
        spec_for(pan_clip, "flow", **{"coherence.deflicker_window": 0})
    with pytest.raises(SpecError, match="keyframe_interval"):
        spec_for(pan_clip, "keyframes", **{"coherence.keyframe_interval": 1})
    with render(pan_clip, tmp_path / "long_k", "keyframes", **{"coherence.keyframe_interval": 50}) as job:
        notes = json.loads((job.report_dir / "report.json").read_text())["coherence"]["notes"]
        assert notes == [
            "The keyframe interval (50) is not shorter than the clip (13 frames); "
            "only its first and last frames were keyframes."
        ]
        assert [r.idx for r in job.ledger.frames() if r.info.get("coherence") == "keyframe"] == [0, 12]
    events: list[RenderEvent] = []
    spec = spec_for(pan_clip, "flow", **{"source.end_frame": 1})
    with create_job(spec, tmp_path / "one") as job:
        run_job(job, SimulatedImg2ImgBackend(spec), on_event=events.append)
        note = "The clip has one frame, so flow mode has nothing to carry over; the frame was rendered on its own."
        assert note in [e.message for e in events if e.kind == "status"]
        assert job.ledger.get_meta("coherence_notes") == [note]


def test_plan_of_one_frame_scenes_and_followers() -> None:
    plan = plan_frames(CoherenceSpec(mode="flow"), 6, [3, 4])
    assert [s.how for s in plan.steps] == ["alone", "flow", "flow", "alone", "alone", "flow"]
    assert plan.followers([1]) == [2] and plan.followers([3]) == []
    assert plan.notes == ["1 scene(s) of one frame (between scene cuts) were rendered on their own."]
    keys = plan_frames(CoherenceSpec(mode="keyframes", keyframe_interval=3, color_match="keyframe"), 8, [])
    assert [(s.idx, s.how, s.before, s.after, s.colour_ref) for s in keys.steps][5:] == [
        (5, "between", 3, 6, 3),
        (6, "keyframe", None, None, 0),
        (7, "keyframe", None, None, 0),
    ]


# --------------------------------------------------------------------------- the tab and the CLI read the declarations


def test_tab_builds_the_coherence_widgets_from_the_spec(tmp_path: Path) -> None:
    gr = pytest.importorskip("gradio", reason="the tab needs gradio")
    from vidstyle.manager import JobManager
    from vidstyle.spec import field_info
    from vidstyle.ui import UiChoices, build_tab_parts, values_to_spec

    manager = JobManager(tmp_path / "jobs")
    try:
        parts = build_tab_parts(
            manager, UiChoices(checkpoints=lambda: ["tiny"], loras=lambda: [], controlnet_models=lambda: ["tiny"])
        )[1]
        mode = parts.widgets["coherence.mode"]
        assert isinstance(mode, gr.Dropdown) and mode.value == "flow"  # the preset's value
        interval = parts.widgets["coherence.keyframe_interval"]
        assert (interval.minimum, interval.maximum) == (
            field_info("coherence.keyframe_interval")["ge"],
            field_info("coherence.keyframe_interval")["le"],
        )
        assert isinstance(parts.widgets["coherence.deflicker"], gr.Checkbox)
        values = {key: widget.value for key, widget in parts.widgets.items()}
        values.update({"coherence.mode": "keyframes", "coherence.keyframe_interval": 6.0})
        spec = values_to_spec(values)
        assert (spec.coherence.mode, spec.coherence.keyframe_interval) == ("keyframes", 6)
    finally:
        manager.close()


def test_cli_flags_come_from_the_coherence_declarations() -> None:
    from vidstyle.cli import build_parser, collect_overrides

    args = build_parser().parse_args(
        [
            "stylize",
            "clip.mp4",
            "-o",
            "out",
            "--coherence",
            "keyframes",
            "--keyframe-interval",
            "6",
            "--deflicker",
            "true",
            "--color-match",
            "keyframe",
        ]
    )
    overrides = collect_overrides(args)
    spec = load_spec("anime-canny-sd15", {k: v for k, v in overrides.items()})
    assert (
        spec.coherence.mode,
        spec.coherence.keyframe_interval,
        spec.coherence.deflicker,
        spec.coherence.color_match,
    ) == ("keyframes", 6, True, "keyframe")
    with pytest.raises(SystemExit):
        build_parser().parse_args(["stylize", "clip.mp4", "-o", "out", "--coherence", "sideways"])


def test_a_failed_frame_holds_back_its_chain_and_resume_finishes_it(tmp_path: Path, pan_clip: Path) -> None:
    from vidstyle.errors import BackendError, JobStateError

    class FailsFrame3(SimulatedImg2ImgBackend):
        def img2img(self, request: Img2ImgRequest) -> Img2ImgResult:
            if request.frame_index == 3:
                raise BackendError("server said no")
            return super().img2img(request)

    spec = spec_for(pan_clip, "flow", **{"source.end_frame": 6})
    events: list[RenderEvent] = []
    with create_job(spec, tmp_path / "job") as job:
        with pytest.raises(JobStateError, match="1 frame"):
            run_job(job, FailsFrame3(spec), on_event=events.append)
        assert "frames 4–5 start from frame 3 and wait for it" in " ".join(e.message for e in events)
        assert job.ledger.counts() == {"pending": 2, "done": 3, "failed": 1}
        run_job(job, SimulatedImg2ImgBackend(spec))
        assert job.ledger.counts()["done"] == 6


def test_in_process_webui_server_canny_gets_the_source_not_the_flow_init(webui: Any) -> None:
    from modules import processing  # the WebUI module doubles the `webui` fixture installs

    spec = job_spec(**{"controlnet.preprocessor": "server"})
    source = request_for(spec)
    blended = Image.fromarray(np.full((64, 64, 3), 90, np.uint8))  # what a flow-guided init looks like to the unit
    request = Img2ImgRequest(**{**source.__dict__, "init_image": blended, "source_image": source.init_image})
    backend_for(spec).img2img(request)
    (unit,) = processing._runs[-1]._controlnet_units
    assert unit.module == "canny" and np.array_equal(unit.image, np.asarray(source.init_image))


def test_a_client_of_the_server_cannot_pick_the_simulation(pan_clip: Path) -> None:
    from vidstyle.policy import PolicyError, ServerPolicy

    with pytest.raises(PolicyError, match="'simulated' backend"):
        ServerPolicy().check_spec(spec_for(pan_clip, "flow"))
