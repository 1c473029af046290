"""report/index.html: written by the finish stage of every job, self-contained, escaped, served by the API.

The job renders on the passthrough backend (no torch, so this also runs under the WebUI's pins);
scores are put into the ledger by hand in the documented shape (frames.scores and
attempts.scores JSON: edge_fidelity, warp_error, suspect), as the scoring stage writes them.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from fastapi.testclient import TestClient
from PIL import Image

from vidstyle.backends.passthrough import PassthroughBackend
from vidstyle.job import Job, create_job, open_job
from vidstyle.manager import JobManager
from vidstyle.outputs import write_outputs
from vidstyle.render import render_pending, run_job, schedule_redo
from vidstyle.report_html import embedded_report, is_report_file
from vidstyle.server import create_app
from vidstyle.spec import load_spec

API = "/vidstyle/v1"
PROMPT = '1girl, <script>alert("x")</script> & "quotes"'
SUSPECT, REPAIRED = 4, 7


def scores_for(idx: int) -> dict[str, object]:
    suspect = idx == SUSPECT
    return {
        "edge_fidelity": 0.2 if suspect else 0.8 + 0.01 * (idx % 3),
        "warp_error": None if idx == 0 else (0.3 if suspect else 0.05),
        "suspect": suspect,
    }


def make_job(root: Path, clip: Path, frames: int = 10) -> Job:
    spec = load_spec(
        "anime-canny-sd15",
        {
            "source.path": str(clip),
            "size.width": 64,
            "size.height": 64,
            "backend.kind": "passthrough",
            "sampling.seed": 7,
            "source.end_frame": frames,
            "prompt": PROMPT,
        },
    )
    job = create_job(spec, root)
    run_job(job, backend=PassthroughBackend(spec), finish=False)
    for idx in range(frames):
        job.ledger.set_scores(idx, scores_for(idx))
    return job


def redo_frame(job: Job, idx: int, before: dict[str, object], after: dict[str, object]) -> None:
    """A repaired frame as repair leaves it: attempt 0 in history/, attempt 1 kept, each attempt's scores."""
    schedule_redo(job, [idx], {"sampling.denoise": 0.3})
    render_pending(job, PassthroughBackend(job.spec))
    db = job.ledger.db
    db.execute("UPDATE attempts SET scores=? WHERE idx=? AND attempt=0", (json.dumps(before), idx))
    db.execute("UPDATE attempts SET scores=? WHERE idx=? AND attempt=1", (json.dumps(after), idx))
    job.ledger.set_scores(idx, after)


@pytest.fixture
def finished(tmp_path: Path, demo_clip: Path) -> Iterator[tuple[Job, Path]]:
    job = make_job(tmp_path / "jobs" / "dance", demo_clip)
    redo_frame(
        job,
        REPAIRED,
        {"edge_fidelity": 0.31, "warp_error": 0.2, "suspect": True},
        {"edge_fidelity": 0.84, "warp_error": 0.04, "suspect": False},
    )
    job.ledger.set_meta("coherence_notes", ["keyframe interval 40 is longer than the clip <b>x</b>; used flow instead"])
    write_outputs(job)
    yield job, job.report_dir / "index.html"
    job.close()


def referenced(page: str) -> list:
    return re.findall(r'(?:src|href)="([^"]*)"', page)


def test_report_page_has_plot_worst_and_repaired_frames(finished: tuple[Job, Path]) -> None:
    job, index = finished
    page = index.read_text(encoding="utf-8")
    names = referenced(page)
    assert "scores.png" in names and "contact_sheet.png" in names
    # The suspect frame comes first among the worst, beside its source and canny map.
    worst = [n for n in names if re.match(r"frame_\d{6}_(source|canny|result)\.png$", n)]
    assert worst[:3] == [
        f"frame_{SUSPECT:06d}_source.png",
        f"frame_{SUSPECT:06d}_canny.png",
        f"frame_{SUSPECT:06d}_result.png",
    ]
    assert len(worst) == 3 * 6
    # Repaired: both attempts, with their own scores, the kept one said so.
    assert f"frame_{REPAIRED:06d}_attempt0.png" in names and f"frame_{REPAIRED:06d}_attempt1.png" in names
    assert "attempt 0: edge fidelity 0.310, warp error 0.200, suspect" in page
    assert "attempt 1 (kept): edge fidelity 0.840, warp error 0.040" in page
    # The before image is the history copy, the after image the current output.
    with (
        Image.open(job.report_dir / f"frame_{REPAIRED:06d}_attempt0.png") as before,
        Image.open(job.history_path(REPAIRED, 0)) as history,
    ):
        assert np.array_equal(np.asarray(before.convert("RGB")), np.asarray(history.convert("RGB")))
    assert "used flow instead" in page  # coherence notes
    assert "checkpoint = &quot;" in page and "[coherence]" in page  # settings used, escaped


def test_report_escapes_user_text(finished: tuple[Job, Path]) -> None:
    page = finished[1].read_text(encoding="utf-8")
    assert "<script" not in page.lower()
    assert "&lt;script&gt;alert(" in page and "&lt;b&gt;x&lt;/b&gt;" in page


def test_every_referenced_file_exists_inside_report(finished: tuple[Job, Path]) -> None:
    job, index = finished
    page = index.read_text(encoding="utf-8")
    assert "://" not in "".join(referenced(page)) and "@import" not in page and "url(" not in page
    report_dir = job.report_dir.resolve()
    for name in referenced(page):
        target = (report_dir / name).resolve()
        assert target.parent == report_dir and target.is_file(), name
        assert is_report_file(f"report/{name}"), name  # and the API may serve it
        with Image.open(target) as image:
            assert image.width > 0 and image.height > 0


def _colour_pixels(path: Path, rgb: tuple[int, int, int]) -> int:
    pixels = np.asarray(Image.open(path).convert("RGB")).astype(int)
    return int((np.abs(pixels - np.array(rgb)).sum(axis=2) < 40).sum())


def test_plot_marks_suspect_and_repaired_frames(tmp_path: Path, demo_clip: Path) -> None:
    with make_job(tmp_path / "plain", demo_clip) as job:
        for idx in range(10):  # no suspect frame, nothing repaired
            job.ledger.set_scores(idx, {**scores_for(idx), "suspect": False})
        write_outputs(job)
        plain = job.report_dir / "scores.png"
        assert _colour_pixels(plain, (220, 38, 38)) == 0 and _colour_pixels(plain, (22, 163, 74)) == 0
    with make_job(tmp_path / "marked", demo_clip) as job:
        redo_frame(job, REPAIRED, {"edge_fidelity": 0.3}, {"edge_fidelity": 0.8})
        write_outputs(job)
        marked = job.report_dir / "scores.png"
        assert _colour_pixels(marked, (220, 38, 38)) > 20  # the suspect frame's crosses
        assert _colour_pixels(marked, (22, 163, 74)) > 20  # the repaired frame's line


def test_report_without_scores_and_stale_images_removed(tmp_path: Path, demo_clip: Path) -> None:
    with make_job(tmp_path / "job", demo_clip) as job:
        write_outputs(job)
        before = {p.name for p in job.report_dir.glob("frame_*.png")}
        assert f"frame_{SUSPECT:06d}_source.png" in before
        job.ledger.db.execute("UPDATE frames SET scores=NULL")  # e.g. a job from before scoring
        write_outputs(job)
        page = (job.report_dir / "index.html").read_text(encoding="utf-8")
        assert "No per-frame scores were recorded" in page and "scores.png" not in referenced(page)
        assert not list(job.report_dir.glob("frame_*.png")) and not (job.report_dir / "scores.png").exists()


def test_embedded_report_inlines_only_its_own_images(finished: tuple[Job, Path]) -> None:
    inlined = embedded_report(finished[1])
    assert 'src="scores.png"' not in inlined and inlined.count('src="data:image/png;base64,') >= 20
    assert "<script" not in inlined.lower()


def test_api_serves_the_report_and_its_images_only(finished: tuple[Job, Path], tmp_path: Path) -> None:
    job, _ = finished
    manager = JobManager(tmp_path / "jobs")
    try:
        client = TestClient(create_app(manager, [tmp_path]), base_url="http://127.0.0.1")
        page = client.get(f"{API}/jobs/dance/files/report/index.html")
        assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
        assert "default-src 'none'" in page.headers["content-security-policy"]
        assert "attachment" not in page.headers.get("content-disposition", "")
        for name in referenced(page.text):
            image = client.get(f"{API}/jobs/dance/files/report/{name}")
            assert image.status_code == 200 and image.headers["content-type"] == "image/png", name
        for name in (
            "report/../job.toml",
            "report/ledger.sqlite",
            "report/frame_1_source.png",
            "report/sub/scores.png",
            "history/000007_a0.png",
            "src/000000.png",
            "report/%2e%2e/job.toml",
        ):
            assert client.get(f"{API}/jobs/dance/files/{name}").status_code == 404, name
        # A symlink with a served name must not lead out of the job folder.
        os.symlink(tmp_path / "outside.png", job.report_dir / "frame_000099_source.png")
        Image.new("RGB", (4, 4)).save(tmp_path / "outside.png")
        assert client.get(f"{API}/jobs/dance/files/report/frame_000099_source.png").status_code == 404
    finally:
        manager.close()


def test_reopened_job_rewrites_the_report(finished: tuple[Job, Path]) -> None:
    job, index = finished
    root = job.root
    job.close()
    with open_job(root) as again:
        again.ledger.set_scores(2, {"edge_fidelity": 0.05, "warp_error": 0.5, "suspect": True})
        write_outputs(again)
    page = index.read_text(encoding="utf-8")
    assert "frame_000002_source.png" in referenced(page)
