"""TEST DOUBLE of the WebUI's launch.py (A1111 v1.10.1), for running an extension's install.py.

Upstream `launch.is_installed(package)` asks importlib.metadata (then find_spec) and
`launch.run_pip(command, desc)` runs `"<python>" -m pip <command> --prefer-binary` through a
shell, raising RuntimeError when pip fails and doing nothing under --skip-install. The
double answers from `_installed` and records the pip command lines instead of running pip.
"""

import argparse
import os
import re
import sys

args = argparse.Namespace(skip_install=False)
python = sys.executable
index_url = ""
default_command_live = os.environ.get("WEBUI_LAUNCH_LIVE_OUTPUT") == "1"

_installed = set()  # test hook: import names that count as installed
_failing = set()  # test hook: import names whose pip install fails
_pip_calls = []  # test hook: every run_pip command line


def is_installed(package):
    return package in _installed


def run_pip(command, desc=None, live=default_command_live):
    if args.skip_install:
        return
    line = f'"{python}" -m pip {command} --prefer-binary'
    _pip_calls.append(line)
    match = re.match(r'install "?([A-Za-z0-9_.-]+)', command)
    name = match.group(1).lower().replace("-", "_") if match else ""
    if name in _failing:
        raise RuntimeError(
            f"Couldn't install {desc}.\nCommand: {line}\nError code: 1\nstderr: ERROR: No matching distribution found "
            f"for {name}"
        )
    _installed.add(name)
    return ""
