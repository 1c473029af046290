"""`vidstyle ui` in a real browser: upload a clip, set a tiny job, Render, see the result video.

Chromium comes from Debian (`apt-get install chromium`), driven by Playwright's Python API;
nothing is downloaded. The UI runs as the user runs it, `python -m vidstyle ui`, in a
subprocess on a free 127.0.0.1 port. A screenshot of the finished page is kept (and copied to
/tmp/vidstyle_ui.png) for people to look at.
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

CHROMIUM = Path("/usr/bin/chromium")
pytestmark = [
    pytest.mark.browser,
    pytest.mark.skipif(
        not CHROMIUM.exists(), reason="Chromium is not installed at /usr/bin/chromium (apt-get install chromium)"
    ),
    pytest.mark.skipif(importlib.util.find_spec("playwright") is None, reason="needs the playwright Python package"),
]
needs_diffusers = pytest.mark.skipif(
    importlib.util.find_spec("diffusers") is None, reason="the tiny model needs diffusers"
)
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--disable-quic",
]
REPO = Path(__file__).resolve().parent.parent
STARTUP_SECONDS = 180
RENDER_MS = 600_000


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _wait_for_server(url: str, process: subprocess.Popen, log: Path) -> None:
    deadline = time.monotonic() + STARTUP_SECONDS
    while time.monotonic() < deadline:
        if process.poll() is not None:
            pytest.fail(f"`vidstyle ui` exited with {process.returncode}:\n{log.read_text()[-4000:]}")
        try:
            with urllib.request.urlopen(url, timeout=5) as response:
                if response.status == 200:
                    return
        except (urllib.error.URLError, ConnectionError, TimeoutError):
            time.sleep(0.5)
    pytest.fail(f"`vidstyle ui` did not answer on {url}:\n{log.read_text()[-4000:]}")


@pytest.fixture
def ui_server(tmp_path: Path) -> Iterator[str]:
    port = _free_port()
    log = tmp_path / "ui.log"
    env = dict(
        os.environ,
        PYTHONPATH=os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")])),
        VIDSTYLE_MODELS=str(tmp_path / "models"),
        GRADIO_ANALYTICS_ENABLED="False",
    )
    with open(log, "wb") as handle:
        process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "vidstyle",
                "ui",
                "--host",
                "127.0.0.1",
                "--port",
                str(port),
                "--output-root",
                str(tmp_path / "jobs"),
            ],
            stdout=handle,
            stderr=subprocess.STDOUT,
            env=env,
            cwd=str(tmp_path),
        )
    url = f"http://127.0.0.1:{port}/"
    try:
        _wait_for_server(url, process, log)
        yield url
    finally:
        process.terminate()
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            process.kill()


def _pick(page, elem_id: str, value: str) -> None:
    """Choose a dropdown value the way a user does: type it and press Enter."""
    box = page.locator(f"#{elem_id} input").first
    box.click()
    box.fill(value)
    page.keyboard.press("Enter")


def _number(page, elem_id: str, value: int) -> None:
    box = page.locator(f"#{elem_id} input[type=number]").first
    box.fill(str(value))
    box.press("Enter")
    box.blur()


@needs_diffusers
def test_render_a_clip_in_the_browser(ui_server: str, tmp_path: Path) -> None:
    from playwright import sync_api

    from vidstyle.synthetic import make_clip

    clip = make_clip(tmp_path / "dance.mp4", seconds=1.0, fps=30, size=(160, 120))
    shot = tmp_path / "vidstyle_ui.png"
    with sync_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport={"width": 1400, "height": 1000})
            page.goto(ui_server)
            page.wait_for_selector("#vidstyle_render", timeout=60_000)
            page.locator("#vidstyle_video input[type=file]").set_input_files(str(clip))
            page.wait_for_selector("#vidstyle_source_info :text('30 frames')", timeout=60_000)
            page.get_by_text("Frame range and fps").click()
            page.get_by_text("Output and backend").click()
            _number(page, "vidstyle_source_end_frame", 3)
            _number(page, "vidstyle_size_width", 64)
            _number(page, "vidstyle_size_height", 64)
            _number(page, "vidstyle_sampling_steps", 2)
            _pick(page, "vidstyle_model_checkpoint", "tiny")
            _pick(page, "vidstyle_controlnet_model", "tiny")
            _pick(page, "vidstyle_backend_kind", "diffusers")
            page.click("#vidstyle_render")
            page.wait_for_selector("#vidstyle_result video", timeout=RENDER_MS)
            status = page.locator("#vidstyle_status").first.inner_text()
            # The job's report/index.html, shown in the tab with its images inlined.
            page.frame_locator("#vidstyle_report_page iframe").locator("img").first.wait_for(timeout=60_000)
            report = next(f for f in page.frames if f.parent_frame is not None)
            report_images = report.evaluate(
                "() => Array.from(document.images).map(i => i.complete ? i.naturalWidth : 0)"
            )
            page.screenshot(path=str(shot), full_page=True)
        finally:
            browser.close()
    assert "done" in status and "3/3 frames" in status, status
    assert len(report_images) >= 8 and all(width > 0 for width in report_images), report_images
    jobs = [p for p in (tmp_path / "jobs").iterdir() if (p / "job.toml").is_file()]
    assert len(jobs) == 1 and (jobs[0] / "result.mp4").is_file()
    job_toml = (jobs[0] / "job.toml").read_text()
    assert 'checkpoint = "tiny"' in job_toml and "width = 64" in job_toml and "steps = 2" in job_toml
    try:
        shutil.copyfile(shot, "/tmp/vidstyle_ui.png")
    except OSError:
        pass  # the copy is a convenience for people; the test's own screenshot is in tmp_path


# -- the job report (report/index.html) ----------------------------------------------------------------
XSS_PROMPT = '1girl <script>window.__vidstyle_xss = 1</script> <img src=x onerror="window.__vidstyle_xss = 2">'


@pytest.fixture
def api_server(tmp_path: Path) -> Iterator[str]:
    """`vidstyle serve` as the user runs it, over a job folder the test fills."""
    port = _free_port()
    log = tmp_path / "serve.log"
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")])))
    with open(log, "wb") as handle:
        process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "vidstyle",
                "serve",
                "--host",
                "127.0.0.1",
                "--port",
                str(port),
                "--output-root",
                str(tmp_path / "jobs"),
                "--allow",
                str(tmp_path),
            ],
            stdout=handle,
            stderr=subprocess.STDOUT,
            env=env,
            cwd=str(tmp_path),
        )
    url = f"http://127.0.0.1:{port}"
    try:
        _wait_for_server(f"{url}/vidstyle/v1/jobs", process, log)
        yield url
    finally:
        process.terminate()
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            process.kill()


def _finished_job_with_a_repair(tmp_path: Path) -> Path:
    """A job rendered on the simulated img2img backend, scored by the finish stage, then one frame repaired."""
    from vidstyle.backends.simulated import SimulatedImg2ImgBackend
    from vidstyle.job import create_job
    from vidstyle.render import run_job
    from vidstyle.spec import load_spec
    from vidstyle.synthetic import make_clip

    clip = make_clip(tmp_path / "dance.mp4", seconds=0.5, fps=24, size=(160, 120))
    spec = load_spec(
        "anime-canny-sd15",
        {
            "source.path": str(clip),
            "size.width": 96,
            "size.height": 96,
            "backend.kind": "simulated",
            "sampling.seed": 5,
            "prompt": XSS_PROMPT,
        },
    )
    with create_job(spec, tmp_path / "jobs" / "report-demo") as job:
        run_job(job, backend=SimulatedImg2ImgBackend(spec))
        run_job(job, backend=SimulatedImg2ImgBackend(spec), repair_frames=[5])
        job.ledger.set_meta("coherence_notes", ["a <b>note</b> the coherence stage left"])
        from vidstyle.outputs import write_outputs

        write_outputs(job)
        return job.report_dir / "index.html"


def _check_report_page(page, url: str, shot: Path) -> None:
    page.goto(url)
    page.wait_for_load_state("load")
    images = page.eval_on_selector_all(
        "img", "els => els.map(e => [e.getAttribute('src'), e.complete, e.naturalWidth])"
    )
    names = [src for src, _, _ in images]
    assert "scores.png" in names and "contact_sheet.png" in names, names
    assert any(n.endswith("_attempt0.png") for n in names) and any(n.endswith("_canny.png") for n in names), names
    broken = [src for src, complete, width in images if not complete or width == 0]
    assert not broken, f"images that did not load from {url}: {broken}"
    assert page.evaluate("() => window.__vidstyle_xss === undefined")  # the prompt stayed text
    assert "window.__vidstyle_xss" in page.inner_text("body")
    page.screenshot(path=str(shot), full_page=True)


def test_job_report_page_loads_in_the_browser(api_server: str, tmp_path: Path) -> None:
    from playwright import sync_api

    index = _finished_job_with_a_repair(tmp_path)
    served = f"{api_server}/vidstyle/v1/jobs/report-demo/files/report/index.html"
    with sync_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport={"width": 1300, "height": 900})
            _check_report_page(page, index.as_uri(), tmp_path / "report_file.png")
            _check_report_page(page, served, tmp_path / "report_served.png")
        finally:
            browser.close()
    try:
        shutil.copyfile(tmp_path / "report_served.png", "/tmp/vidstyle_report.png")
    except OSError:
        pass  # a convenience copy for people to look at
