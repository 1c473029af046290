"""Run by the WebUI at every start (`python install.py`): add the packages Vidstyle needs that
the WebUI's Python lacks, and nothing else.

Only the packages in vidstyle/deps.py (av, tomli-w, imagehash, filelock, and tomli before Python 3.11)
are ever installed, and only when `launch.is_installed` says they are missing, so a second
run does nothing and the WebUI's own pins (torch, gradio, pydantic, numpy, ...) are never
upgraded. When pip fails, or the WebUI runs with --skip-install, the exact command to run by
hand is printed instead.
"""

from __future__ import annotations

import importlib
import sys
from pathlib import Path

import launch

EXTENSION_ROOT = Path(__file__).resolve().parent
if str(EXTENSION_ROOT) not in sys.path:  # the WebUI runs this file from its own folder
    sys.path.insert(0, str(EXTENSION_ROOT))

from vidstyle.deps import Dependency, needed, pip_command  # noqa: E402  (needs the path above)


def missing() -> list[Dependency]:
    return [dep for dep in needed() if not launch.is_installed(dep.import_name)]


def install(todo: list[Dependency]) -> list[Dependency]:
    """pip-install each missing package through the WebUI; returns those still missing."""
    failed: list[Dependency] = []
    for dep in todo:
        try:
            # Quoted: launch.run_pip runs the line through a shell, where '>' would redirect.
            launch.run_pip(f'install "{dep.pip_spec}"', f"Vidstyle requirement: {dep.pip_spec}")
        except Exception as err:  # launch.run raises RuntimeError carrying pip's output
            print(f"Vidstyle: pip could not install {dep.pip_spec}:\n{err}")
            failed.append(dep)
    importlib.invalidate_caches()  # so is_installed sees what pip just added
    return [dep for dep in todo if dep in failed or not launch.is_installed(dep.import_name)]


def main() -> int:
    todo = missing()
    if not todo:
        return 0
    python = getattr(launch, "python", sys.executable)
    command = pip_command(tuple(dep.pip_spec for dep in todo), python)
    if getattr(launch.args, "skip_install", False):
        print(
            f"Vidstyle: the WebUI runs with --skip-install, so install what Video Stylize needs by hand:\n  {command}"
        )
        return 0
    still_missing = install(todo)
    if still_missing:
        command = pip_command(tuple(dep.pip_spec for dep in still_missing), python)
        print(f"Vidstyle: install what Video Stylize still needs by hand, then restart the WebUI:\n  {command}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
