"""The Python packages Vidstyle needs that the WebUI's own environment may lack.

The WebUI (A1111 1.10.1, Forge) already ships numpy, Pillow, OpenCV, pydantic, FastAPI,
httpx, tqdm, matplotlib, uvicorn and python-multipart at the versions our pyproject accepts;
these are the rest. install.py installs the missing ones and scripts/vidstyle.py names them
when an import fails, so both read this table. It imports nothing beyond the standard
library, because install.py reads it before anything is installed.
"""

from __future__ import annotations

import sys
from typing import NamedTuple


class Dependency(NamedTuple):
    import_name: str  # what `import` needs, and what launch.is_installed is asked about
    pip_spec: str  # what pip installs (same lower bound as pyproject.toml)
    python_below: tuple[int, int] | None = None  # only needed on Pythons older than this


WEBUI_ADDS: tuple[Dependency, ...] = (
    Dependency("av", "av>=11"),
    Dependency("tomli_w", "tomli-w>=1.0"),
    Dependency("imagehash", "imagehash>=4.3"),
    Dependency("tomli", "tomli>=2", python_below=(3, 11)),
    # torch and huggingface_hub bring it into every WebUI; listed so a bare one gets it too
    Dependency("filelock", "filelock>=3.12"),
)


def needed(version_info: tuple[int, ...] = tuple(sys.version_info[:3])) -> tuple[Dependency, ...]:
    """The dependencies this Python needs (tomli only before 3.11, which has tomllib)."""
    return tuple(dep for dep in WEBUI_ADDS if dep.python_below is None or tuple(version_info[:2]) < dep.python_below)


def pip_spec_for(import_name: str) -> str | None:
    """'av' -> 'av>=11'; None for a module this table does not cover."""
    for dep in WEBUI_ADDS:
        if dep.import_name == import_name:
            return dep.pip_spec
    return None


def pip_command(specs: tuple[str, ...], python: str = sys.executable) -> str:
    """The command a user can paste to install `specs` into this Python (quoted for any shell)."""
    return " ".join([f'"{python}"', "-m", "pip", "install", *(f'"{spec}"' for spec in specs)])
