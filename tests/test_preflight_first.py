"""Preflight before anything is written (issue 16 item 1, issue 9 item 7), driven through the
CLI against the WebUI API double, as a user with a LoRA typo meets it: the typo fails before a
job folder exists or a frame is decoded, and the corrected command simply runs.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from vidstyle.cli import main
from vidstyle.errors import Cancelled
from vidstyle.job import create_job, open_job, prepare
from vidstyle.render import CancelToken, RenderEvent, run_job
from vidstyle.spec import JobSpec, load_spec

try:
    from tests.doubles.webui_double import DoubleServer, make_webui_double
except ImportError:  # pytest run with tests/ (not the repo root) on sys.path
    from doubles.webui_double import DoubleServer, make_webui_double

LORA = "zhongli"
TYPO = "zhongly"


@pytest.fixture(scope="module")
def webui() -> Iterator[DoubleServer]:
    server = DoubleServer(make_webui_double(loras=[LORA])).start()
    yield server
    server.stop()


def webui_args(server: DoubleServer, lora: str) -> list[str]:
    return [
        "--webui",
        server.url,
        "--model",
        "v1-5-pruned-emaonly",
        "--controlnet-model",
        "control_v11p_sd15_canny",
        "--sampler",
        "Euler a",
        "--lora",
        f"{lora}:0.8",
        "--width",
        "64",
        "--height",
        "64",
        "--seed",
        "5",
    ]


def webui_spec(server: DoubleServer, clip: Path, lora: str, **extra: object) -> JobSpec:
    overrides = {
        "source.path": str(clip),
        "backend.kind": "webui_api",
        "backend.webui_urls": [server.url],
        "model.checkpoint": "v1-5-pruned-emaonly",
        "controlnet.model": "control_v11p_sd15_canny",
        "sampling.sampler": "Euler a",
        "model.loras": [{"name": lora, "weight": 0.8}],
        "size.width": 64,
        "size.height": 64,
        "sampling.seed": 5,
    }
    overrides.update(extra)
    return load_spec(None, overrides)


def run_cli(capsys: pytest.CaptureFixture, *args: object) -> tuple[int, str, str]:
    code = main([str(a) for a in args])
    out, err = capsys.readouterr()
    return code, out, err


def one_sentence(err: str) -> str:
    lines = [line for line in err.strip().splitlines() if line.startswith("error:")]
    assert len(lines) == 1 and "Traceback" not in err, err
    return lines[0]


def test_a_lora_typo_leaves_no_folder_and_the_corrected_run_succeeds(
    capsys: pytest.CaptureFixture, tmp_path: Path, demo_clip: Path, webui: DoubleServer
) -> None:
    job = tmp_path / "job"
    code, _, err = run_cli(capsys, "stylize", demo_clip, "-o", job, "--end-frame", "3", "-q", *webui_args(webui, TYPO))
    assert code == 4 and TYPO in one_sentence(err)
    assert not job.exists()  # nothing written: no folder that blocks the retry
    code, out, err = run_cli(
        capsys, "stylize", demo_clip, "-o", job, "--end-frame", "3", "-q", *webui_args(webui, LORA)
    )
    assert code == 0, err
    assert (job / "result.mp4").is_file() and "result.mp4" in out


def test_an_earlier_failed_attempt_is_replaced_and_the_user_is_told(
    capsys: pytest.CaptureFixture, tmp_path: Path, demo_clip: Path, webui: DoubleServer
) -> None:
    """A folder left by a failed start (an earlier version, or a cancel while preparing)."""
    job = tmp_path / "job"
    with create_job(webui_spec(webui, demo_clip, TYPO, **{"source.end_frame": 3}), job) as attempt:
        prepare(attempt)
    code, _, err = run_cli(capsys, "stylize", demo_clip, "-o", job, "--end-frame", "3", "-q", *webui_args(webui, LORA))
    assert code == 0, err
    assert "replacing the earlier attempt" in err
    with open_job(job) as done:
        assert [lora.name for lora in done.spec.model.loras] == [LORA]
        assert done.ledger.counts()["done"] == 3


def test_a_lora_typo_fails_before_any_frame_is_decoded(
    capsys: pytest.CaptureFixture, tmp_path: Path, demo_clip: Path, webui: DoubleServer
) -> None:
    """Resuming a job that was never prepared: preflight runs before the whole clip is decoded."""
    job = tmp_path / "job"
    create_job(webui_spec(webui, demo_clip, TYPO), job).close()  # the whole 30-frame clip
    code, _, err = run_cli(capsys, "resume", job, "-q")
    assert code == 4 and TYPO in one_sentence(err)
    assert list((job / "src").glob("*.png")) == [] and list((job / "control").glob("*.png")) == []


def test_resume_takes_the_fix_for_a_job_without_rendered_frames(
    capsys: pytest.CaptureFixture, tmp_path: Path, demo_clip: Path, webui: DoubleServer
) -> None:
    job = tmp_path / "job"
    create_job(webui_spec(webui, demo_clip, TYPO, **{"source.end_frame": 3}), job).close()
    assert run_cli(capsys, "resume", job, "-q")[0] == 4
    code, _, err = run_cli(capsys, "resume", job, "-q", "--lora", f"{LORA}:0.8")
    assert code == 0, err
    with open_job(job) as done:
        assert [lora.name for lora in done.spec.model.loras] == [LORA]
        assert done.spec.sampling.seed == 5
    # once frames are rendered, settings change only through redo
    code, _, err = run_cli(capsys, "resume", job, "-q", "--denoise", "0.2")
    assert code == 2 and "vidstyle redo" in one_sentence(err)


def test_a_folder_with_a_finished_frame_is_not_replaced(
    capsys: pytest.CaptureFixture, tmp_path: Path, demo_clip: Path
) -> None:
    job = tmp_path / "job"
    cancel = CancelToken()

    def stop_after_first(event: RenderEvent) -> None:
        if event.kind == "frame":
            cancel.cancel()

    spec = load_spec(
        None,
        {
            "source.path": str(demo_clip),
            "backend.kind": "passthrough",
            "size.width": 64,
            "size.height": 64,
            "source.end_frame": 6,
        },
    )
    with create_job(spec, job) as started:
        with pytest.raises(Cancelled):
            run_job(started, on_event=stop_after_first, cancel=cancel)
    frames = {p.name: p.read_bytes() for p in (job / "out").glob("*.png")}
    spec_text = (job / "job.toml").read_text()
    assert frames
    code, _, err = run_cli(
        capsys,
        "stylize",
        demo_clip,
        "-o",
        job,
        "--backend",
        "passthrough",
        "--width",
        "64",
        "--height",
        "64",
        "--end-frame",
        "6",
        "-q",
    )
    assert code == 2 and "vidstyle resume" in one_sentence(err)
    assert {p.name: p.read_bytes() for p in (job / "out").glob("*.png")} == frames
    assert (job / "job.toml").read_text() == spec_text
