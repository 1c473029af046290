"""The blur filter on the art people train on (issue 13): clean cel-shaded, pastel line art,
painted and photographic pictures are kept, Gaussian-blurred copies (sigma >= 2 at 512 px)
are caught, and a blurred copy of a kept picture is reported as a duplicate first."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import trainer_media as tm  # tests/trainer_media.py

from trainer.dataset import prepare
from trainer.images import SHARPNESS_THRESHOLD, sharpness
from trainer.prep_options import build_options

SEEDS = range(15)  # 60 sharp pictures and 120 blurred copies


def test_sharp_art_is_kept_and_blurred_copies_are_caught() -> None:
    """The calibration: >= 98% of the sharp set kept (a JPEG round trip on every third), every
    blurred copy (sigma 2 and 3, half of them JPEG'd afterwards) caught, for each kind."""
    kept: dict[str, list[float]] = {}
    for kind, make in tm.ART_KINDS.items():
        sharp_scores, blurred_scores = [], []
        for seed in SEEDS:
            picture = make(seed)
            sharp_scores.append(sharpness(tm.jpeg_round_trip(picture) if seed % 3 == 0 else picture))
            for sigma in (2.0, 3.0):
                blurred = tm.gaussian_blurred(picture, sigma)
                blurred_scores.append(sharpness(tm.jpeg_round_trip(blurred) if seed % 2 else blurred))
        kept[kind] = sharp_scores
        share_kept = np.mean([s >= SHARPNESS_THRESHOLD for s in sharp_scores])
        assert share_kept >= 0.98, (kind, sorted(sharp_scores)[:3])
        assert max(blurred_scores) < SHARPNESS_THRESHOLD, (kind, sorted(blurred_scores)[-3:])
    assert min(min(v) for v in kept.values()) > 0  # every sharp picture has edges to judge


def test_flat_colour_does_not_count_for_or_against() -> None:
    picture = tm.pastel_line_art(3)
    framed = np.full((1024, 1024, 3), picture[0, 0], np.uint8)  # the same art on a big flat ground
    framed[256:768, 256:768] = picture
    assert sharpness(framed) == pytest.approx(sharpness(picture), abs=0.03)
    assert sharpness(np.full((64, 64, 3), 200, np.uint8)) == 0.0  # no edges at all: nothing sharp


def _opts(src: Path, out: Path):  # type: ignore[no-untyped-def]
    return build_options(
        sources=[str(src)], out=str(out), name="miko", workers=1, face_detector="none", size=512, val_fraction=0
    )


def test_prep_keeps_clean_flat_art_and_names_blurred_copies_as_duplicates(tmp_path: Path) -> None:
    src = tmp_path / "src"
    sharp = {f"pastel{i}.png": tm.pastel_line_art(100 + i) for i in range(3)}
    sharp.update({f"painted{i}.png": tm.painted(200 + i) for i in range(2)})
    for name, picture in sharp.items():
        tm.save(src / name, picture)
    tm.save(src / "soft_copy_of_painted0.png", tm.gaussian_blurred(sharp["painted0.png"], 3.0))
    tm.save(src / "soft_copy_of_pastel0.png", tm.gaussian_blurred(sharp["pastel0.png"], 2.0))
    tm.save(src / "out_of_focus.png", tm.gaussian_blurred(tm.photographic(300), 2.0))
    tm.save(src / "smeared_cel.png", tm.gaussian_blurred(tm.cel_shaded(301), 2.5))
    files = {f["relative"]: f for f in prepare(_opts(src, tmp_path / "ds")).manifest["files"]}
    assert [name for name in sharp if files[name]["status"] != "train"] == []
    assert files["soft_copy_of_painted0.png"]["reason_code"] == "duplicate"
    assert files["soft_copy_of_pastel0.png"]["reason_code"] == "duplicate"
    assert files["out_of_focus.png"]["reason_code"] == "blurry" and files["smeared_cel.png"]["reason_code"] == "blurry"
    assert "edge sharpness" in files["smeared_cel.png"]["reason"]


def test_a_threshold_on_the_old_laplacian_scale_is_refused_with_the_new_scale_named() -> None:
    from vidstyle.errors import UserInputError

    with pytest.raises(UserInputError, match="old Laplacian scale.*from 0 to 1"):
        build_options(sources=["imgs"], out="out", name="zl", blur_threshold=40)
    assert build_options(sources=["imgs"], out="out", name="zl", blur_threshold=0.3).blur_threshold == 0.3
