"""The training launcher: argv building, sd-scripts discovery, log parsing on sd-scripts' real
console format, and whole runs against tests/doubles/sd_scripts_double (a stand-in that
prints sd-scripts' formats and writes its files; it trains nothing), including a NaN run,
an exploding loss, a crash, Ctrl-C and --resume."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import train_helpers as th  # tests/train_helpers.py

from trainer import commands
from trainer.config_errors import parse_dataset_config, parse_train_args
from trainer.launch import (
    LaunchOptions,
    TrainingError,
    build_argv,
    hint_for,
    latest_state,
    launcher_prefix,
    read_progress,
    relevant_lines,
    train,
    with_default_sigint,
)
from trainer.progress import LogParser, LossGuard, Progress, parse_interval, parse_rate
from trainer.run import load_run
from trainer.sdscripts import check_support, find_sd_scripts, inspect_sd_scripts, missing_features
from vidstyle.errors import ModelNotFoundError, PreflightError, UserInputError

ROOT = Path(__file__).resolve().parent.parent

# --------------------------------------------------------------------------- argv


def test_argv_sd15_one_gpu_is_accelerate_launch(tmp_path: Path) -> None:
    bindir = tmp_path / "venv" / "bin"
    bindir.mkdir(parents=True)
    (bindir / "accelerate").write_text("")
    argv = build_argv(
        Path("/sd/train_network.py"), Path("/run/config.toml"), "fp16", gpus=1, python=str(bindir / "python")
    )
    assert argv == [
        str(bindir / "accelerate"), "launch", "--num_cpu_threads_per_process", "1", "--mixed_precision", "fp16",
        "--num_processes", "1", "--num_machines", "1", "--dynamo_backend", "no",
        "/sd/train_network.py", "--config_file", "/run/config.toml",
    ]  # fmt: skip


def test_argv_sdxl_several_gpus_uses_accelerates_options() -> None:
    argv = build_argv(
        Path("/sd/sdxl_train_network.py"),
        Path("/run/config.toml"),
        "bf16",
        gpus=2,
        python="/nowhere/python",
        gpu_ids="0,1",
    )
    assert argv[:3] == [
        "/nowhere/python",
        "-m",
        "accelerate.commands.launch",
    ]  # no accelerate script beside that python
    assert argv[argv.index("--num_processes") + 1] == "2" and "--multi_gpu" in argv
    assert argv[argv.index("--gpu_ids") + 1] == "0,1" and argv[argv.index("--mixed_precision") + 1] == "bf16"
    assert argv.index("--multi_gpu") < argv.index("/sd/sdxl_train_network.py")  # launcher options before the script
    assert argv[-3:] == ["/sd/sdxl_train_network.py", "--config_file", "/run/config.toml"]


def test_argv_resume_and_python_launcher() -> None:
    argv = build_argv(
        Path("/sd/train_network.py"),
        Path("/r/c.toml"),
        launcher="python",
        python="/py",
        resume=Path("/r/out/x-000002-state"),
    )
    assert argv == ["/py", "/sd/train_network.py", "--config_file", "/r/c.toml", "--resume", "/r/out/x-000002-state"]
    with pytest.raises(UserInputError, match="one process"):
        build_argv(Path("/sd/t.py"), Path("/c"), launcher="python", gpus=2)
    with pytest.raises(UserInputError, match="at least 1"):
        build_argv(Path("/sd/t.py"), Path("/c"), gpus=0)


def test_launcher_prefix_prefers_the_environments_console_script(tmp_path: Path) -> None:
    assert launcher_prefix(str(tmp_path / "python")) == [str(tmp_path / "python"), "-m", "accelerate.commands.launch"]
    (tmp_path / "accelerate").write_text("")
    assert launcher_prefix(str(tmp_path / "python")) == [str(tmp_path / "accelerate"), "launch"]


# --------------------------------------------------------------------------- log parsing

HEADER = (
    "prepare optimizer, data loader etc.\n"
    "override steps. steps for 2 epochs is / 指定エポックまでのステップ数: 8\n"
    "running training / 学習開始\n"
    "  num train images * repeats / 学習画像の数×繰り返し回数: 8\n"
    "  num validation images * repeats / 学習画像の数×繰り返し回数: 2\n"
    "  num reg images / 正則化画像の数: 0\n"
    "  num batches per epoch / 1epochのバッチ数: 4\n"
    "  num epochs / epoch数: 2\n"
    "  batch size per device / バッチサイズ: 2\n"
    "  gradient accumulation steps / 勾配を合計するステップ数 = 1\n"
    "  total optimization steps / 学習ステップ数: 8\n"
)


def bar(n: int, total: int, postfix: str, desc: str = "steps", rate: str = "1.41it/s", remaining: str = "00:05") -> str:
    filled = "█" * (10 * n // total)
    return (
        f"\r{desc}: {100 * n // total:3d}%|{filled:<10}| {n}/{total} [00:03<{remaining}, "
        f"{rate}{', ' + postfix if postfix else ''}]"
    )


def sd_scripts_log() -> str:
    """sd-scripts v0.10.1's console output for 2 epochs, stdout and stderr interleaved as in a pipe."""
    parts = [HEADER, bar(0, 8, "", rate="?it/s", remaining="?"), "\nepoch 1/2\n\n"]
    parts += [bar(i, 8, f"avr_loss={0.2 - 0.01 * i:.3g}") for i in range(1, 5)]
    parts += [
        "\n",
        bar(0, 8, "", desc="epoch validation steps"),
        bar(8, 8, "val_epoch_avg_loss=0.151, timestep=800", desc="epoch validation steps"),
    ]
    parts += [
        "\n\nsaving checkpoint: /run/output/lora-000001.safetensors\n",
        "\ngenerating sample images at step / サンプル画像生成 ステップ: 4\n",
    ]
    parts += ["prompt: lora, 1girl\n", "\nepoch 2/2\n\n"]
    parts += [bar(i, 8, f"avr_loss={0.2 - 0.01 * i:.3g}") for i in range(5, 9)]
    parts += [
        "\n",
        bar(0, 8, "", desc="epoch validation steps"),
        bar(8, 8, "val_epoch_avg_loss=0.162, timestep=800", desc="epoch validation steps"),
    ]
    parts += ["\n\nsaving checkpoint: /run/output/lora.safetensors\n", "model saved.\n"]
    return "".join(parts)


def test_parser_reads_sd_scripts_console_format() -> None:
    events: list[str] = []
    parser = LogParser()
    text = sd_scripts_log()
    for start in range(0, len(text), 37):  # arbitrary chunk boundaries, as a pipe delivers them
        events += parser.feed(text[start : start + 37])
    events += parser.flush()
    p = parser.progress
    assert (p.train_images, p.val_images, p.batches_per_epoch, p.total_epochs, p.total_steps) == (8, 2, 4, 2, 8)
    assert p.step == 8 and p.epoch == 2 and p.model_saved and p.phase == "done"
    assert p.avr_loss == pytest.approx(0.12) and p.it_per_s == pytest.approx(1.41) and p.eta_seconds == 5
    assert p.epochs == {
        "1": {"train_loss": pytest.approx(0.16), "val_loss": 0.151},
        "2": {"train_loss": pytest.approx(0.12), "val_loss": 0.162},
    }
    assert [c["epoch"] for c in p.checkpoints] == [1, 2]  # the final save is named without a number
    assert p.loss_history[0] == (1, pytest.approx(0.19)) and len(p.loss_history) == 8
    assert (
        events.count("epoch") == 2 and events.count("checkpoint") == 2 and "sampling" in events and events[-1] == "done"
    )


def test_parser_tolerates_rich_columns_ansi_and_crlf() -> None:
    parser = LogParser()
    parser.feed(
        "2026-02-16 10:00:00 INFO     generating sample images at step / サンプル画像生成 ステップ: 10     "
        "train_util.py:6394\r\n"
    )
    assert parser.progress.phase == "sampling"
    parser.feed("\x1b[A" + bar(3, 10, "avr_loss=0.0912").lstrip("\r") + "\x1b[A\n")
    assert parser.progress.step == 3 and parser.progress.avr_loss == 0.0912
    parser.feed(bar(4, 10, "Keys Scaled=3, Average key norm=0.5, avr_loss=0.0901", rate="2.50s/it") + "\n")
    assert parser.progress.avr_loss == 0.0901 and parser.progress.it_per_s == pytest.approx(0.4)


def test_parser_flags_nan_and_errors() -> None:
    parser = LogParser()
    events = parser.feed(HEADER + bar(2, 8, "avr_loss=nan") + "\nNaN found in latents, replacing with zeros\n")
    # the traceback follows tqdm's last redraw on the same line: stderr had no newline in between
    events += parser.feed(
        bar(3, 8, "avr_loss=nan")
        + 'Traceback (most recent call last):\n  File "train_network.py", line 1, in <module>\n'
    )
    events += parser.feed("torch.OutOfMemoryError: CUDA out of memory. Tried to allocate 2.00 GiB\n")
    assert "nan" in events and "nan_latents" in events and "error" in events
    assert parser.progress.errors == ["torch.OutOfMemoryError: CUDA out of memory. Tried to allocate 2.00 GiB"]
    assert relevant_lines(parser)[0].startswith("Traceback") and parser.progress.step == 3
    assert "ran out of memory" in (hint_for(relevant_lines(parser)) or "")


def test_parser_counts_steps_of_a_resumed_run() -> None:
    # plain --resume: sd-scripts keeps the full bar but restarts the count and skips finished epochs
    parser = LogParser(step_offset=4)
    parser.feed(HEADER + bar(0, 8, "") + "\nepoch 2/2\n\n" + bar(3, 8, "avr_loss=0.1") + "\n")
    assert parser.progress.step == 7 and parser.progress.total_steps == 8
    # skip_until_initial_step: the bar counts only the remaining steps
    skipping = LogParser()
    skipping.feed(HEADER + bar(3, 4, "avr_loss=0.1") + "\n")
    assert skipping.progress.step == 7


@pytest.mark.parametrize(
    "line, fragment",
    [
        (
            "voluptuous.error.MultipleInvalid: extra keys not allowed @ data['datasets'][0]['subsets'][0]['foo']",
            "rejected dataset.toml",
        ),
        (
            "model is not found as a file or in Hugging Face, perhaps file name is wrong? / x: /m.safetensors",
            "base checkpoint",
        ),
        ("ModuleNotFoundError: No module named 'bitsandbytes'", "bitsandbytes"),
        ("ModuleNotFoundError: No module named 'einops'", "requirements are missing"),
        ("torch.distributed.DistNetworkError: NCCL error", "Multi-GPU"),
        ("No data found. Please verify arguments", "no training images"),
    ],
)
def test_hints_for_known_failures(line: str, fragment: str) -> None:
    assert fragment in (hint_for([line]) or "")


def test_interval_and_rate_helpers() -> None:
    assert parse_interval("01:02:03") == 3723 and parse_interval("10:22") == 622 and parse_interval("?") is None
    assert parse_rate(" 1.41it/s") == 1.41 and parse_rate("4.00s/it") == 0.25 and parse_rate("?it/s") is None


def test_loss_guard() -> None:
    guard = LossGuard(factor=4.0, min_steps=5)
    progress = Progress(batches_per_epoch=4)
    for step, loss in enumerate([0.2, 0.15, 0.12, 0.11, 0.1, 0.1, 0.12, 0.3], start=1):
        progress.step, progress.avr_loss = step, loss
        assert guard.check(progress) is None
    progress.step, progress.avr_loss = 9, 0.45
    assert "exploded" in (guard.check(progress) or "")
    progress.avr_loss = float("nan")
    assert "nan" in (guard.check(progress) or "")
    assert LossGuard(factor=0).check(Progress(step=50, avr_loss=9.0, best_loss=0.1)) is None  # factor 0: only NaN stops


# --------------------------------------------------------------------------- sd-scripts discovery


def test_missing_sd_scripts_explains_both_ways(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("VIDSTYLE_SD_SCRIPTS", raising=False)
    monkeypatch.delenv("SD_SCRIPTS", raising=False)
    with pytest.raises(PreflightError) as err:
        find_sd_scripts(str(tmp_path / "nothing"))
    assert "setup-sd-scripts" in str(err.value) and "git clone --branch v0.10.1" in str(err.value)
    monkeypatch.setenv("VIDSTYLE_SD_SCRIPTS", str(th.SD_SCRIPTS_DOUBLE))
    assert find_sd_scripts().root == th.SD_SCRIPTS_DOUBLE.resolve()


def test_feature_probe_reads_the_argparse_source() -> None:
    sd = inspect_sd_scripts(th.SD_SCRIPTS_DOUBLE)
    assert {
        "network_dim",
        "validate_every_n_epochs",
        "cache_text_encoder_outputs",
        "console_log_simple",
    } <= sd.arguments
    assert sd.warmup_fraction and sd.version.startswith("unknown")


@pytest.fixture()
def old_sd_scripts(tmp_path: Path) -> Path:
    """The double as a pre-v0.10 checkout: no validation options, no fractional warmup."""
    copy = tmp_path / "sd-scripts-v0.9"
    shutil.copytree(th.SD_SCRIPTS_DOUBLE, copy, ignore=shutil.ignore_patterns("__pycache__"))
    script = copy / "train_network.py"
    script.write_text("\n".join(line for line in script.read_text().splitlines() if "validat" not in line) + "\n")
    config = copy / "library" / "config_util.py"
    config.write_text(config.read_text().replace('"validation_seed": int, "validation_split": float,', ""))
    util = copy / "library" / "train_util.py"
    util.write_text(util.read_text().replace("def int_or_float", "def _old_int_or_float"))
    return copy


def test_old_sd_scripts_is_refused_with_the_release_needed(old_sd_scripts: Path) -> None:
    sd = inspect_sd_scripts(old_sd_scripts)
    dataset = parse_dataset_config(
        {"datasets": [{"subsets": [{"image_dir": "/d"}]}, {"validation_split": 1.0, "subsets": [{"image_dir": "/v"}]}]}
    )
    train_args = parse_train_args(
        dict(
            pretrained_model_name_or_path="/m",
            network_dim=8,
            network_alpha=4.0,
            learning_rate=1e-4,
            dataset_config="/d.toml",
            output_dir="/o",
            output_name="n",
            max_train_epochs=2,
            validate_every_n_epochs=1,
            lr_warmup_steps=0.05,
        )
    )
    assert set(missing_features(sd, train_args, dataset)) == {
        "validate_every_n_epochs",
        "validation_split",
        "lr_warmup_steps as a fraction",
    }
    with pytest.raises(PreflightError, match=r"does not support .*validate_every_n_epochs.*\(added in v0.10.0\)"):
        check_support(sd, train_args, dataset)


# --------------------------------------------------------------------------- runs against the double


@pytest.fixture(scope="module")
def inputs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    return th.run_inputs(tmp_path_factory.mktemp("launch"), ("sd15", "sdxl"))


@pytest.fixture()
def double_env(monkeypatch: pytest.MonkeyPatch) -> None:
    th.use_sd_scripts_double(monkeypatch)


def make_run(
    inputs: dict[str, Path], out: Path, preset: str = "sd15-character", epochs: int = 3, extra: list[str] = ()
) -> Path:  # type: ignore[assignment]
    model = inputs["sdxl" if preset.startswith("sdxl") else "sd15"]
    argv = th.config_argv(
        inputs["dataset"],
        model,
        out,
        preset,
        extra=["--set", f"max_train_epochs={epochs}", "--set", "dataset.batch_size=2", *extra],
    )
    assert commands.main(argv) == 0
    return out


QUIET = dict(show_bar=False, stop_grace=10.0)


def test_full_run_sd15(
    inputs: dict[str, Path], tmp_path: Path, double_env: None, capsys: pytest.CaptureFixture[str]
) -> None:
    run_dir = make_run(inputs, tmp_path / "run")
    progress = train(run_dir, LaunchOptions(**QUIET))
    assert progress.state == "finished" and progress.model_saved and progress.returncode == 0
    assert (progress.step, progress.total_steps, progress.epoch, progress.total_epochs) == (
        12,
        12,
        3,
        3,
    )  # 4 images x 2 / batch 2 = 4 steps
    assert [c["epoch"] for c in progress.checkpoints] == [1, 2, 3]
    assert set(progress.epochs) == {"1", "2", "3"} and all(e["val_loss"] is not None for e in progress.epochs.values())
    output = run_dir / "output"
    assert sorted(p.name for p in output.glob("*.safetensors")) == [
        "mikuchan-000001.safetensors",
        "mikuchan-000002.safetensors",
        "mikuchan.safetensors",
    ]
    assert len(list((output / "sample").glob("mikuchan_e000000_*_1234.png"))) == 1  # sample_at_first
    assert len(progress.samples) == 4 * 5
    saved = json.loads((run_dir / "progress.json").read_text())
    assert saved["state"] == "finished" and saved["step"] == 12
    log = (run_dir / "train.log").read_text(encoding="utf-8")
    assert "running training / 学習開始" in log and "steps:" in log and "model saved." in log
    command = (run_dir / "command.txt").read_text()
    assert command.split()[1:] == [
        str(th.SD_SCRIPTS_DOUBLE.resolve() / "train_network.py"),
        "--config_file",
        str(run_dir.resolve() / "config.toml"),
    ]
    notes = capsys.readouterr().err
    assert "epoch 2/3" in notes and "saved mikuchan-000001.safetensors (epoch 1)" in notes and "done:" in notes


def test_full_run_sdxl(inputs: dict[str, Path], tmp_path: Path, double_env: None) -> None:
    run_dir = make_run(
        inputs,
        tmp_path / "xl",
        preset="sdxl-style-r4",
        epochs=2,
        extra=["--set", "dataset.resolution=512", "--set", "dataset.min_bucket_reso=256"],
    )
    progress = train(run_dir, LaunchOptions(**QUIET))
    assert progress.state == "finished" and progress.total_epochs == 2
    assert "sdxl_train_network.py" in (run_dir / "command.txt").read_text()
    from vidstyle.safetensors_header import read_metadata

    meta = read_metadata(run_dir / "output" / "mikuchan.safetensors")
    assert (
        meta["ss_base_model_version"] == "sdxl_base_v1-0" and meta["ss_network_dim"] == "4" and meta["ss_epoch"] == "2"
    )


def test_nan_loss_stops_the_run_early(
    inputs: dict[str, Path], tmp_path: Path, double_env: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    run_dir = make_run(inputs, tmp_path / "nan", epochs=4)
    th.bad_loss(monkeypatch, "nan", step_seconds=0.05)
    with pytest.raises(TrainingError, match="the loss became nan") as err:
        train(run_dir, LaunchOptions(**QUIET))
    assert "learning rate" in str(err.value)
    progress = read_progress(run_dir)
    assert progress is not None and progress.state == "failed" and progress.step < progress.total_steps
    assert "mikuchan.safetensors" not in [p.name for p in (run_dir / "output").glob("*.safetensors")]


def test_exploding_loss_stops_the_run_early(
    inputs: dict[str, Path], tmp_path: Path, double_env: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    run_dir = make_run(inputs, tmp_path / "boom", epochs=10)
    th.bad_loss(monkeypatch, "explode")
    with pytest.raises(TrainingError, match="exploded"):
        train(run_dir, LaunchOptions(**QUIET))
    progress = read_progress(run_dir)
    assert progress is not None and progress.step < progress.total_steps


@contextlib.contextmanager
def sigint_as(disposition: Any) -> Iterator[None]:
    previous = signal.signal(signal.SIGINT, disposition)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)


@pytest.fixture
def sigint_ignored() -> Iterator[None]:
    """This process as a background job of a shell script, or under some CI runners: SIGINT ignored."""
    with sigint_as(signal.SIG_IGN):
        yield


def test_early_stop_reaches_the_trainer_when_sigint_is_ignored_here(
    inputs: dict[str, Path],
    tmp_path: Path,
    double_env: None,
    monkeypatch: pytest.MonkeyPatch,
    sigint_ignored: None,
) -> None:
    # Seen in CI: the trainer inherited the ignored SIGINT, took no notice of the stop and trained
    # to the last step before the SIGTERM escalation was due.
    run_dir = make_run(inputs, tmp_path / "bg", epochs=10)
    th.bad_loss(monkeypatch, "explode")
    with pytest.raises(TrainingError, match="exploded"):
        train(run_dir, LaunchOptions(show_bar=False, stop_grace=120.0))
    progress = read_progress(run_dir)
    assert progress is not None and progress.state == "failed" and progress.step < progress.total_steps
    assert "mikuchan.safetensors" not in [p.name for p in (run_dir / "output").glob("*.safetensors")]
    assert signal.getsignal(signal.SIGINT) is signal.SIG_IGN  # ours is left as it was


def test_sigint_shim_only_when_sigint_is_ignored(sigint_ignored: None, tmp_path: Path) -> None:
    argv = [sys.executable, "launch", "train_network.py"]
    shimmed = with_default_sigint(argv, tmp_path, dict(os.environ))
    assert shimmed[:3] == [sys.executable, "-I", "-c"] and shimmed[4:] == argv
    signal.signal(signal.SIGINT, signal.default_int_handler)
    assert with_default_sigint(argv, tmp_path, dict(os.environ)) == argv


def test_the_shim_finds_the_program_as_the_child_would(sigint_ignored: None, tmp_path: Path) -> None:
    """Relative PATH entries and relative paths count from the trainer's folder, not ours."""
    tools = tmp_path / "sd" / "venv" / "bin"
    tools.mkdir(parents=True)
    accelerate = tools / "accelerate"
    accelerate.write_text("#!/bin/sh\n")
    accelerate.chmod(0o755)
    (tmp_path / "sd" / "notes").write_text("")  # a file, not executable
    sd = tmp_path / "sd"
    assert with_default_sigint(["accelerate", "launch"], sd, {"PATH": "venv/bin"})[4:] == [str(accelerate), "launch"]
    assert with_default_sigint(["venv/bin/accelerate"], sd, {"PATH": ""})[4] == str(accelerate)
    for argv, path in ((["accelerate"], "/nowhere"), (["notes"], "."), (["./venv/python"], "")):
        with pytest.raises(PreflightError, match=rf"^Cannot start {argv[0]}: no such executable file; "):
            with_default_sigint(argv, sd, {"PATH": path})


def test_shim_restores_sigint_and_keeps_the_pid(sigint_ignored: None) -> None:
    probe = "import os, signal; print(os.getpid(), signal.getsignal(signal.SIGINT) is signal.default_int_handler)"
    command = with_default_sigint([sys.executable, "-c", probe], Path.cwd(), dict(os.environ))
    proc = subprocess.Popen(command, stdout=subprocess.PIPE, text=True)
    output, _ = proc.communicate(timeout=60)
    assert output.split() == [str(proc.pid), "True"]


@pytest.mark.parametrize("ignored", [False, True], ids=["sigint-default", "sigint-ignored"])
def test_missing_trainer_python_is_one_sentence(
    inputs: dict[str, Path], tmp_path: Path, double_env: None, ignored: bool
) -> None:
    run_dir = make_run(inputs, tmp_path / "nopython")
    with sigint_as(signal.SIG_IGN if ignored else signal.default_int_handler):
        with pytest.raises(PreflightError, match=r"^Cannot start /nowhere/python: .*environment is installed\.$"):
            train(run_dir, LaunchOptions(show_bar=False, python="/nowhere/python", launcher="python"))


def test_crash_exits_with_last_lines_and_a_hint(
    inputs: dict[str, Path],
    tmp_path: Path,
    double_env: None,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    run_dir = make_run(inputs, tmp_path / "oom")
    monkeypatch.setenv("SD_DOUBLE_CRASH_AT_STEP", "6")
    assert commands.main(["train", str(run_dir), "--no-progress-bar"]) == TrainingError.exit_code
    err = capsys.readouterr().err
    assert "torch.OutOfMemoryError: CUDA out of memory" in err and "Traceback" in err
    assert "error: sd-scripts failed (exit code 1). The GPU ran out of memory" in err
    assert read_progress(run_dir).state == "failed"  # type: ignore[union-attr]


def test_model_missing_before_launch(inputs: dict[str, Path], tmp_path: Path, double_env: None) -> None:
    model = tmp_path / "gone.safetensors"
    th.write_safetensors_header(model, th.SD15_KEYS)
    run_dir = tmp_path / "gone"
    assert commands.main(th.config_argv(inputs["dataset"], model, run_dir)) == 0
    model.unlink()
    with pytest.raises(ModelNotFoundError, match="gone.safetensors does not exist"):
        train(run_dir, LaunchOptions(**QUIET))


def test_model_missing_in_sd_scripts_gets_a_hint(inputs: dict[str, Path], tmp_path: Path, double_env: None) -> None:
    run_dir = make_run(inputs, tmp_path / "hub", extra=[])
    config = run_dir / "config.toml"
    config.write_text(config.read_text().replace(str(inputs["sd15"].resolve()), "nobody/no-such-model"))
    with pytest.raises(TrainingError, match="cannot find the base checkpoint"):
        train(run_dir, LaunchOptions(**QUIET))


def test_existing_loras_need_resume_or_restart(inputs: dict[str, Path], tmp_path: Path, double_env: None) -> None:
    run_dir = make_run(inputs, tmp_path / "twice", epochs=2)
    train(run_dir, LaunchOptions(**QUIET))
    with pytest.raises(UserInputError, match="--resume.*--restart"):
        train(run_dir, LaunchOptions(**QUIET))
    assert train(run_dir, LaunchOptions(restart=True, **QUIET)).state == "finished"


def test_resume_without_state_is_refused(inputs: dict[str, Path], tmp_path: Path, double_env: None) -> None:
    run_dir = make_run(inputs, tmp_path / "nostate")
    with pytest.raises(UserInputError, match="Nothing to resume"):
        train(run_dir, LaunchOptions(resume=True, **QUIET))


def test_resume_continues_after_a_crash(
    inputs: dict[str, Path], tmp_path: Path, double_env: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    run_dir = make_run(inputs, tmp_path / "resume", epochs=4)
    monkeypatch.setenv("SD_DOUBLE_CRASH_AT_STEP", "10")  # in epoch 3, after epoch 2's state was saved
    with pytest.raises(TrainingError):
        train(run_dir, LaunchOptions(**QUIET))
    state = latest_state(load_run(run_dir))
    assert state is not None and state.name == "mikuchan-000002-state"
    monkeypatch.delenv("SD_DOUBLE_CRASH_AT_STEP")
    progress = train(run_dir, LaunchOptions(resume=True, **QUIET))
    assert progress.state == "finished" and (progress.step, progress.total_steps) == (16, 16)
    assert "--resume " + str(state) in (run_dir / "command.txt").read_text()
    assert [c["epoch"] for c in progress.checkpoints] == [1, 2, 3, 4]  # kept from the first launch, then continued
    assert all(s1 < s2 for (s1, _), (s2, _) in zip(progress.loss_history, progress.loss_history[1:], strict=False))
    log = (run_dir / "train.log").read_text(encoding="utf-8")
    assert log.count("==== vidstyle launch") == 2 and "load train state from" in log


def test_ctrl_c_stops_the_trainer_cleanly(inputs: dict[str, Path], tmp_path: Path, double_env: None) -> None:
    run_dir = make_run(inputs, tmp_path / "ctrlc", epochs=50)
    env = dict(os.environ, SD_DOUBLE_STEP_SECONDS="0.05", PYTHONPATH=str(ROOT))
    # As in a terminal, whatever SIGINT disposition the test run itself was started with.
    driver = (
        "import signal, sys; signal.signal(signal.SIGINT, signal.default_int_handler); "
        "from trainer.commands import main; sys.exit(main(sys.argv[1:]))"
    )
    proc = subprocess.Popen(
        [sys.executable, "-c", driver, "train", str(run_dir), "--no-progress-bar"],
        env=env,
        cwd=str(ROOT),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        progress = None
        for _ in range(600):
            progress = read_progress(run_dir)
            if progress is not None and progress.step >= 3:
                break
            time.sleep(0.05)
        assert progress is not None and progress.step >= 3 and progress.pid
        proc.send_signal(signal.SIGINT)
        output, _ = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 130, output
    assert "Training stopped; continue with" in output
    final = read_progress(run_dir)
    assert final is not None and final.state == "stopped" and final.step < final.total_steps
    with pytest.raises(ProcessLookupError):
        os.kill(progress.pid, 0)  # the trainer is gone, not orphaned


@pytest.mark.skipif(os.name == "nt", reason="POSIX process groups")
def test_stop_reaches_the_whole_process_group(tmp_path: Path) -> None:
    from trainer.launch import Trainer

    script = (
        "import subprocess, sys, time; subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(60)']); "
        "print('up', flush=True); time.sleep(60)"
    )
    trainer = Trainer([sys.executable, "-c", script], tmp_path, dict(os.environ))
    seen = b""
    while b"up" not in seen:
        seen += trainer.read()
    trainer.stop(grace=5)
    while trainer.read():  # EOF only once the grandchild holding the pipe is gone too
        pass
    assert trainer.wait() != 0
    for _ in range(100):  # a reparented grandchild may take a moment to be reaped
        try:
            os.killpg(trainer.proc.pid, 0)
        except ProcessLookupError:
            break
        time.sleep(0.05)
    else:
        pytest.fail("a process of the trainer's group survived the stop")


def test_setup_refuses_a_non_empty_foreign_folder(tmp_path: Path) -> None:
    from trainer.sdscripts import clone_command, setup_sd_scripts

    (tmp_path / "stuff.txt").write_text("x")
    with pytest.raises(UserInputError, match="not an sd-scripts checkout"):
        setup_sd_scripts(str(tmp_path))
    assert setup_sd_scripts(str(th.SD_SCRIPTS_DOUBLE)) == th.SD_SCRIPTS_DOUBLE  # already there: nothing to do
    assert clone_command(Path("/x"))[:6] == ["git", "clone", "--depth", "1", "--branch", "v0.10.1"]


def test_latest_state_picks_the_newest_of_this_runs_state_folders(inputs: dict[str, Path], tmp_path: Path) -> None:
    run_dir = make_run(inputs, tmp_path / "states")
    output = run_dir / "output"
    for offset, name in enumerate(
        [
            "mikuchan-000001-state",
            "mikuchan-step00000100-state",
            "mikuchan-000003-state",
            "mikuchan-v2-000009-state",
            "mikuchan-notes",
        ]
    ):
        (output / name).mkdir(parents=True)
        os.utime(output / name, (1_000_000 + offset, 1_000_000 + offset))
    assert latest_state(load_run(run_dir)).name == "mikuchan-000003-state"  # type: ignore[union-attr]
