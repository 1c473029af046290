"""The `vidstyle` command line as a user meets it: one sentence and a non-zero exit per mistake."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from vidstyle.cli import main


def run_cli(capsys: pytest.CaptureFixture, *args: str) -> tuple[int, str, str]:
    code = main([str(a) for a in args])
    out, err = capsys.readouterr()
    return code, out, err


def _one_sentence(err: str) -> str:
    lines = [line for line in err.strip().splitlines() if line.startswith("error:")]
    assert len(lines) == 1, err
    assert "Traceback" not in err
    return lines[0]


def test_probe_prints_facts(capsys: pytest.CaptureFixture, demo_clip: Path) -> None:
    code, out, _ = run_cli(capsys, "probe", demo_clip)
    assert code == 0
    assert "96" in out and "64" in out and "fps" in out


def test_not_a_video(capsys: pytest.CaptureFixture, tmp_path: Path) -> None:
    fake = tmp_path / "notes.mp4"
    fake.write_text("this is not a video")
    code, _, err = run_cli(capsys, "stylize", fake, "-o", tmp_path / "job", "--backend", "passthrough")
    assert code == 2
    _one_sentence(err)
    assert not (tmp_path / "job").exists()


def test_missing_video(capsys: pytest.CaptureFixture, tmp_path: Path) -> None:
    code, _, err = run_cli(capsys, "stylize", tmp_path / "nope.mp4", "-o", tmp_path / "job")
    assert code == 2
    assert "nope.mp4" in _one_sentence(err)


def test_truncated_video(capsys: pytest.CaptureFixture, tmp_path: Path, demo_clip: Path) -> None:
    broken = tmp_path / "broken.mp4"
    broken.write_bytes(demo_clip.read_bytes()[:2000])
    code, _, err = run_cli(capsys, "stylize", broken, "-o", tmp_path / "job", "--backend", "passthrough")
    assert code == 2
    _one_sentence(err)


def test_invalid_option_value(capsys: pytest.CaptureFixture, tmp_path: Path, demo_clip: Path) -> None:
    code, _, err = run_cli(capsys, "stylize", demo_clip, "-o", tmp_path / "job", "--denoise", "1.7")
    assert code == 2
    assert "sampling.denoise" in _one_sentence(err)
    code, _, err = run_cli(capsys, "stylize", demo_clip, "-o", tmp_path / "job", "--set", "sampling.cfg=3")
    assert "unknown setting 'sampling.cfg'" in _one_sentence(err)


def test_unknown_sampler_and_missing_models(capsys: pytest.CaptureFixture, tmp_path: Path, demo_clip: Path) -> None:
    pytest.importorskip("diffusers", reason="the standalone backend needs diffusers")
    base = ["stylize", demo_clip, "--end-frame", "2", "--width", "64", "--height", "64", "-q"]
    code, _, err = run_cli(capsys, *base, "-o", tmp_path / "j1", "--model", "tiny", "--sampler", "Heun++ Magic")
    assert code == 2 and "Heun++ Magic" in _one_sentence(err)
    code, _, err = run_cli(capsys, *base, "-o", tmp_path / "j2", "--model", tmp_path / "missing.safetensors")
    assert code == 2 and "missing.safetensors" in _one_sentence(err)
    code, _, err = run_cli(
        capsys, *base, "-o", tmp_path / "j3", "--model", "tiny", "--lora", f"{tmp_path / 'zhongli.safetensors'}:0.8"
    )
    assert code == 2 and "zhongli.safetensors" in _one_sentence(err)
    # preflight failed before anything was written, so the corrected command simply runs
    for job in ("j1", "j2", "j3"):
        assert not (tmp_path / job).exists()
    code, _, err = run_cli(capsys, *base, "-o", tmp_path / "j3", "--model", "tiny")
    assert code == 0, err
    assert (tmp_path / "j3" / "result.mp4").is_file()


def test_unwritable_output(capsys: pytest.CaptureFixture, tmp_path: Path, demo_clip: Path) -> None:
    if os.geteuid() == 0:
        target = Path("/proc/vidstyle-job")  # not writable even for root
    else:
        locked = tmp_path / "locked"
        locked.mkdir(mode=0o500)
        target = locked / "job"
    code, _, err = run_cli(capsys, "stylize", demo_clip, "-o", target, "--backend", "passthrough")
    assert code != 0
    _one_sentence(err)


def test_resume_of_non_job(capsys: pytest.CaptureFixture, tmp_path: Path) -> None:
    code, _, err = run_cli(capsys, "resume", tmp_path)
    assert code == 6
    assert "not a vidstyle job folder" in _one_sentence(err)


def test_existing_job_folder_is_not_overwritten(capsys: pytest.CaptureFixture, tmp_path: Path, demo_clip: Path) -> None:
    args = [
        "stylize",
        demo_clip,
        "-o",
        tmp_path / "job",
        "--backend",
        "passthrough",
        "--end-frame",
        "3",
        "--width",
        "64",
        "--height",
        "64",
        "-q",
    ]
    assert run_cli(capsys, *args)[0] == 0
    code, _, err = run_cli(capsys, *args)
    assert code == 2 and "vidstyle resume" in _one_sentence(err)


def test_stylize_redo_and_audio_note(capsys: pytest.CaptureFixture, tmp_path: Path, demo_clip: Path) -> None:
    job = tmp_path / "job"
    code, out, _ = run_cli(
        capsys,
        "stylize",
        demo_clip,
        "-o",
        job,
        "--backend",
        "passthrough",
        "--end-frame",
        "4",
        "--width",
        "64",
        "--height",
        "64",
        "-q",
    )
    assert code == 0 and "result.mp4" in out and "audio: kept" in out
    code, out, _ = run_cli(capsys, "redo", job, "--frames", "1-2", "--denoise", "0.2", "-q")
    assert code == 0
    assert (job / "history" / "000001_a0.png").is_file()


def test_console_entry_point_runs(tmp_path: Path) -> None:
    result = subprocess.run([sys.executable, "-m", "vidstyle", "--help"], capture_output=True, text=True)
    assert result.returncode == 0 and "stylize" in result.stdout
