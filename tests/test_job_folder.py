"""Job folder ownership (issue 10, item 8): a folder is claimed and locked before anything is
written, two processes on one folder never overwrite each other, and a folder with rendered
frames or foreign files is never replaced (issue 16, item 1).

Runs on the passthrough backend (no torch), so it also runs under the WebUI's pins.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from vidstyle.compat import tomllib
from vidstyle.errors import Cancelled, JobStateError, UserInputError
from vidstyle.job import check_output_folder, create_job, open_job, retarget
from vidstyle.render import CancelToken, RenderEvent, run_job
from vidstyle.spec import JobSpec, load_spec

REPO = Path(__file__).resolve().parents[1]
WAIT = 60.0

# One process that creates a job in each of `rounds` folders, starting each attempt only when
# the test says go (so both processes race on the same folder at the same moment).
RACER = r"""
import json, sys, time
from pathlib import Path
from vidstyle.errors import VidstyleError
from vidstyle.job import create_job
from vidstyle.spec import load_spec

base, video, seed, rounds = Path(sys.argv[1]), sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
results = []
for n in range(rounds):
    spec = load_spec(None, {"source.path": video, "sampling.seed": seed, "backend.kind": "passthrough",
                            "size.width": 64, "size.height": 64})
    (base / f"ready{n}-{seed}").touch()
    while not (base / f"go{n}").exists():
        time.sleep(0.0005)
    try:
        job = create_job(spec, base / f"job{n}")
    except VidstyleError as err:
        results.append(["lost", str(err)])
        continue
    results.append(["won", ""])
    job.close()
print(json.dumps(results))
"""

# Holds a job folder's lock, as another vidstyle process (a CLI run) does, until the test
# removes the flag file. "open" opens the job like `vidstyle resume`; "claim" only takes the
# lock of a folder, as a create_job in another process does before it writes anything.
HOLDER = r"""
import sys, time
from pathlib import Path
from filelock import FileLock
from vidstyle.job import open_job

mode, root, flag = sys.argv[1], Path(sys.argv[2]), Path(sys.argv[3])
if mode == "open":
    held = open_job(root)
else:
    held = FileLock(str(root / ".lock"))
    held.acquire()
flag.write_text("held")
while flag.exists():
    time.sleep(0.01)
held.close() if mode == "open" else held.release()
"""


class Holder:
    """Another process holding a job folder's lock (context manager)."""

    def __init__(self, mode: str, root: Path, flag: Path) -> None:
        self.flag = flag
        self.process = subprocess.Popen([sys.executable, "-c", HOLDER, mode, str(root), str(flag)], env=_env())

    def __enter__(self) -> Holder:
        try:
            _wait_for(self.flag, "the other process taking the lock")
        except AssertionError:
            self.process.kill()
            raise
        return self

    def release(self) -> None:
        self.flag.unlink(missing_ok=True)
        self.process.wait(timeout=WAIT)

    def __exit__(self, *exc: object) -> None:
        self.release()


def make_spec(clip: Path, **extra: object) -> JobSpec:
    overrides = {
        "source.path": str(clip),
        "size.width": 64,
        "size.height": 64,
        "backend.kind": "passthrough",
        "sampling.seed": 7,
        "source.end_frame": 4,
    }
    overrides.update(extra)
    return load_spec("anime-canny-sd15", overrides)


def _env() -> dict:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(REPO), env.get("PYTHONPATH", "")])
    return env


def _wait_for(path: Path, what: str) -> None:
    deadline = time.monotonic() + WAIT
    while not path.exists():
        if time.monotonic() > deadline:
            raise AssertionError(f"{what} never happened")
        time.sleep(0.005)


def _seed_in(root: Path) -> int:
    with open(root / "job.toml", "rb") as handle:
        return int(tomllib.load(handle)["sampling"]["seed"])


def test_two_processes_racing_on_one_folder_exactly_one_wins(tmp_path: Path, demo_clip: Path) -> None:
    rounds = 4
    seeds = (111, 222)
    racers = [
        subprocess.Popen(
            [sys.executable, "-c", RACER, str(tmp_path), str(demo_clip), str(seed), str(rounds)],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=_env(),
        )
        for seed in seeds
    ]
    try:
        for n in range(rounds):
            for seed in seeds:
                _wait_for(tmp_path / f"ready{n}-{seed}", f"racer {seed} ready for round {n}")
            (tmp_path / f"go{n}").touch()
        outputs = [racer.communicate(timeout=WAIT) for racer in racers]
    finally:
        for racer in racers:
            racer.kill()
    results = [json.loads(out) for out, _ in outputs]
    for n in range(rounds):
        outcomes = [results[0][n], results[1][n]]
        winners = [seed for seed, (outcome, _) in zip(seeds, outcomes, strict=False) if outcome == "won"]
        assert len(winners) == 1, (n, outcomes)
        message = next(text for outcome, text in outcomes if outcome == "lost")
        assert message and "\n" not in message and "Traceback" not in message
        # the job folder holds the winner's spec, never a mix or the loser's
        assert _seed_in(tmp_path / f"job{n}") == winners[0], (n, outcomes)
        with open_job(tmp_path / f"job{n}") as job:
            assert job.spec.sampling.seed == winners[0]


def test_a_folder_claimed_by_another_process_gets_nothing_written(tmp_path: Path, demo_clip: Path) -> None:
    root = tmp_path / "job"
    root.mkdir()
    with Holder("claim", root, tmp_path / "held"):
        with pytest.raises(JobStateError, match="Another vidstyle process is working on"):
            create_job(make_spec(demo_clip), root)
        assert sorted(p.name for p in root.iterdir()) in ([], [".lock"])


def _partly_rendered(root: Path, clip: Path) -> None:
    """A job cancelled after its first finished frame."""
    cancel = CancelToken()

    def on_event(event: RenderEvent) -> None:
        if event.kind == "frame":
            cancel.cancel()

    with create_job(make_spec(clip), root) as job:
        with pytest.raises(Cancelled):
            run_job(job, on_event=on_event, cancel=cancel)
        assert job.ledger.counts()["done"] >= 1


def test_a_job_with_a_rendered_frame_is_never_replaced(tmp_path: Path, demo_clip: Path) -> None:
    root = tmp_path / "job"
    _partly_rendered(root, demo_clip)
    before = {p: p.read_bytes() for p in sorted((root / "out").glob("*.png"))}
    spec_before = (root / "job.toml").read_text()
    with pytest.raises(UserInputError, match="vidstyle resume"):
        create_job(make_spec(demo_clip, **{"sampling.seed": 8}), root, replace_unstarted=True)
    assert before and {p: p.read_bytes() for p in sorted((root / "out").glob("*.png"))} == before
    assert (root / "job.toml").read_text() == spec_before


def test_a_job_whose_ledger_shows_rendered_frames_is_never_replaced(tmp_path: Path, demo_clip: Path) -> None:
    root = tmp_path / "job"
    _partly_rendered(root, demo_clip)
    moved = tmp_path / "moved"
    (root / "out").rename(moved)  # the user moved the frames away; the ledger still knows them
    (root / "out").mkdir()
    with pytest.raises(UserInputError, match="vidstyle resume"):
        create_job(make_spec(demo_clip, **{"sampling.seed": 8}), root, replace_unstarted=True)
    assert _seed_in(root) == 7 and (root / "ledger.sqlite").is_file()


def test_an_unstarted_job_is_replaced_only_when_asked(tmp_path: Path, demo_clip: Path) -> None:
    root = tmp_path / "job"
    with create_job(make_spec(demo_clip), root) as job:
        run_job_prepare_only(job)
    assert check_output_folder(root) is True
    with pytest.raises(UserInputError, match="already holds a job"):
        create_job(make_spec(demo_clip, **{"sampling.seed": 8}), root)
    with create_job(make_spec(demo_clip, **{"sampling.seed": 8}), root, replace_unstarted=True) as job:
        assert job.replaced
        assert job.ledger.frame_count() == 0 and not job.prepared
        assert not any((root / "src").iterdir())
    assert _seed_in(root) == 8


def run_job_prepare_only(job: object) -> None:
    from vidstyle.job import prepare

    prepare(job)  # type: ignore[arg-type]


def test_a_job_folder_with_foreign_files_is_never_replaced(tmp_path: Path, demo_clip: Path) -> None:
    root = tmp_path / "job"
    create_job(make_spec(demo_clip), root).close()
    notes = root / "notes.txt"
    notes.write_text("mine")
    with pytest.raises(UserInputError):
        create_job(make_spec(demo_clip), root, replace_unstarted=True)
    assert notes.read_text() == "mine" and (root / "job.toml").is_file()


def test_a_source_inside_the_folder_is_never_replaced(tmp_path: Path, demo_clip: Path) -> None:
    root = tmp_path / "job"
    with create_job(make_spec(demo_clip), root) as job:
        run_job_prepare_only(job)
    frames = sorted((root / "src").glob("*.png"))
    # a user pointing a new job at the old job's frames: replacing would delete its own source
    with pytest.raises(UserInputError, match="inside the output folder"):
        create_job(make_spec(root / "src"), root, replace_unstarted=True)
    assert frames and sorted((root / "src").glob("*.png")) == frames


def test_retarget_changes_an_unstarted_job_and_refuses_a_started_one(tmp_path: Path, demo_clip: Path) -> None:
    root = tmp_path / "job"
    with create_job(make_spec(demo_clip), root) as job:
        run_job_prepare_only(job)
        retarget(job, {"sampling.denoise": 0.3, "size.width": 128})
        assert job.spec.sampling.denoise == 0.3
        assert not job.prepared and job.ledger.frame_count() == 0  # frames are prepared again at the new size
    with open_job(root) as job:
        assert (job.spec.sampling.denoise, job.spec.size.width, job.spec.sampling.seed) == (0.3, 128, 7)
        run_job(job)
    with open_job(root) as job:
        with pytest.raises(UserInputError, match="vidstyle redo"):
            retarget(job, {"sampling.denoise": 0.5})
        assert job.spec.sampling.denoise == 0.3
