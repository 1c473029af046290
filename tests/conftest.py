"""Shared fixtures: small media made on the fly, tiny job folders."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

# Keep torch/OpenMP from oversubscribing the 2 CI cores when tests run subprocesses.
os.environ.setdefault("OMP_NUM_THREADS", "2")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

# After the settings above: this imports the engine (numpy and its thread pools).
try:
    from tests.webui_http_fixtures import http_backends, webui_servers
except ImportError:  # pytest run with tests/ (not the repo root) on sys.path
    from webui_http_fixtures import http_backends, webui_servers

__all__ = ["http_backends", "webui_servers"]  # fixtures registered for the HTTP backend tests


@pytest.fixture(scope="session")
def demo_clip(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A 1 s, 30 fps, 96x64 clip with audio (the demo scene)."""
    from vidstyle.synthetic import make_clip

    path = tmp_path_factory.mktemp("media") / "clip.mp4"
    return make_clip(path, seconds=1.0, fps=30, size=(96, 64))
