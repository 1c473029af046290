"""Job folder, render loop, resume and redo, on the passthrough backend and a failing double."""

from __future__ import annotations

import threading
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from vidstyle.backends.base import Img2ImgRequest, Img2ImgResult
from vidstyle.backends.passthrough import PassthroughBackend
from vidstyle.errors import BackendError, Cancelled, JobStateError, UserInputError
from vidstyle.imageio import png_text, read_png
from vidstyle.job import create_job, open_job
from vidstyle.render import CancelToken, RenderEvent, parse_frame_list, run_job, schedule_redo
from vidstyle.spec import load_spec


def _spec(clip: Path, **extra: object):
    overrides = {
        "source.path": str(clip),
        "size.width": 64,
        "size.height": 64,
        "backend.kind": "passthrough",
        "sampling.seed": 5,
        "source.end_frame": 8,
        # These tests are about the loop with frames that do not depend on each other
        # (the preset's flow mode is tested in test_coherence_render.py).
        "coherence.mode": "independent",
    }
    overrides.update(extra)
    return load_spec("anime-canny-sd15", overrides)


class FlakyBackend(PassthroughBackend):
    """Fails the first call for chosen frames, then works: the loop must retry."""

    name = "flaky"

    def __init__(self, spec, fail_once: list[int], always_fail: list[int] = ()) -> None:
        super().__init__(spec)
        self.fail_once = set(fail_once)
        self.always_fail = set(always_fail)
        self.calls: list[int] = []

    def img2img(self, request: Img2ImgRequest) -> Img2ImgResult:
        self.calls.append(request.frame_index)
        if request.frame_index in self.always_fail:
            raise BackendError("server said no")
        if request.frame_index in self.fail_once:
            self.fail_once.discard(request.frame_index)
            raise BackendError("temporary failure")
        return super().img2img(request)


def test_full_job_outputs(tmp_path: Path, demo_clip: Path) -> None:
    events: list[RenderEvent] = []
    with create_job(_spec(demo_clip), tmp_path / "job") as job:
        run_job(job, on_event=events.append)
        assert job.ledger.counts()["done"] == 8
        for name in ("result.mp4", "compare.mp4", "report/contact_sheet.png", "report/report.json", "report/report.md"):
            assert (job.root / name).is_file(), name
        params = png_text(job.out_path(3))["parameters"]
        assert (
            "Negative prompt:" in params
            and "Seed: 5" in params
            and "ControlNet 0:" in params
            and "Size: 64x64" in params
        )
        # passthrough: the output is the fitted source frame, byte for byte
        assert np.array_equal(read_png(job.out_path(3)), read_png(job.src_path(3)))
    frame_events = [e for e in events if e.kind == "frame"]
    assert [e.done for e in frame_events] == list(range(1, 9))
    assert events[-1].kind == "done"


def test_job_folder_refuses_to_overwrite(tmp_path: Path, demo_clip: Path) -> None:
    (tmp_path / "busy").mkdir()
    (tmp_path / "busy" / "mine.txt").write_text("user data")
    with pytest.raises(UserInputError, match="not empty"):
        create_job(_spec(demo_clip), tmp_path / "busy")
    assert (tmp_path / "busy" / "mine.txt").read_text() == "user data"


def test_second_process_is_locked_out(tmp_path: Path, demo_clip: Path) -> None:
    with create_job(_spec(demo_clip), tmp_path / "job"):
        with pytest.raises(JobStateError, match="Another vidstyle process"):
            open_job(tmp_path / "job")


def test_retry_then_failure_keeps_job_resumable(tmp_path: Path, demo_clip: Path) -> None:
    with create_job(_spec(demo_clip), tmp_path / "job") as job:
        backend = FlakyBackend(job.spec, fail_once=[2], always_fail=[5])
        with pytest.raises(JobStateError, match=r"1 frame\(s\) failed .*frame 5"):
            run_job(job, backend=backend)
        assert backend.calls.count(2) == 2
        assert job.ledger.counts() == {"pending": 0, "done": 7, "failed": 1}
        assert not job.result_path.exists()
    with open_job(tmp_path / "job") as job:
        run_job(job, backend=PassthroughBackend(job.spec))
        assert job.result_path.exists()


def test_cancel_stops_and_resume_finishes(tmp_path: Path, demo_clip: Path) -> None:
    cancel = CancelToken()

    def on_event(event: RenderEvent) -> None:
        if event.kind == "frame" and event.done == 3:
            cancel.cancel()

    with create_job(_spec(demo_clip), tmp_path / "job") as job:
        with pytest.raises(Cancelled):
            run_job(job, on_event=on_event, cancel=cancel)
        done = job.ledger.counts()["done"]
        assert 3 <= done < 8
    with open_job(tmp_path / "job") as job:
        backend = FlakyBackend(job.spec, fail_once=[])
        run_job(job, backend=backend)
        assert len(backend.calls) == 8 - done  # finished frames are never rendered again
        assert job.result_path.exists()


def test_redo_keeps_earlier_attempts(tmp_path: Path, demo_clip: Path) -> None:
    with create_job(_spec(demo_clip), tmp_path / "job") as job:
        run_job(job)
        before = read_png(job.out_path(4))
        schedule_redo(job, parse_frame_list("4,6-7", job.ledger.frame_count()), {"sampling.denoise": 0.3})
        assert job.ledger.todo() == [4, 6, 7]
        run_job(job)
        assert np.array_equal(read_png(job.history_path(4, 0)), before)
        row = job.ledger.frame(4)
        assert (row.attempt, row.status) == (1, "done")
        assert "Denoising strength: 0.3" in png_text(job.out_path(4))["parameters"]
        assert job.ledger.attempts(4)[0]["kept_as"] == "history/000004_a0.png"


def test_redo_rejects_job_wide_settings_and_bad_lists(tmp_path: Path, demo_clip: Path) -> None:
    from vidstyle.errors import SpecError

    with create_job(_spec(demo_clip), tmp_path / "job") as job:
        run_job(job)
        with pytest.raises(SpecError, match="whole job"):
            schedule_redo(job, [1], {"size.width": 128})
        with pytest.raises(SpecError, match="outside this job"):
            parse_frame_list("3,99", 8)
        with pytest.raises(SpecError, match="like 10-20,45"):
            parse_frame_list("a-b", 8)


def test_concurrent_backend_writes_each_frame_once(tmp_path: Path, demo_clip: Path) -> None:
    class Parallel(PassthroughBackend):
        concurrency = 3

        def __init__(self, spec) -> None:
            super().__init__(spec)
            self.lock = threading.Lock()
            self.seen: list[int] = []

        def img2img(self, request: Img2ImgRequest) -> Img2ImgResult:
            with self.lock:
                self.seen.append(request.frame_index)
            return super().img2img(request)

    with create_job(_spec(demo_clip), tmp_path / "job") as job:
        backend = Parallel(job.spec)
        run_job(job, backend=backend)
        assert sorted(backend.seen) == list(range(8))


def test_disk_full_mid_run_is_one_error_and_resumable(
    tmp_path: Path, demo_clip: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import errno
    import os

    import vidstyle.atomic as atomic_module
    from vidstyle.errors import OutputError

    with create_job(_spec(demo_clip), tmp_path / "job") as job:
        from vidstyle.job import prepare

        prepare(job)
        real_replace = os.replace
        writes = {"n": 0}

        def filling_disk(src: str, dst: str) -> None:
            if "/out/" in str(dst):
                writes["n"] += 1
                if writes["n"] > 4:
                    raise OSError(errno.ENOSPC, "No space left on device")
            real_replace(src, dst)

        monkeypatch.setattr(atomic_module.os, "replace", filling_disk)
        with pytest.raises(OutputError, match="disk is full"):
            run_job(job)
        monkeypatch.setattr(atomic_module.os, "replace", real_replace)
        done = job.ledger.counts()["done"]
        assert done == 4
        for idx in range(8):  # a frame is done exactly when its file is in place; no temp files left
            assert job.out_path(idx).exists() == (job.ledger.frame(idx).status == "done")
        assert not [p for p in (job.root / "out").iterdir() if p.name.startswith(".")]
        assert not job.result_path.exists()
    with open_job(tmp_path / "job") as job:
        run_job(job)
        assert job.ledger.counts()["done"] == 8 and job.result_path.exists()


def test_contact_sheet_spreads_picks_over_short_jobs(tmp_path: Path) -> None:
    from vidstyle.outputs import contact_sheet

    paths = []
    for idx in range(3):
        path = tmp_path / f"{idx}.png"
        Image.new("RGB", (32, 32), (idx * 100, 0, 0)).save(path)
        paths.append(path)
    contact_sheet(paths, tmp_path / "sheet.png", tile_width=32)
    with Image.open(tmp_path / "sheet.png") as sheet:
        reds = [sheet.getpixel((x * 32 + 16, 16))[0] for x in range(3)]
    assert reds == [0, 100, 200]


def test_progress_inside_a_frame_feeds_the_eta(tmp_path: Path, demo_clip: Path) -> None:
    class Reporting(PassthroughBackend):
        """Reports progress mid-frame the way the WebUI API backend does (fraction, eta_relative)."""

        on_progress = None

        def img2img(self, request: Img2ImgRequest) -> Img2ImgResult:
            if self.on_progress is not None:
                self.on_progress(0.5, 2.0)
            return super().img2img(request)

    events: list[RenderEvent] = []
    with create_job(_spec(demo_clip), tmp_path / "job") as job:
        run_job(job, backend=Reporting(job.spec), on_event=events.append)
    progress = [e for e in events if e.kind == "progress" and e.stage == "render"]  # not the encode's
    assert len(progress) == 8
    # first frame: 2 s left in it, then 7 more frames at 2 s / (1 - 0.5) = 4 s each
    assert progress[0].eta_seconds == pytest.approx(2.0 + 7 * 4.0)
    assert progress[0].frame_fraction == 0.5


def test_dropped_intermediates_are_rebuilt_for_a_redo(tmp_path: Path, demo_clip: Path) -> None:
    from vidstyle.job import drop_intermediates

    with create_job(_spec(demo_clip), tmp_path / "job") as job:
        with pytest.raises(JobStateError, match="until the job has finished"):
            drop_intermediates(job)
        run_job(job)
        finished = read_png(job.out_path(5))
        drop_intermediates(job)
        assert not any((job.root / "src").iterdir()) and not any((job.root / "control").iterdir())
        assert np.array_equal(read_png(job.out_path(5)), finished)  # results are never touched
        schedule_redo(job, [2], {"sampling.denoise": 0.3})
        run_job(job)
        assert job.src_path(2).is_file() and job.ledger.counts()["done"] == 8
        assert np.array_equal(read_png(job.out_path(2)), read_png(job.src_path(2)))  # passthrough of the rebuilt frame
