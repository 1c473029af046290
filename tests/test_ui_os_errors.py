"""Tab handlers turn an OSError from the manager (a full disk, say) into one sentence, not a traceback."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("gradio", reason="the tab needs gradio (pip install 'vidstyle[ui]')")

from vidstyle.manager import JobManager  # noqa: E402
from vidstyle.tab_values import UiChoices  # noqa: E402
from vidstyle.ui import build_tab_parts  # noqa: E402


class DiskFullManagerDouble(JobManager):
    """A real manager whose preview work fails as a full disk would."""

    def run_exclusive(self, work: Any) -> Any:
        raise OSError(28, "No space left on device")


def test_preview_and_epoch_preview_say_one_sentence_on_os_error(tmp_path: Path) -> None:
    manager = DiskFullManagerDouble(tmp_path / "jobs")
    try:
        _, parts = build_tab_parts(
            manager, UiChoices(checkpoints=lambda: ["tiny"], loras=list, controlnet_models=lambda: ["tiny"])
        )
        values = [widget.value for widget in (parts.widgets[key] for key in parts.keys)]
        _, html = parts.on_preview("0", *values)
        assert "The preview failed: No space left on device." in html
        _, _, html = parts.on_epoch_preview(str(tmp_path), "auto", 4, "", *values)
        assert "The epoch preview failed: No space left on device." in html
    finally:
        manager.close()
