"""vidstyle.preview_grid: the backend life and the file writing both previews share."""

from __future__ import annotations

from pathlib import Path

import pytest
from PIL import Image

from vidstyle.atomic import write_text
from vidstyle.backends.base import Img2ImgRequest, Img2ImgResult, StatusCallback
from vidstyle.errors import BackendError, Cancelled, OutputError
from vidstyle.events import ProgressEvent
from vidstyle.preview_grid import CANCELLED, PreviewBackend, preview_page, write_preview
from vidstyle.spec import JobSpec, load_spec


class BackendDouble:
    """Records what the preview does with its backend."""

    name = "double"
    concurrency = 1

    def __init__(self, spec: JobSpec, on_status: StatusCallback | None = None) -> None:
        self.calls: list[str] = []
        self.on_status = on_status

    def preflight(self) -> None:
        self.calls.append("preflight")

    def img2img(self, request: Img2ImgRequest) -> Img2ImgResult:
        raise AssertionError("not rendered here")

    def interrupt(self) -> None:
        self.calls.append("interrupt")

    def close(self) -> None:
        self.calls.append("close")


def test_a_finished_preview_closes_its_backend_after_preflight() -> None:
    events: list[ProgressEvent] = []
    with PreviewBackend(events.append, backend_factory=BackendDouble) as session:
        backend = session.open(load_spec("anime-canny-sd15", {"backend.kind": "passthrough"}))
        backend.on_status("loading")  # type: ignore[attr-defined]
    assert backend.calls == ["preflight", "close"]  # type: ignore[attr-defined]
    assert [(e.kind, e.stage, e.message) for e in events] == [
        ("stage", "preflight", "checking the double backend"),
        ("status", "render", "loading"),
    ]


@pytest.mark.parametrize("stop", [KeyboardInterrupt(), Cancelled("token")])
def test_a_cancel_interrupts_then_closes_and_leaves_as_one_cancelled(stop: BaseException) -> None:
    events: list[ProgressEvent] = []
    with pytest.raises(Cancelled, match="nothing was written") as raised:
        with PreviewBackend(events.append, backend_factory=BackendDouble) as session:
            backend = session.open(load_spec("anime-canny-sd15", {"backend.kind": "passthrough"}))
            raise stop
    assert str(raised.value) == CANCELLED
    assert backend.calls == ["preflight", "interrupt", "close"]  # type: ignore[attr-defined]


def test_a_failure_closes_without_interrupting_and_keeps_its_error() -> None:
    with pytest.raises(BackendError, match="server gone"):
        with PreviewBackend(lambda event: None, backend_factory=BackendDouble) as session:
            backend = session.open(load_spec("anime-canny-sd15", {"backend.kind": "passthrough"}))
            raise BackendError("server gone")
    assert backend.calls == ["preflight", "close"]  # type: ignore[attr-defined]


def test_a_cancel_before_the_backend_exists_still_says_cancelled() -> None:
    with pytest.raises(Cancelled, match="nothing was written"):
        with PreviewBackend(lambda event: None, backend_factory=BackendDouble):
            raise KeyboardInterrupt


def test_write_preview_writes_the_grid_then_the_page(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    grid = Image.new("RGB", (4, 3), (10, 20, 30))
    seen: list[bool] = []

    def write_text_spy(path: Path, text: str) -> None:
        seen.append((path.parent / "p.png").is_file())  # the grid is in place before the page
        write_text(path, text)

    monkeypatch.setattr("vidstyle.preview_grid.write_text", write_text_spy)
    grid_path, html_path = write_preview(tmp_path / "new" / "dir", "p", grid, "<p>page</p>")
    assert seen == [True]
    assert Image.open(grid_path).size == (4, 3) and html_path.read_text() == "<p>page</p>"
    assert sorted(p.name for p in grid_path.parent.iterdir()) == ["p.html", "p.png"]  # no temp files left


def test_no_page_when_the_grid_cannot_be_written(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    class GridDouble:
        def save(self, path: Path, format: str) -> None:
            Path(path).write_bytes(b"half a PNG")
            raise OSError(28, "No space left on device")

    with pytest.raises(OutputError, match="disk is full"):
        write_preview(tmp_path, "p", GridDouble(), "<p>page</p>")  # type: ignore[arg-type]
    assert list(tmp_path.iterdir()) == []


def test_preview_page_escapes_its_title_and_keeps_the_body() -> None:
    page = preview_page("Runs <a&b>", "<h1>body</h1>", 12, "code { font-size: 0.75em; }")
    assert "<title>Runs &lt;a&amp;b&gt;</title>" in page
    assert "min-width: 12em;" in page and "code { font-size: 0.75em; }\n</style>" in page
    assert page.endswith("<h1>body</h1>\n</body></html>\n")
