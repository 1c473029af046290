"""trainer.images opened from several threads at once (prep runs inline on a host's job threads).

`warnings.catch_warnings` swaps the process-wide filter list, so concurrent use can leak or lose
filters (before Python 3.14). Opening images must leave `warnings.filters` alone, at every moment,
and still give the right results: Pillow's size warning stays quiet, its hard limit and our
--max-pixels limit still refuse, small images decode.
"""

from __future__ import annotations

import io
import subprocess
import sys
import threading
import time
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import trainer_media as tm  # tests/trainer_media.py
from PIL import Image

from trainer.images import ImageRejected, load_image, open_image

ROOT = Path(__file__).resolve().parents[1]
THREADS = 6
ROUNDS = 60
# Above Pillow's MAX_IMAGE_PIXELS (so Pillow warns) and below twice that (so Pillow does not refuse).
WARNED = (10000, 10000)
REFUSED = (50000, 50000)  # above twice Pillow's limit: DecompressionBombError
MIDDLE_LIMIT = 8192 * 8192  # prep's default --max-pixels: below WARNED


def warned_jpeg(path: Path) -> Path:
    """A tiny JPEG whose frame header claims WARNED. A JPEG, not a PNG: reading a PNG's EXIF
    decodes it, which would make each open allocate 300 MB and the threads crawl."""
    buffer = io.BytesIO()
    Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(buffer, "JPEG")
    data = bytearray(buffer.getvalue())
    sof = data.index(b"\xff\xc0")  # baseline frame: length(2) precision(1) height(2) width(2)
    data[sof + 5 : sof + 9] = WARNED[1].to_bytes(2, "big") + WARNED[0].to_bytes(2, "big")
    path.write_bytes(bytes(data))
    return path


def _inputs(tmp_path: Path) -> dict[str, bytes]:
    assert Image.MAX_IMAGE_PIXELS is not None
    assert Image.MAX_IMAGE_PIXELS < WARNED[0] * WARNED[1] <= 2 * Image.MAX_IMAGE_PIXELS
    small = np.zeros((48, 64, 3), np.uint8)
    small[:, :32] = (200, 30, 10)
    Image.fromarray(small).save(tmp_path / "small.png")
    return {
        "warned": warned_jpeg(tmp_path / "warned.jpg").read_bytes(),
        "refused": tm.bomb_png(tmp_path / "refused.png", *REFUSED).read_bytes(),
        "small": (tmp_path / "small.png").read_bytes(),
    }


def _one_round(data: dict[str, bytes]) -> list[str]:
    """Every case once; returns what went wrong (empty when all results are right)."""
    problems = []
    _, header = open_image(data["warned"], 2**31)
    if (header.format, header.width, header.height) != ("JPEG", *WARNED):
        problems.append(f"warned image header {header}")
    for name, limit, expected in (("warned", MIDDLE_LIMIT, "--max-pixels"), ("refused", 2**31, "decompression-bomb")):
        try:
            open_image(data[name], limit)
            problems.append(f"{name} image was not refused")
        except ImageRejected as exc:
            if exc.code != "too_large" or expected not in exc.message:
                problems.append(f"{name}: {exc.code} {exc.message}")
    loaded = load_image(data["small"], (255, 255, 255), MIDDLE_LIMIT)
    if (
        loaded.rgb.shape != (48, 64, 3)
        or tuple(loaded.rgb[0, 0]) != (200, 30, 10)
        or tuple(loaded.rgb[0, 63]) != (0,) * 3
    ):
        problems.append(f"small image decoded as {loaded.rgb.shape} {loaded.rgb[0, 0]} {loaded.rgb[0, 63]}")
    return problems


def _run_threads(work: Callable[[], list[str]], watch: Callable[[], None]) -> list[str]:
    """THREADS workers start together; `watch` runs on its own thread until they are done.
    Returns the workers' problems, their exceptions, and a note if any round did not run."""
    start = threading.Barrier(THREADS + 1)
    done = threading.Event()
    problems: list[str] = []
    rounds: list[int] = []

    def worker() -> None:
        start.wait()
        try:
            for _ in range(ROUNDS):
                problems.extend(work())
                rounds.append(1)
        except BaseException as exc:  # a thread's exception would otherwise only be printed
            problems.append(f"{type(exc).__name__}: {exc}")

    def watcher() -> None:
        start.wait()
        while not done.is_set():
            watch()

    threads = [threading.Thread(target=worker) for _ in range(THREADS)]
    spy = threading.Thread(target=watcher)
    for thread in [*threads, spy]:
        thread.start()
    for thread in threads:
        thread.join()
    done.set()
    spy.join()
    if len(rounds) != THREADS * ROUNDS:
        problems.append(f"{len(rounds)} of {THREADS * ROUNDS} rounds ran")
    return problems


# pytest restores the filters it had before collecting this file, which drops the one trainer.images
# installs at import; quiet Pillow's warning here much the same way (pytest adds this filter before
# the test starts, so the comparisons below do not see it; it names the module, so it differs from
# a bare simplefilter an unsafe open would add). That users see no warning is checked below.
@pytest.mark.filterwarnings("ignore::PIL.Image.DecompressionBombWarning:PIL.Image")
def test_opening_images_on_many_threads_leaves_the_warning_filters_alone(tmp_path: Path) -> None:
    data = _inputs(tmp_path)
    before_list = warnings.filters
    before = list(before_list)
    seen_changed: list[list[Any]] = []

    def watch() -> None:
        now = list(warnings.filters)
        if now != before and len(seen_changed) < 5:
            seen_changed.append(now)
        time.sleep(0.0002)  # look often, without holding the GIL from the workers

    problems = _run_threads(lambda: _one_round(data), watch)
    assert problems == []
    assert seen_changed == [], "another thread saw the warning filters change while images were opened"
    assert warnings.filters is before_list and list(warnings.filters) == before


def test_users_see_no_pillow_size_warning_and_other_warnings_still_show(tmp_path: Path) -> None:
    """In a fresh interpreter (no pytest capturing warnings): the threads' opens print nothing, and
    the quieting is narrow: the same warning class from other code, and other warnings, still show."""
    _inputs(tmp_path)
    script = f"""
import threading, warnings
from pathlib import Path
from PIL import Image
from trainer.images import open_image

data = Path({str(tmp_path / "warned.jpg")!r}).read_bytes()
def work():
    for _ in range(200):
        open_image(data, 2**31)
threads = [threading.Thread(target=work) for _ in range(6)]
for t in threads: t.start()
for t in threads: t.join()
print("opened")
warnings.warn("from the caller", Image.DecompressionBombWarning)
warnings.warn("something else", RuntimeWarning)
"""
    done = subprocess.run(
        [sys.executable, "-c", script], cwd=ROOT, capture_output=True, text=True, timeout=120, check=False
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "opened"
    assert "exceeds limit" not in done.stderr
    assert "DecompressionBombWarning: from the caller" in done.stderr
    assert "RuntimeWarning: something else" in done.stderr
