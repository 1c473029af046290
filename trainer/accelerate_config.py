"""An accelerate config file for training on several GPUs or machines, checked before launch.

Multi-node training stays on accelerate, the launcher sd-scripts is written for: the user
writes the file with `accelerate config` on each machine (same file, its own machine_rank)
and `trainer train RUN --accelerate-config FILE` passes it to `accelerate launch
--config_file`. Read as accelerate reads it (JSON by suffix, else YAML); what would only fail
minutes later on another machine (a rank outside the cluster, no main process address) is
named here, before anything starts.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from vidstyle.errors import UserInputError

# accelerate's ComputeEnvironment: only a local machine is launched with `accelerate launch` here.
LOCAL_MACHINE = "LOCAL_MACHINE"


class AccelerateConfigError(UserInputError):
    """An accelerate config file that cannot launch this run."""


def _read(path: Path) -> dict[str, Any]:
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise AccelerateConfigError(
            f"Cannot read the accelerate config {path}: {exc.strerror}; "
            "write one with `accelerate config --config_file FILE`."
        ) from None
    if path.suffix.lower() == ".json":
        try:
            data = json.loads(text)
        except ValueError as exc:
            raise AccelerateConfigError(
                f"The accelerate config {path} is not valid JSON ({exc}); write it again with `accelerate config`."
            ) from None
    else:
        try:
            import yaml  # accelerate's own dependency
        except ImportError:
            raise AccelerateConfigError(
                "Reading an accelerate YAML config needs PyYAML (installed with accelerate); "
                "install accelerate in this environment."
            ) from None
        try:
            data = yaml.safe_load(text)
        except yaml.YAMLError as exc:
            raise AccelerateConfigError(
                f"The accelerate config {path} is not valid YAML "
                f"({str(exc).splitlines()[0]}); write it again with `accelerate config`."
            ) from None
    if not isinstance(data, dict):
        raise AccelerateConfigError(
            f"The accelerate config {path} holds no settings; write it with `accelerate config`."
        )
    return data


def _whole(data: dict[str, Any], key: str, path: Path, default: int, low: int) -> int:
    value = data.get(key, default)
    if isinstance(value, bool) or not isinstance(value, int) or value < low:
        raise AccelerateConfigError(
            f"{key} in the accelerate config {path} must be a whole number of at least {low}, not {value!r}."
        )
    return value


def check_accelerate_config(path: Path) -> Path:
    """The config file, resolved, if `accelerate launch` can start this machine's part of the run."""
    path = Path(path).expanduser()
    if not path.is_file():
        raise AccelerateConfigError(
            f"The accelerate config {path} does not exist; write it with "
            f"`accelerate config --config_file {path}` on each machine."
        )
    data = _read(path)
    environment = data.get("compute_environment", LOCAL_MACHINE)
    if environment != LOCAL_MACHINE:
        raise AccelerateConfigError(
            f"The accelerate config {path} is for {environment}; `trainer train` launches on "
            f"this machine, so use compute_environment: {LOCAL_MACHINE}."
        )
    machines = _whole(data, "num_machines", path, 1, 1)
    processes = _whole(data, "num_processes", path, 1, 1)
    rank = _whole(data, "machine_rank", path, 0, 0)
    if rank >= machines:
        raise AccelerateConfigError(
            f"machine_rank {rank} in {path} is outside a cluster of {machines} machine(s); "
            f"number the machines 0 to {machines - 1}."
        )
    if processes < machines:
        raise AccelerateConfigError(
            f"num_processes in {path} counts the GPUs of all machines together: {processes} is "
            f"fewer than its {machines} machines."
        )
    if machines > 1:
        if not data.get("main_process_ip"):
            raise AccelerateConfigError(
                f"{path} trains on {machines} machines but names no main_process_ip; set it to "
                "the address of the machine with machine_rank 0."
            )
        port = data.get("main_process_port")
        if isinstance(port, bool) or not isinstance(port, int) or not 1 <= port <= 65535:
            raise AccelerateConfigError(
                f"{path} trains on {machines} machines but main_process_port is {port!r}; set "
                "it to a free port of the machine with machine_rank 0 (e.g. 29500)."
            )
    return path.resolve()
