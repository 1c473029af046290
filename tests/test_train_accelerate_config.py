"""`trainer train --accelerate-config FILE`: multi-node training through accelerate's own config
file, checked before launch and passed to `accelerate launch --config_file`."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from trainer import commands
from trainer.accelerate_config import AccelerateConfigError, check_accelerate_config
from trainer.launch import LaunchOptions, build_argv
from vidstyle.errors import UserInputError

# What `accelerate config` writes for the second of two machines with two GPUs each.
TWO_MACHINES = """\
compute_environment: LOCAL_MACHINE
debug: false
distributed_type: MULTI_GPU
downcast_bf16: 'no'
gpu_ids: all
machine_rank: 1
main_process_ip: 10.0.0.5
main_process_port: 29500
main_training_function: main
mixed_precision: fp16
num_machines: 2
num_processes: 4
rdzv_backend: static
same_network: true
tpu_env: []
tpu_use_cluster: false
tpu_use_sudo: false
use_cpu: false
"""


def _write(tmp_path: Path, text: str, name: str = "multi.yaml") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def test_a_two_machine_config_is_accepted(tmp_path: Path) -> None:
    assert check_accelerate_config(_write(tmp_path, TWO_MACHINES)) == (tmp_path / "multi.yaml").resolve()


def test_json_config_is_read_as_json(tmp_path: Path) -> None:
    data: dict[str, Any] = {
        "compute_environment": "LOCAL_MACHINE",
        "num_machines": 2,
        "num_processes": 2,
        "machine_rank": 0,
        "main_process_ip": "10.0.0.5",
        "main_process_port": 29500,
    }
    assert check_accelerate_config(_write(tmp_path, json.dumps(data), "multi.json")).name == "multi.json"


@pytest.mark.parametrize(
    "change, needle",
    [
        (("machine_rank: 1", "machine_rank: 2"), "machine_rank 2 .* outside a cluster of 2"),
        (("main_process_ip: 10.0.0.5\n", ""), "names no main_process_ip"),
        (("main_process_port: 29500", "main_process_port: http"), "main_process_port is 'http'"),
        (("num_processes: 4", "num_processes: 1"), "fewer than its 2 machines"),
        (("num_machines: 2", "num_machines: zero"), "num_machines .* whole number"),
        (("compute_environment: LOCAL_MACHINE", "compute_environment: AMAZON_SAGEMAKER"), "is for AMAZON_SAGEMAKER"),
        (("debug: false", "debug: [unclosed"), "not valid YAML"),
    ],
)
def test_configs_that_cannot_launch_are_named_before_launch(tmp_path: Path, change: tuple, needle: str) -> None:
    path = _write(tmp_path, TWO_MACHINES.replace(*change))
    with pytest.raises(AccelerateConfigError, match=needle):
        check_accelerate_config(path)


def test_missing_or_empty_file(tmp_path: Path) -> None:
    with pytest.raises(AccelerateConfigError, match="does not exist; write it with `accelerate config"):
        check_accelerate_config(tmp_path / "nope.yaml")
    with pytest.raises(AccelerateConfigError, match="holds no settings"):
        check_accelerate_config(_write(tmp_path, ""))


def test_argv_passes_the_file_and_leaves_machines_to_it(tmp_path: Path) -> None:
    config = check_accelerate_config(_write(tmp_path, TWO_MACHINES))
    argv = build_argv(
        Path("/sd/train_network.py"),
        Path("/run/config.toml"),
        "fp16",
        python="/nowhere/python",
        accelerate_config=config,
    )
    assert argv[:3] == ["/nowhere/python", "-m", "accelerate.commands.launch"]
    for option in ("--num_processes", "--num_machines", "--multi_gpu", "--machine_rank"):
        assert option not in argv, f"{option} would override the config file"
    assert argv[-3:] == ["/sd/train_network.py", "--config_file", "/run/config.toml"]
    # accelerate's own parser reads the file as its --config_file and sd-scripts' as the script's
    launch = pytest.importorskip("accelerate.commands.launch", reason="needs accelerate")
    args = launch.launch_command_parser().parse_args(argv[3:])
    assert args.config_file == str(config)
    assert args.training_script == "/sd/train_network.py"
    assert args.training_script_args == ["--config_file", "/run/config.toml"]


def test_argv_refuses_gpus_or_the_python_launcher_with_a_config(tmp_path: Path) -> None:
    config = check_accelerate_config(_write(tmp_path, TWO_MACHINES))
    with pytest.raises(UserInputError, match="leave out --gpus"):
        build_argv(Path("/sd/t.py"), Path("/c"), gpus=2, python="/py", accelerate_config=config)
    with pytest.raises(UserInputError, match="use the accelerate launcher"):
        build_argv(Path("/sd/t.py"), Path("/c"), launcher="python", python="/py", accelerate_config=config)


def test_train_command_hands_the_file_to_the_launcher(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    seen: dict[str, LaunchOptions] = {}
    monkeypatch.setattr("trainer.launch.train", lambda run_dir, options: seen.setdefault("options", options))
    config = _write(tmp_path, TWO_MACHINES)
    assert commands.main(["train", str(tmp_path / "run"), "--accelerate-config", str(config)]) == 0
    assert seen["options"].accelerate_config == str(config)


def test_a_bad_config_stops_the_launch_before_anything_else(tmp_path: Path) -> None:
    from trainer.launch import prepare_launch

    bad = _write(tmp_path, TWO_MACHINES.replace("machine_rank: 1", "machine_rank: 5"))
    with pytest.raises(AccelerateConfigError, match="machine_rank 5"):
        prepare_launch(None, LaunchOptions(accelerate_config=str(bad)))  # type: ignore[arg-type]  (checked first)
