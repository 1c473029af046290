"""`vidstyle demo`: a synthetic clip rendered end to end with the tiny model, through the shared terminal runner."""

from __future__ import annotations

from pathlib import Path

import pytest

pytest.importorskip("torch", reason="the demo renders with the diffusers backend")
pytest.importorskip("diffusers", reason="the demo renders with the diffusers backend")

from vidstyle.demo import run_demo  # noqa: E402
from vidstyle.errors import UserInputError  # noqa: E402


def test_demo_renders_a_short_clip_and_says_how_to_use_real_models(
    tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    assert run_demo(tmp_path, quiet=True, frames=2, size=64) == 0
    out = capsys.readouterr().out
    result = Path(next(line for line in out.splitlines() if line.startswith("done: "))[len("done: ") :])
    assert result.is_file() and result.stat().st_size > 0 and (tmp_path / "job") in result.parents
    assert "To stylize for real" in out


def test_demo_refuses_a_size_the_model_cannot_take(tmp_path: Path) -> None:
    with pytest.raises(UserInputError, match="multiple of 8"):
        run_demo(tmp_path, quiet=True, frames=2, size=60)
