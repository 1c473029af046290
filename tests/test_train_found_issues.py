"""What driving the trainer against a real kohya sd-scripts v0.10.1 showed (issue 13), each
reproduced here without sd-scripts: sd-scripts' real two-lines-per-step tqdm output, the
traceback accelerate prints around a failed child, the launcher named in command.txt and
run.json, progress.json lagging the log, and the smaller config messages and bounds."""

from __future__ import annotations

import io
import json
import re
import shutil
import threading
import time
from pathlib import Path
from typing import Any

import pytest
import train_helpers as th  # tests/train_helpers.py

from trainer import commands
from trainer.config_checks import check_run
from trainer.config_errors import parse_dataset_config, parse_train_args
from trainer.config_schema import FAMILIES
from trainer.launch import LaunchOptions, hint_for, read_progress, relevant_lines, train
from trainer.progress import LogParser
from vidstyle.errors import SpecError

# --------------------------------------------------------------------------- 1: loss history

# What sd-scripts v0.10.1 prints for 4 steps (train_network.py: progress_bar.update(1) redraws
# with the previous postfix, then progress_bar.set_postfix(avr_loss=...) redraws with this
# step's); captured from tqdm driven the same way, with tqdm's default ascii fallback.
TWO_LINES_PER_STEP = (
    "\rsteps:   0%|          | 0/4 [00:00<?, ?it/s]"
    "\rsteps:  25%|##5       | 1/4 [00:01<00:03,  1.02s/it]"
    "\rsteps:  25%|##5       | 1/4 [00:01<00:03,  1.02s/it, avr_loss=1.15]"
    "\rsteps:  50%|#####     | 2/4 [00:02<00:02,  1.01s/it, avr_loss=1.15]"
    "\rsteps:  50%|#####     | 2/4 [00:02<00:02,  1.01s/it, avr_loss=0.974]"
    "\rsteps:  75%|#######5  | 3/4 [00:03<00:01,  1.01s/it, avr_loss=0.974]"
    "\rsteps:  75%|#######5  | 3/4 [00:03<00:01,  1.01s/it, avr_loss=0.93] "
    "\rsteps: 100%|##########| 4/4 [00:04<00:00,  1.00s/it, avr_loss=0.93]"
    "\rsteps: 100%|##########| 4/4 [00:04<00:00,  1.00s/it, avr_loss=0.9] "
    "\rsteps: 100%|##########| 4/4 [00:04<00:00,  1.00s/it, avr_loss=0.9]\n"
)


def test_loss_history_takes_each_steps_own_loss_from_the_two_redraws() -> None:
    parser = LogParser()
    for start in range(0, len(TWO_LINES_PER_STEP), 23):  # as a pipe delivers it
        parser.feed(TWO_LINES_PER_STEP[start : start + 23])
    parser.flush()
    assert parser.progress.loss_history == [(1, 1.15), (2, 0.974), (3, 0.93), (4, 0.9)]
    assert parser.progress.avr_loss == 0.9


# --------------------------------------------------------------------------- 3: the cause of a failure

# `accelerate launch train_network.py ...` whose child failed to import torchvision: the child's
# traceback, then accelerate's own (accelerate 1.x simple_launcher), as it really prints them.
ACCELERATE_WRAPPED = """\
2026-02-16 10:00:00 INFO     Loading dataset config from /run/dataset.toml
Traceback (most recent call last):
  File "/sd/train_network.py", line 20, in <module>
    from library import deepspeed_utils, model_util, strategy_base, strategy_sd
  File "/sd/library/model_util.py", line 8, in <module>
    from transformers import CLIPTextModel, CLIPTokenizer, CLIPTextConfig, logging
  File "/sd/venv/lib/python3.10/site-packages/transformers/models/clip/modeling_clip.py", line 30, in <module>
    import torchvision
ModuleNotFoundError: No module named 'torchvision'
Traceback (most recent call last):
  File "/sd/venv/bin/accelerate", line 8, in <module>
    sys.exit(main())
             ^^^^^^
  File "/sd/venv/lib/python3.10/site-packages/accelerate/commands/accelerate_cli.py", line 50, in main
    args.func(args)
  File "/sd/venv/lib/python3.10/site-packages/accelerate/commands/launch.py", line 1413, in launch_command
    simple_launcher(args)
  File "/sd/venv/lib/python3.10/site-packages/accelerate/commands/launch.py", line 999, in simple_launcher
    raise subprocess.CalledProcessError(returncode=process.returncode, cmd=cmd)
subprocess.CalledProcessError: Command '['/sd/venv/bin/python', '/sd/train_network.py', '--config_file', '/run/config.toml']' returned non-zero exit status 1.
"""  # noqa: E501  (accelerate's line, verbatim)


def test_failure_lines_show_the_childs_traceback_not_accelerates_wrapper() -> None:
    parser = LogParser()
    parser.feed(ACCELERATE_WRAPPED)
    lines = relevant_lines(parser)
    assert "ModuleNotFoundError: No module named 'torchvision'" in lines
    assert not any("CalledProcessError" in line for line in lines)
    assert "requirements are missing" in (hint_for(lines) or "")


def test_a_plain_traceback_is_still_shown_whole() -> None:
    parser = LogParser()
    parser.feed('step\nTraceback (most recent call last):\n  File "x.py", line 1\nRuntimeError: boom\n')
    assert relevant_lines(parser) == ["Traceback (most recent call last):", 'File "x.py", line 1', "RuntimeError: boom"]


# --------------------------------------------------------------------------- 2: the launcher in command.txt and
# run.json


@pytest.fixture(scope="module")
def inputs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    return th.run_inputs(tmp_path_factory.mktemp("found"))


@pytest.fixture()
def double_env(monkeypatch: pytest.MonkeyPatch) -> None:
    th.use_sd_scripts_double(monkeypatch)


def checkout_with_venv(tmp_path: Path) -> Path:
    """An sd-scripts checkout with its own venv, as its README sets it up (venv/bin/python, accelerate)."""
    root = tmp_path / "sd-scripts"
    shutil.copytree(th.SD_SCRIPTS_DOUBLE, root, ignore=shutil.ignore_patterns("__pycache__"))
    bindir = root / "venv" / "bin"
    bindir.mkdir(parents=True)
    for name in ("python", "accelerate"):
        (bindir / name).write_text("")
    return root


def test_config_names_the_checkouts_own_accelerate_in_command_and_run_json(
    inputs: dict[str, Path], tmp_path: Path
) -> None:
    sd = checkout_with_venv(tmp_path)
    out = tmp_path / "run"
    assert commands.main(th.config_argv(inputs["dataset"], inputs["sd15"], out, extra=["--sd-scripts", str(sd)])) == 0
    accelerate = str(sd / "venv" / "bin" / "accelerate")
    assert (out / "command.txt").read_text().split()[:2] == [accelerate, "launch"]
    assert json.loads((out / "run.json").read_text())["argv"][:2] == [accelerate, "launch"]


def test_train_records_the_command_it_ran_in_run_json(
    inputs: dict[str, Path], tmp_path: Path, double_env: None
) -> None:
    out = tmp_path / "run"
    argv = th.config_argv(
        inputs["dataset"], inputs["sd15"], out, extra=["--set", "max_train_epochs=1", "--set", "dataset.batch_size=2"]
    )
    assert commands.main(argv) == 0
    train(out, LaunchOptions(show_bar=False, stop_grace=10.0))
    ran = json.loads((out / "run.json").read_text())["argv"]
    assert ran[1:] == [
        str(th.SD_SCRIPTS_DOUBLE.resolve() / "train_network.py"),
        "--config_file",
        str(out.resolve() / "config.toml"),
    ]
    assert "launch" not in ran  # the python launcher ran, not the accelerate command config wrote


# --------------------------------------------------------------------------- 7: progress.json keeps up with the log


def test_progress_file_catches_up_while_the_trainer_prints_nothing(
    inputs: dict[str, Path], tmp_path: Path, double_env: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    # step 1 arrives right after the "epoch 1/1" line was written; then the trainer is silent
    monkeypatch.setenv("SD_DOUBLE_PAUSE_AFTER_STEP", "1:8")
    out = tmp_path / "run"
    argv = th.config_argv(
        inputs["dataset"], inputs["sd15"], out, extra=["--set", "max_train_epochs=1", "--set", "dataset.batch_size=2"]
    )
    assert commands.main(argv) == 0
    runner = threading.Thread(target=train, args=(out, LaunchOptions(show_bar=False, stop_grace=10.0)), daemon=True)
    runner.start()
    seen: list[Any] = []
    deadline = time.monotonic() + 7  # inside the pause: the log shows step 1 and its loss by then
    while time.monotonic() < deadline:
        progress = read_progress(out)
        if progress is not None and progress.step == 1 and progress.avr_loss is not None:
            seen.append(progress.avr_loss)
            break
        time.sleep(0.1)
    runner.join(timeout=60)
    log = (out / "train.log").read_text(encoding="utf-8")
    step_one = re.findall(r"\| 1/\d+ \[[^\]]*avr_loss=([\d.e+-]+)\]", log)
    assert seen == [pytest.approx(float(step_one[-1]))]  # the loss the log showed for step 1


# --------------------------------------------------------------------------- 7: messages and bounds


def train_args(**changes: Any) -> dict[str, Any]:
    base = dict(
        pretrained_model_name_or_path="/models/base.safetensors", network_dim=16, network_alpha=8.0, learning_rate=1e-4,
        dataset_config="/run/dataset.toml", output_dir="/run/output", output_name="lora", max_train_epochs=4,
    )  # fmt: skip
    base.update(changes)
    return base


def run_check(**train: Any) -> list:
    ds = parse_dataset_config({"general": {"resolution": 512}, "datasets": [{"subsets": [{"image_dir": "/d"}]}]})
    return check_run(FAMILIES["sd15"], ds, parse_train_args(train_args(**train)))


def test_learning_rate_refusal_names_the_limit_it_enforces() -> None:
    assert run_check(learning_rate=5e-3)  # accepted with a warning
    with pytest.raises(SpecError) as refused:
        run_check(learning_rate=0.05)
    assert "at most 0.01" in str(refused.value) and "at most 0.001" not in str(refused.value)


def test_did_you_mean_reads_as_a_sentence() -> None:
    with pytest.raises(SpecError) as err:
        parse_train_args(train_args(learning_rat=1e-4))
    message = str(err.value)
    assert (
        "(did you mean 'learning_rate'?); sd-scripts would silently ignore it" in message
        and "?;" not in message.replace("?);", "")
    )


@pytest.mark.parametrize(
    "key",
    [
        "ip_noise_gamma",
        "min_snr_gamma",
        "huber_c",
        "prior_loss_weight",
        "max_grad_norm",
        "scale_weight_norms",
        "network_alpha",
    ],
)
def test_float_settings_that_blow_up_training_have_an_upper_bound(key: str) -> None:
    with pytest.raises(SpecError, match=key):
        parse_train_args(train_args(**{key: 1e30}))


def test_usual_float_settings_still_pass() -> None:
    args = parse_train_args(
        train_args(ip_noise_gamma=0.1, min_snr_gamma=5.0, huber_c=0.1, max_grad_norm=1.0, network_alpha=16.0)
    )
    assert args.ip_noise_gamma == 0.1 and args.min_snr_gamma == 5.0


# --------------------------------------------------------------------------- 5: the held-out validation dataset


def test_held_out_validation_dataset_is_explained_where_sd_scripts_warns(
    inputs: dict[str, Path], tmp_path: Path, double_env: None, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "run"
    argv = th.config_argv(
        inputs["dataset"], inputs["sd15"], out, extra=["--set", "max_train_epochs=1", "--set", "dataset.batch_size=2"]
    )
    assert commands.main(argv) == 0
    assert "empty Dataset 1: expected, not an error" in (out / "dataset.toml").read_text(encoding="utf-8")
    train(out, LaunchOptions(show_bar=False, stop_grace=10.0))
    lines = (out / "train.log").read_text(encoding="utf-8").splitlines()
    # what sd-scripts v0.10.1 logs (library/train_util.py, DreamBoothDataset) for the training copy of DATASET/val
    warned = [i for i, line in enumerate(lines) if line.startswith("ignore subset with image_dir=") and "/val'" in line]
    assert len(warned) == 1
    assert lines[warned[0] + 1].startswith("[vidstyle] expected: ") and "Nothing is wrong." in lines[warned[0] + 1]
    assert "warning: sd-scripts found no images" not in capsys.readouterr().err


def test_an_empty_training_folder_is_a_warning_on_the_console() -> None:
    from trainer.launch import _Display, _empty_subset_notes

    class _Run:  # only what the check reads of a run
        validation_only_dirs = [Path("/data/val")]

    parser = LogParser()
    parser.feed(
        "ignore subset with image_dir='/data/img/10_x': no images found / "
        "画像が見つからないためサブセットを無視します\n"
    )
    out = io.StringIO()
    assert _empty_subset_notes(_Run(), parser, _Display(False, out)) == []  # type: ignore[arg-type]
    assert "no images in /data/img/10_x" in out.getvalue()


def test_the_note_goes_below_the_line_however_the_pipe_cut_it() -> None:
    from trainer.launch import _line_end

    line = b"ignore subset with image_dir='/d/val': no images found / x\n"
    assert _line_end(line + b"load Stable", b"no images found") == len(line)  # the next line already begun
    assert _line_end(b"d / x\nload", b"no images found") == len(b"d / x\n")  # the marker came in the chunk before
    assert (
        _line_end(b"ignore subset with image_dir='/d/val': no images", b"no images found") == -1
    )  # wait for the newline
