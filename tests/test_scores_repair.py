"""Per-frame scores in the ledger and automatic repair, through the real job path (simulated img2img)."""

from __future__ import annotations

import dataclasses
import json
import sqlite3
from pathlib import Path

import numpy as np
import pytest

from vidstyle.backends.base import Img2ImgRequest, Img2ImgResult
from vidstyle.backends.passthrough import PassthroughBackend
from vidstyle.backends.simulated import SimulatedImg2ImgBackend
from vidstyle.cli import main
from vidstyle.errors import SpecError
from vidstyle.job import create_job, drop_intermediates, open_job
from vidstyle.ledger import Ledger
from vidstyle.render import run_job
from vidstyle.scores import load_scores, score_job, scores_summary
from vidstyle.spec import load_spec

SEED = 5
WRONG_SEED = 999
BROKEN = {5, 13}


@pytest.fixture(scope="module")
def clip(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from vidstyle.synthetic import make_clip

    return make_clip(tmp_path_factory.mktemp("media") / "clip.mp4", seconds=1.0, fps=24, size=(128, 128))


def _spec(clip: Path, **extra: object):
    overrides = {
        "source.path": str(clip),
        "size.width": 128,
        "size.height": 128,
        "backend.kind": "simulated",
        "sampling.seed": SEED,
        "encode.keep_audio": False,
        "coherence.mode": "independent",
    }
    overrides.update(extra)
    return load_spec("anime-canny-sd15", overrides)


class BreakingBackendDouble(SimulatedImg2ImgBackend):
    """Simulated img2img that renders chosen frames' first attempt broken: a wrong seed at denoise 1.0.

    A repair attempt samples with another seed (the attempt shifts it), so it renders normally.
    """

    def __init__(self, spec, broken: set[int]) -> None:
        super().__init__(spec)
        self.broken = broken

    def img2img(self, request: Img2ImgRequest) -> Img2ImgResult:
        if request.frame_index in self.broken and request.seed == SEED:
            request = dataclasses.replace(request, seed=WRONG_SEED, denoise=1.0)
        return super().img2img(request)


class ShiftingBackendDouble(PassthroughBackend):
    """Passthrough (output = source frame) that shifts chosen frames' output by a few pixels."""

    def __init__(self, spec, shifted: set[int], pixels: int = 5) -> None:
        super().__init__(spec)
        self.shifted, self.pixels = shifted, pixels

    def img2img(self, request: Img2ImgRequest) -> Img2ImgResult:
        result = super().img2img(request)
        if request.frame_index in self.shifted:
            from PIL import Image

            moved = np.roll(np.asarray(result.image.convert("RGB")), (self.pixels, self.pixels), axis=(0, 1))
            result = Img2ImgResult(image=Image.fromarray(moved), info=result.info)
        return result


def _first_attempt_suspects(job) -> set[int]:
    return {row.idx for row in job.ledger.frames() if job.ledger.attempts(row.idx)[0]["scores"]["suspect"]}


def test_broken_frames_are_flagged_and_repaired_keeping_every_attempt(tmp_path: Path, clip: Path) -> None:
    spec = _spec(clip, **{"repair.enabled": True})
    with create_job(spec, tmp_path / "job") as job:
        run_job(job, backend=BreakingBackendDouble(job.spec, BROKEN))
        assert _first_attempt_suspects(job) == BROKEN
        scores = load_scores(job)
        for idx in BROKEN:
            attempts = job.ledger.attempts(idx)
            assert [a["attempt"] for a in attempts] == [0, 1]  # the first repair attempt was good enough
            before, after = attempts[0]["scores"], attempts[1]["scores"]
            assert after["edge_fidelity"] > before["edge_fidelity"]
            assert after["warp_error"] < before["warp_error"]
            # every attempt in history/, the best one (the repair) in out/ and current in the ledger
            assert [a["kept_as"] for a in attempts] == [f"history/{idx:06d}_a0.png", f"history/{idx:06d}_a1.png"]
            assert job.out_path(idx).read_bytes() == job.history_path(idx, 1).read_bytes()
            assert job.history_path(idx, 0).read_bytes() != job.history_path(idx, 1).read_bytes()
            assert job.ledger.frame(idx).attempt == 1 and scores[idx].attempt == 1 and not scores[idx].suspect
        untouched = set(range(job.ledger.frame_count())) - BROKEN
        assert all(len(job.ledger.attempts(idx)) == 1 for idx in untouched)
        summary = scores_summary(job)
        assert summary["repaired"] == sorted(BROKEN) and summary["suspects"] == []
        report = json.loads((job.report_dir / "report.json").read_text())
        assert report["redone_frames"] == sorted(BROKEN)  # outputs were written after the repair


def test_repair_in_a_flow_chain_renders_the_frames_after_a_repaired_one_again(tmp_path: Path, clip: Path) -> None:
    from vidstyle.repair import repair_frames

    with create_job(_spec(clip, **{"coherence.mode": "flow"}), tmp_path / "job") as job:
        run_job(job, backend=BreakingBackendDouble(job.spec, {5}))
        before = load_scores(job)
        assert before[5].suspect
        result = repair_frames(job, SimulatedImg2ImgBackend(job.spec), [5])
        assert result.repaired == {5: 1}
        # frames 6.. were made from the broken frame 5's output: they are made again from the repaired one
        count = job.ledger.frame_count()
        assert result.followers == list(range(6, count))
        assert all(len(job.ledger.attempts(idx)) == 1 for idx in range(5))
        assert all((job.root / job.ledger.attempts(idx)[0]["kept_as"]).is_file() for idx in range(6, count))
        after = score_job(job)
        assert after[5].warp_error < before[5].warp_error / 2 and after[6].warp_error < before[6].warp_error
        assert after[5].edge_fidelity > before[5].edge_fidelity


def test_repair_keeps_the_original_when_no_attempt_is_better(tmp_path: Path, clip: Path) -> None:
    class AlwaysBrokenDouble(BreakingBackendDouble):
        def img2img(self, request: Img2ImgRequest) -> Img2ImgResult:
            if request.frame_index in self.broken:  # every attempt: wrong seed, denoise 1.0, even worse lines
                request = dataclasses.replace(
                    request,
                    seed=WRONG_SEED + request.seed,
                    denoise=1.0,
                    controlnet=request.controlnet.copy(update={"weight": 0.0}),
                )
            return super().img2img(request)

    spec = _spec(clip, **{"repair.max_attempts": 2})  # not enabled: the job leaves frame 9 broken
    with create_job(spec, tmp_path / "job") as job:
        run_job(job, backend=BreakingBackendDouble(job.spec, {9}))
        original = job.out_path(9).read_bytes()
        from vidstyle.repair import repair_frames

        result = repair_frames(job, AlwaysBrokenDouble(job.spec, {9}), [9], stop_when_good=False)
        assert result.repaired == {} and result.attempts == {9: 2}
        assert job.out_path(9).read_bytes() == original and job.ledger.frame(9).attempt == 0
        assert [a["attempt"] for a in job.ledger.attempts(9)] == [0, 1, 2]
        assert all((job.root / a["kept_as"]).is_file() for a in job.ledger.attempts(9))


def test_repair_command_on_a_finished_job_with_dropped_intermediates(
    tmp_path: Path, clip: Path, capsys: pytest.CaptureFixture
) -> None:
    with create_job(_spec(clip), tmp_path / "job") as job:  # repair disabled: the job only scores
        run_job(job, backend=BreakingBackendDouble(job.spec, BROKEN))
        assert scores_summary(job)["suspects"] == sorted(BROKEN)
        assert not (job.root / "history").exists()
        drop_intermediates(job)
        broken_pixels = {idx: job.out_path(idx).read_bytes() for idx in BROKEN}
    assert main(["repair", str(tmp_path / "job"), "-q"]) == 0
    out = capsys.readouterr().out
    assert "2 of 2 repaired (5, 13)" in out and "0 suspect" in out
    with open_job(tmp_path / "job") as job:
        for idx in BROKEN:
            assert job.history_path(idx, 0).read_bytes() == broken_pixels[idx]  # the user's frame is kept
            assert job.out_path(idx).read_bytes() != broken_pixels[idx]
            assert job.ledger.frame(idx).attempt == 1
        assert scores_summary(job)["suspects"] == []


def test_a_job_with_nothing_suspect_repairs_nothing(tmp_path: Path, clip: Path, capsys: pytest.CaptureFixture) -> None:
    with create_job(_spec(clip, **{"repair.enabled": True}), tmp_path / "job") as job:
        run_job(job, backend=SimulatedImg2ImgBackend(job.spec))
        summary = scores_summary(job)
        assert summary["scored"] == job.ledger.frame_count() and summary["suspects"] == [] and summary["repaired"] == []
        assert all(row.attempt == 0 and len(job.ledger.attempts(row.idx)) == 1 for row in job.ledger.frames())
        assert not (job.root / "history").exists()
    assert main(["repair", str(tmp_path / "job"), "-q"]) == 0
    assert (
        "scores: 0 suspect frame(s); mean edge fidelity" in capsys.readouterr().out
    )  # nothing tried, nothing repaired
    with open_job(tmp_path / "job") as job:
        assert not (job.root / "history").exists()


def test_redo_repair_renders_every_step_for_hand_picked_frames(tmp_path: Path, clip: Path) -> None:
    with create_job(_spec(clip, **{"repair.max_attempts": 3}), tmp_path / "job") as job:
        run_job(job, backend=SimulatedImg2ImgBackend(job.spec))
    assert main(["redo", str(tmp_path / "job"), "--frames", "2", "--repair", "-q"]) == 0
    with open_job(tmp_path / "job") as job:
        attempts = job.ledger.attempts(2)
        assert [a["attempt"] for a in attempts] == [0, 1, 2, 3]
        # the schedule's settings are recorded with each attempt: step 2 lowers denoise, raises the weight
        assert json.loads(attempts[2]["overrides"]) == {"sampling.denoise": 0.4, "controlnet.weight": 1.2}
        assert all(a["scores"] is not None and (job.root / a["kept_as"]).is_file() for a in attempts)
        kept = job.ledger.frame(2).attempt
        assert job.out_path(2).read_bytes() == job.history_path(2, kept).read_bytes()
        assert [a["attempt"] for a in job.ledger.attempts(3)] == [0]
    assert main(["redo", str(tmp_path / "job"), "--frames", "2", "--repair", "--denoise", "0.3", "-q"]) == 2


def test_edge_fidelity_is_lower_for_a_shifted_frame(tmp_path: Path, clip: Path) -> None:
    with create_job(_spec(clip, **{"backend.kind": "passthrough"}), tmp_path / "job") as job:
        run_job(job, backend=ShiftingBackendDouble(job.spec, {7}))
        scores = load_scores(job)
        faithful = [s.edge_fidelity for idx, s in scores.items() if idx != 7]
        assert min(faithful) > 0.95 and scores[7].edge_fidelity < 0.6
        assert scores[7].suspect and sum(s.suspect for s in scores.values()) <= 2  # frame 8 continues a jump


def test_enabled_repair_schedule_must_fit_the_job_settings(clip: Path) -> None:
    with pytest.raises(SpecError, match="repair step 2 makes the denoise -0.05"):
        _spec(clip, **{"sampling.denoise": 0.05, "repair.enabled": True})
    _spec(clip, **{"sampling.denoise": 0.05})  # a schedule that is not used does not stand in the way
    with pytest.raises(SpecError):
        _spec(clip, **{"repair.schedule": []})


def test_old_ledger_gains_score_columns_and_keeps_its_attempts(tmp_path: Path) -> None:
    path = tmp_path / "ledger.sqlite"
    db = sqlite3.connect(str(path))
    db.executescript("""
        CREATE TABLE frames (idx INTEGER PRIMARY KEY, source_index INTEGER NOT NULL, time REAL NOT NULL,
            status TEXT NOT NULL DEFAULT 'pending', attempt INTEGER NOT NULL DEFAULT 0,
            overrides TEXT NOT NULL DEFAULT '{}',
            seed INTEGER, backend TEXT, render_ms REAL, finished_at REAL, info TEXT, error TEXT);
        CREATE TABLE attempts (idx INTEGER NOT NULL, attempt INTEGER NOT NULL, overrides TEXT NOT NULL, seed INTEGER,
            backend TEXT, render_ms REAL, finished_at REAL, kept_as TEXT, PRIMARY KEY (idx, attempt));
        INSERT INTO frames (idx, source_index, time, status, seed) VALUES (0, 0, 0.0, 'done', 7);
        INSERT INTO attempts (idx, attempt, overrides, seed) VALUES (0, 0, '{}', 7);
    """)
    db.commit()
    db.close()
    ledger = Ledger(path)
    assert ledger.attempts(0) == [
        {
            "attempt": 0,
            "overrides": "{}",
            "seed": 7,
            "backend": None,
            "render_ms": None,
            "kept_as": None,
            "scores": None,
        }
    ]
    ledger.set_scores(0, {"edge_fidelity": 0.9, "warp_error": None, "suspect": False})
    ledger.set_attempt_scores(0, 0, {"edge_fidelity": 0.9, "warp_error": None, "suspect": False})
    ledger.close()
    again = Ledger(path)
    assert again.attempts(0)[0]["scores"]["edge_fidelity"] == 0.9
    assert again.all_scores() == {0: (0, {"edge_fidelity": 0.9, "warp_error": None, "suspect": False})}


def test_an_attempt_number_is_never_reused_after_an_earlier_one_was_kept(tmp_path: Path) -> None:
    ledger = Ledger(tmp_path / "ledger.sqlite")
    ledger.add_frames([(0, 0, 0.0)])
    ledger.mark_done(0, 1, "x", 1.0, {})
    ledger.start_redo(0, {}, "history/000000_a0.png")
    ledger.mark_done(0, 2, "x", 1.0, {})
    ledger.keep_attempt(0, 0)  # repair found the first attempt best
    assert (ledger.frame(0).attempt, ledger.frame(0).seed) == (0, 1)
    assert ledger.start_redo(0, {}, "history/000000_a0.png") == 2


def test_api_status_and_tab_show_the_scores(tmp_path: Path, clip: Path) -> None:
    from vidstyle.manager import JobManager
    from vidstyle.tab_status import status_html

    root = tmp_path / "jobs"
    with create_job(_spec(clip, **{"repair.enabled": True}), root / "broken") as job:
        run_job(job, backend=BreakingBackendDouble(job.spec, BROKEN))
    with create_job(_spec(clip, **{"source.end_frame": 3}), root / "short") as job:
        run_job(job, backend=SimulatedImg2ImgBackend(job.spec))
    manager = JobManager(root)
    try:
        scores = manager.status("broken")["scores"]
        assert scores["repaired"] == sorted(BROKEN) and scores["suspects"] == []
        assert 0.9 < scores["mean_edge_fidelity"] <= 1.0 and scores["mean_warp_error"] > 0
        assert len(scores["worst"]) == 5 and {"frame", "edge_fidelity", "warp_error", "suspect", "attempt"} <= set(
            scores["worst"][0]
        )
        assert "2 of 2 repaired (5, 13)" in status_html(manager.status("broken"))
        short = manager.status("short")["scores"]
        assert short["scored"] == 3 and short["suspects"] == []  # too few frames to call any an outlier
    finally:
        manager.close()
