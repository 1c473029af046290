"""trainer prep: filters, crops, captions, split, output safety, on images the tests make."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import trainer_media as tm  # tests/trainer_media.py
from PIL import Image

from trainer import buckets, faces, focal
from trainer.dataset import auto_repeats, load_prep_manifest, prepare, validation_count
from trainer.dedupe import choose_keepers, near_duplicate_pairs, popcount64
from trainer.prep import main as prep_main
from trainer.prep_options import build_options
from vidstyle.errors import OutputError, UserInputError

CHARACTER_CAPTION = "1girl, solo, brown_hair, amber_eyes, long hair, earrings, {extra}"


def _files(manifest: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {f["relative"]: f for f in manifest["files"]}


def _opts(src: Path, out: Path, **overrides: Any):  # type: ignore[no-untyped-def]
    values: dict[str, Any] = dict(sources=[str(src)], out=str(out), name="zhongli", workers=1, face_detector="none")
    values.update(overrides)
    return build_options(**values)


@pytest.fixture(scope="module")
def mixed(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """One source folder with every case the filters must decide, prepared once."""
    root = tmp_path_factory.mktemp("mixed")
    src = root / "src"
    for i in range(8):
        tm.save(src / f"char{i}.png", tm.scene(i, (320, 256)))
        (src / f"char{i}.txt").write_text(CHARACTER_CAPTION.format(extra=f"pose {i}"), encoding="utf-8")
    tm.save(src / "edit_of_char0.png", tm.small_edit(tm.scene(0, (320, 256))))  # smaller near-duplicate
    tm.save(src / "mirror_of_char1.png", tm.scene(1, (320, 256))[:, ::-1].copy())
    # a greyscale copy of char2 is a duplicate first (see test_train_prep_blur.py); this one is a picture of its own
    tm.save(src / "sub" / "grey_char2.png", tm.greyscale(tm.scene(24, (320, 256))))
    tm.save(src / "tiny.png", tm.scene(20, (64, 48)))
    import cv2

    tm.save(src / "blurry.png", cv2.GaussianBlur(tm.scene(21, (320, 256)), (0, 0), 3))
    tm.truncated_jpeg(src / "corrupt.jpg")
    (src / "zero.png").write_bytes(b"")
    (src / "notes.png").write_text("this is not an image", encoding="utf-8")
    tm.bomb_png(src / "bomb.png")
    tm.transparent_png(src / "screenshot.png")
    upright = tm.scene(22, (192, 288))
    upright[:40] = (255, 0, 0)  # a red band on top of the upright picture
    tm.exif_rotated_jpeg(src / "phone.jpg", upright)
    (src / "animation.gif").write_bytes(b"GIF89a")
    tm.save(src / "鍾離 (1).png", tm.scene(23, (320, 256)))  # non-Latin names reach the sheets too
    (src / "鍾離 (1).txt").write_text("鍾離, solo", encoding="utf-8")
    before = tm.tree_hashes(src)
    out = root / "dataset"
    result = prepare(_opts(src, out, size=256))
    return {"src": src, "out": out, "result": result, "manifest": result.manifest, "before": before}


def test_each_filter_decides_with_its_reason(mixed: dict[str, Any]) -> None:
    files = _files(mixed["manifest"])
    expect = {
        "edit_of_char0.png": "duplicate",
        "mirror_of_char1.png": "duplicate",
        "sub/grey_char2.png": "monochrome",
        "tiny.png": "low_resolution",
        "blurry.png": "blurry",
        "corrupt.jpg": "corrupt",
        "zero.png": "empty",
        "notes.png": "not_image",
        "bomb.png": "too_large",
        "animation.gif": "unsupported",
    }
    for name, code in expect.items():
        assert files[name]["reason_code"] == code, (name, files[name]["reason"])
        assert files[name]["status"] in ("dropped", "ignored")
        assert files[name]["reason"]
    for i in range(8):
        assert files[f"char{i}.png"]["status"] in ("train", "val"), files[f"char{i}.png"]["reason"]
    for name in ("screenshot.png", "phone.jpg", "鍾離 (1).png"):
        assert files[name]["status"] in ("train", "val"), files[name]["reason"]
    assert files["鍾離 (1).png"]["output"].endswith(f"/鍾離_1_{files['鍾離 (1).png']['sha256'][:8]}.png")
    # the larger original is kept and named as what the edit duplicates
    assert files["edit_of_char0.png"]["duplicate_of"] == "char0.png"
    assert files["mirror_of_char1.png"]["duplicate_of"] in ("char1.png",)
    counts = mixed["manifest"]["counts"]
    assert counts["found"] == 20 and counts["ignored"] == 1 and counts["kept"] == 11
    assert counts["by_reason"]["duplicate"] == 2


def test_originals_are_untouched(mixed: dict[str, Any]) -> None:
    assert tm.tree_hashes(mixed["src"]) == mixed["before"]


def test_kohya_layout_and_captions(mixed: dict[str, Any]) -> None:
    out, manifest = mixed["out"], mixed["manifest"]
    dataset = manifest["dataset"]
    train_dir = out / dataset["train_dir"]
    assert train_dir.name == f"{dataset['repeats']}_zhongli"
    assert dataset["repeats"] == auto_repeats(manifest["counts"]["train"]) and dataset["repeats_auto"]
    images = sorted(train_dir.glob("*.png")) + sorted((out / "val").glob("*.png"))
    assert len(images) == manifest["counts"]["kept"]
    for image in images:
        caption = image.with_suffix(".txt").read_text(encoding="utf-8")
        assert caption.startswith("zhongli")  # trigger first for keep_tokens = 1
        assert "_" not in caption and caption.count("\n") == 1
    on_disk = sorted(p.relative_to(out).as_posix() for p in out.rglob("*") if p.is_file())
    assert on_disk == sorted(manifest["outputs"] + ["prep.json"])
    assert (out / "sheets" / "kept_01.png").is_file() and (out / "sheets" / "dropped_01.png").is_file()
    assert load_prep_manifest(out)["dataset"] == dataset


def test_tag_suggestions_list_character_features(mixed: dict[str, Any]) -> None:
    suggested = {s["tag"]: s["count"] for s in mixed["manifest"]["tags"]["suggested_prune"]}
    # the 8 kept char*.png captions carry the features ("1girl" and "solo" are generic)
    assert suggested == {"brown hair": 8, "amber eyes": 8, "long hair": 8, "earrings": 8}
    table = (mixed["out"] / "tag_frequency.csv").read_text(encoding="utf-8").splitlines()
    assert table[0] == "tag,count,percent,suggested,pruned"
    assert any(line.startswith("brown hair,") and ",yes," in line for line in table)


def test_alpha_flattened_on_white_and_exif_applied(mixed: dict[str, Any]) -> None:
    files = _files(mixed["manifest"])
    shot = np.asarray(Image.open(mixed["out"] / files["screenshot.png"]["output"]).convert("RGB"))
    assert files["screenshot.png"]["alpha_flattened"] is True
    assert tuple(shot[2, 2]) == (255, 255, 255)  # the hidden green under alpha 0 is gone
    phone = files["phone.jpg"]
    assert (phone["width"], phone["height"]) == (192, 288) and phone["exif_orientation"] == 6
    pixels = np.asarray(Image.open(mixed["out"] / phone["output"]).convert("RGB")).astype(int)
    assert pixels.shape[0] > pixels.shape[1]  # portrait, as displayed
    top = pixels[: pixels.shape[0] // 10].reshape(-1, 3).mean(axis=0)
    assert top[0] > 200 and top[1] < 60 and top[2] < 60  # the red band is on top


def test_black_background_option(tmp_path: Path) -> None:
    src = tmp_path / "src"
    tm.transparent_png(src / "shot.png")
    result = prepare(_opts(src, tmp_path / "ds", background="#000000", blur_threshold=0, val_fraction=0))
    output = _files(result.manifest)["shot.png"]["output"]
    assert tuple(np.asarray(Image.open(tmp_path / "ds" / output).convert("RGB"))[2, 2]) == (0, 0, 0)


def test_bucket_mode_only_downscales_to_the_pixel_budget(tmp_path: Path) -> None:
    src = tmp_path / "src"
    tm.save(src / "wide.png", tm.scene(1, (1024, 512)))
    tm.save(src / "tall.png", tm.scene(2, (300, 900)))
    tm.save(src / "small.png", tm.scene(3, (200, 150)))
    result = prepare(_opts(src, tmp_path / "ds", size=256, min_side=0, val_fraction=0, blur_threshold=0))
    files = _files(result.manifest)
    for name, (width, height) in {"wide.png": (1024, 512), "tall.png": (300, 900), "small.png": (200, 150)}.items():
        out_w, out_h = Image.open(tmp_path / "ds" / files[name]["output"]).size
        assert out_w * out_h <= 256 * 256
        assert abs(out_w / out_h - width / height) < 0.02
        assert not files[name]["crop"]["upscaled"]
    assert Image.open(tmp_path / "ds" / files["small.png"]["output"]).size == (200, 150)  # never upscaled
    counts = result.manifest["buckets"]["counts"]
    assert sum(counts.values()) == 3
    assert result.manifest["dataset"]["enable_bucket"] is True


def test_kohya_bucket_table() -> None:
    sizes = buckets.bucket_sizes(512, 256, 1024, 64)
    assert (512, 512) in sizes and (704, 320) in sizes and (320, 704) in sizes and (1024, 256) in sizes
    assert all(w * h <= 512 * 512 and w % 64 == 0 and h % 64 == 0 for w, h in sizes)
    assert buckets.select_bucket(1024, 512, sizes) == (704, 320)
    assert buckets.select_bucket(512, 512, sizes) == (512, 512)
    assert buckets.select_bucket(600, 800, sizes) == (448, 576)


def _detail_patch_image(width: int = 512, height: int = 192) -> np.ndarray:
    """A flat, featureless wide picture with all of its detail in a patch near the right end."""
    image = np.full((height, width, 3), (200, 210, 220), np.uint8)
    patch = tm.scene(5, (120, 120))
    image[36:156, 372:492] = patch
    return image


def test_focal_crop_contains_the_detail_and_center_does_not(tmp_path: Path) -> None:
    src = tmp_path / "src"
    tm.save(src / "wide.png", _detail_patch_image())
    results = {}
    for mode in ("focal", "center"):
        result = prepare(_opts(src, tmp_path / mode, crop=mode, size=128, val_fraction=0, blur_threshold=0, min_side=0))
        results[mode] = _files(result.manifest)["wide.png"]["crop"]["box"]
    left, top, right, bottom = results["focal"]
    assert (right - left, bottom - top) == (192, 192)
    assert left <= 372 and right >= 492  # the whole planted patch is inside the crop
    assert results["center"][0] == (512 - 192) // 2 and results["center"][2] < 492


def test_plan_crop_shifts_to_contain_faces() -> None:
    # focal point pulled left by detail, but the face on the right must stay in the square
    plan = focal.plan_crop(1000, 400, "focal", 256, focal=(0.3, 0.5), faces=[(0.80, 0.2, 0.9, 0.5)])
    left, _, right, _ = plan.box
    assert right - left == 400 and left <= 800 and right >= 900
    assert plan.scale == pytest.approx(256 / 400) and not plan.upscaled


@pytest.mark.skipif(
    faces.bundled_cascade() is None or tm.grace_hopper() is None,
    reason="needs OpenCV's cascade and matplotlib's sample photo",
)
def test_face_filter_and_face_focal_crop(tmp_path: Path) -> None:
    import cv2

    face = cv2.resize(tm.grace_hopper(), (256, 300), interpolation=cv2.INTER_AREA)
    src = tmp_path / "src"
    tm.save(src / "one.png", face)
    tm.save(src / "two.png", np.concatenate([face, face[:, ::-1]], axis=1))
    wide = np.full((300, 900, 3), 128, np.uint8)
    wide[:, :300] = tm.scene(3, (300, 300))  # detail on the left ...
    wide[:, 644:900] = face  # ... the person on the right
    tm.save(src / "wide.png", wide)
    result = prepare(
        _opts(
            src,
            tmp_path / "ds",
            face_detector="auto",
            crop="focal",
            size=256,
            val_fraction=0,
            dedupe=False,
            blur_threshold=0,
        )
    )
    files = _files(result.manifest)
    assert len(files["one.png"]["measures"]["faces"]) == 1 and files["one.png"]["status"] == "train"
    assert files["two.png"]["reason_code"] == "too_many_faces"
    left, _, right, _ = files["wide.png"]["crop"]["box"]
    fx0, _, fx1, _ = files["wide.png"]["measures"]["faces"][0]
    assert left <= fx0 * 900 and right >= fx1 * 900


def test_crop_modes_do_not_upscale_unless_asked(tmp_path: Path) -> None:
    src = tmp_path / "src"
    tm.save(src / "small.png", tm.scene(4, (200, 180)))
    tm.save(src / "big.png", tm.scene(6, (400, 300)))
    result = prepare(_opts(src, tmp_path / "no", crop="center", size=256, min_side=0, val_fraction=0, blur_threshold=0))
    files = _files(result.manifest)
    assert files["small.png"]["reason_code"] == "needs_upscale" and "--allow-upscale" in files["small.png"]["reason"]
    assert files["big.png"]["status"] == "train"
    result = prepare(
        _opts(
            src,
            tmp_path / "yes",
            crop="center",
            size=256,
            min_side=0,
            val_fraction=0,
            blur_threshold=0,
            allow_upscale=True,
        )
    )
    assert result.manifest["counts"]["upscaled"] == 1
    assert any("upscaled" in note for note in result.manifest["notes"])
    assert Image.open(tmp_path / "yes" / _files(result.manifest)["small.png"]["output"]).size == (256, 256)


def test_pruning_and_trigger(tmp_path: Path) -> None:
    src = tmp_path / "src"
    for i in range(6):
        tm.save(src / f"c{i}.png", tm.scene(30 + i))
        (src / f"c{i}.txt").write_text(
            f"zhongli, 1boy, Brown_Hair, amber eyes,  earrings ,earrings, tassel, pose{i}", encoding="utf-8"
        )
    result = prepare(
        _opts(
            src,
            tmp_path / "ds",
            trigger="zhongli",
            prune=["tassel"],
            prune_suggested=True,
            keep_tags=["earrings"],
            val_fraction=0,
        )
    )
    caption = (result.train_dir / f"{_files(result.manifest)['c0.png']['output'].split('/')[-1][:-4]}.txt").read_text()
    assert caption == "zhongli, 1boy, earrings, pose0\n"
    assert set(result.manifest["tags"]["pruned"]) == {"Brown Hair", "amber eyes", "tassel"}
    assert {s["tag"] for s in result.manifest["tags"]["suggested_prune"]} == {"Brown Hair", "amber eyes", "tassel"}


def test_tags_dir_caption_source(tmp_path: Path) -> None:
    src, tags = tmp_path / "src", tmp_path / "tags"
    tm.save(src / "a.png", tm.scene(40))
    tags.mkdir()
    (tags / "a.txt").write_text("(long_hair:0.97), (blue_eyes:0.88), ^_^", encoding="utf-8")
    result = prepare(_opts(src, tmp_path / "ds", caption_source="tags", tags_dir=str(tags), val_fraction=0))
    assert _files(result.manifest)["a.png"]["caption"] == "zhongli, long hair, blue eyes, ^_^"


def test_split_is_seeded_and_reproducible(tmp_path: Path) -> None:
    src = tmp_path / "src"
    for i in range(20):
        tm.save(src / f"s{i:02d}.png", tm.scene(100 + i, (128, 128)))

    def val_set(seed: int, out: str, **extra: Any) -> set:
        result = prepare(_opts(src, tmp_path / out, seed=seed, val_fraction=0.25, min_side=0, **extra))
        return {f["relative"] for f in result.manifest["files"] if f["status"] == "val"}

    first, again, other = val_set(1, "a"), val_set(1, "b"), val_set(2, "c")
    assert len(first) == 5 and first == again and first != other
    assert len(val_set(1, "d", val_count=3)) == 3
    assert validation_count(3, 0.1, None) == 0 and validation_count(10, 0.1, None) == 1
    with pytest.raises(UserInputError):
        validation_count(4, 0.1, 4)


def test_rerun_same_options_same_files_other_options_no_mixing(tmp_path: Path) -> None:
    src, out = tmp_path / "src", tmp_path / "ds"
    for i in range(6):
        tm.save(src / f"r{i}.png", tm.scene(200 + i))
    first = prepare(_opts(src, out))
    snapshot = tm.tree_hashes(out)
    prepare(_opts(src, out))
    assert {k: v[0] for k, v in tm.tree_hashes(out).items()} == {k: v[0] for k, v in snapshot.items()}
    (out / first.manifest["dataset"]["train_dir"] / "r0_cache.npz").write_bytes(b"kohya latents")  # disposable
    second = prepare(_opts(src, out, repeats=7, exclude=["r5.png"], val_fraction=0))
    on_disk = sorted(p.relative_to(out).as_posix() for p in out.rglob("*") if p.is_file())
    assert on_disk == sorted(second.manifest["outputs"] + ["prep.json"])
    assert [p.name for p in (out / "img").iterdir()] == ["7_zhongli"]
    assert _files(second.manifest)["r5.png"]["reason_code"] == "excluded"
    assert not list(tmp_path.glob(".ds.*"))  # no staging or old copies left behind


def test_output_folder_with_other_data_is_refused(tmp_path: Path) -> None:
    src = tmp_path / "src"
    tm.save(src / "a.png", tm.scene(1))
    foreign = tmp_path / "busy"
    foreign.mkdir()
    (foreign / "thesis.docx").write_bytes(b"precious")
    with pytest.raises(OutputError, match="already holds other data"):
        prepare(_opts(src, foreign))
    assert (foreign / "thesis.docx").read_bytes() == b"precious"
    ours = tmp_path / "ours"
    prepare(_opts(src, ours))
    (ours / "img" / "notes.txt").write_text("mine", encoding="utf-8")
    with pytest.raises(OutputError, match="did not write"):
        prepare(_opts(src, ours))
    assert (ours / "img" / "notes.txt").read_text(encoding="utf-8") == "mine"
    with pytest.raises(UserInputError, match="inside the output folder"):
        prepare(_opts(src, tmp_path))


def test_output_inside_source_is_not_scanned(tmp_path: Path) -> None:
    src = tmp_path / "src"
    for i in range(3):
        tm.save(src / f"a{i}.png", tm.scene(60 + i))
    first = prepare(_opts(src, src / "dataset"))
    second = prepare(_opts(src, src / "dataset"))
    assert first.manifest["counts"]["found"] == second.manifest["counts"]["found"] == 3


def test_empty_source_and_nothing_kept(tmp_path: Path) -> None:
    (tmp_path / "empty").mkdir()
    with pytest.raises(UserInputError, match="No png/jpg"):
        prepare(_opts(tmp_path / "empty", tmp_path / "ds"))
    with pytest.raises(UserInputError, match="does not exist"):
        prepare(_opts(tmp_path / "missing", tmp_path / "ds"))
    src = tmp_path / "bad"
    (src).mkdir()
    (src / "zero.png").write_bytes(b"")
    with pytest.raises(UserInputError, match="No image passed the filters"):
        prepare(_opts(src, tmp_path / "ds2"))
    manifest = json.loads((tmp_path / "ds2" / "prep.json").read_text(encoding="utf-8"))
    assert manifest["files"][0]["reason_code"] == "empty"


def test_pixel_limit_is_a_reason_not_a_crash(tmp_path: Path) -> None:
    src = tmp_path / "src"
    tm.save(src / "big.png", tm.scene(1, (300, 300)))
    tm.save(src / "ok.png", tm.scene(2, (200, 200)))
    result = prepare(_opts(src, tmp_path / "ds", max_pixels=250 * 250, min_side=0))
    files = _files(result.manifest)
    assert files["big.png"]["reason_code"] == "too_large" and "--max-pixels" in files["big.png"]["reason"]
    assert files["ok.png"]["status"] in ("train", "val")


def test_exclude_file_and_patterns(tmp_path: Path) -> None:
    src = tmp_path / "src"
    for name in ("keep.png", "skip_1.png", "skip_2.png", "other.png"):
        tm.save(src / name, tm.scene(hash(name) % 1000))
    listing = tmp_path / "exclude.txt"
    listing.write_text("# off-model\nother.png\n", encoding="utf-8")
    result = prepare(_opts(src, tmp_path / "ds", exclude=["skip_*"], exclude_file=str(listing)))
    files = _files(result.manifest)
    assert [files[n]["reason_code"] for n in ("skip_1.png", "skip_2.png", "other.png")] == ["excluded"] * 3
    assert files["keep.png"]["status"] == "train"


def test_process_pool_gives_the_same_dataset(tmp_path: Path) -> None:
    src = tmp_path / "src"
    for i in range(10):
        tm.save(src / f"p{i}.png", tm.scene(300 + i, (200, 160)))
    tm.save(src / "grey.png", tm.greyscale(tm.scene(300, (200, 160))))
    serial = prepare(_opts(src, tmp_path / "one", workers=1, min_side=0))
    pooled = prepare(_opts(src, tmp_path / "two", workers=2, min_side=0))
    strip = lambda m: {k: v for k, v in m.items() if k != "options"}  # noqa: E731
    assert json.dumps(strip(serial.manifest)).replace("/one/", "/x/") == json.dumps(strip(pooled.manifest)).replace(
        "/two/", "/x/"
    )
    assert {k: v[0] for k, v in tm.tree_hashes(tmp_path / "one").items() if k != "prep.json"} == {
        k: v[0] for k, v in tm.tree_hashes(tmp_path / "two").items() if k != "prep.json"
    }


def test_options_are_checked_at_the_edge(tmp_path: Path) -> None:
    with pytest.raises(UserInputError, match="trigger"):
        build_options(sources=["x"], out="y", name="n", trigger="a, b")
    with pytest.raises(UserInputError, match="name"):
        build_options(sources=["x"], out="y", name="../evil")
    with pytest.raises(UserInputError, match="tags_dir"):
        build_options(sources=["x"], out="y", name="n", caption_source="tags")
    with pytest.raises(UserInputError, match="size"):
        build_options(sources=["x"], out="y", name="n", size=500)


def test_cli_runs_and_reports(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    src = tmp_path / "src"
    for i in range(5):
        tm.save(src / f"c{i}.png", tm.scene(400 + i))
        (src / f"c{i}.txt").write_text("brown_hair, solo", encoding="utf-8")
    code = prep_main(
        [
            "prep",
            str(src),
            "--out",
            str(tmp_path / "ds"),
            "--name",
            "hero",
            "--repeats",
            "4",
            "--workers",
            "1",
            "--face-detector",
            "none",
            "--prune",
            "solo",
            "--quiet",
        ]
    )
    printed = capsys.readouterr()
    assert code == 0 and "5 kept" in printed.out and "brown hair 5/5" in printed.out
    assert (tmp_path / "ds" / "img" / "4_hero").is_dir()
    code = prep_main(["prep", str(tmp_path / "nowhere"), "--out", str(tmp_path / "x"), "--name", "hero"])
    printed = capsys.readouterr()
    assert code == 2 and printed.err.startswith("error: ") and printed.err.count("\n") == 1


# ------------------------------------------------------------------------------ near-duplicates


def test_hamming_pairs_match_brute_force() -> None:
    rng = np.random.default_rng(0)
    hashes = [int(v) for v in rng.integers(0, 2**63, 300, dtype=np.int64)]
    hashes += [h ^ (1 << 3) ^ (1 << 40) for h in hashes[:20]]  # 2-bit neighbours
    found = set(near_duplicate_pairs(hashes, 4, block=64))
    brute = {
        (i, j, bin(hashes[i] ^ hashes[j]).count("1"))
        for i in range(len(hashes))
        for j in range(i + 1, len(hashes))
        if bin(hashes[i] ^ hashes[j]).count("1") <= 4
    }
    assert found == brute and len(found) >= 20
    values = np.array(hashes, dtype=np.uint64)
    table = np.array([bin(int(v)).count("1") for v in values])
    assert (popcount64(values) == table).all()


def test_choose_keepers_never_drops_for_a_dropped_image() -> None:
    # A~B and B~C but not A~C; B is best: A and C are both duplicates of B.
    dropped = choose_keepers(3, [(0, 1, 3), (1, 2, 3)], rank=[(1.0,), (3.0,), (2.0,)])
    assert dropped == {0: (1, 3), 2: (1, 3)}
    # A is best: A kept, B dropped for A, C kept (its only neighbour B was dropped).
    dropped = choose_keepers(3, [(0, 1, 3), (1, 2, 3)], rank=[(3.0,), (2.0,), (1.0,)])
    assert dropped == {1: (0, 3)}


def test_repeats_default() -> None:
    assert auto_repeats(114) == 3 and auto_repeats(10) == 30 and auto_repeats(1) == 100 and auto_repeats(5000) == 1
    assert math.isclose(auto_repeats(100) * 100, 300)


def test_large_jpeg_decoded_at_reduced_size_matches_full_decode(tmp_path: Path) -> None:
    import cv2

    src = tmp_path / "src"
    picture = tm.scene(77, (1600, 1200))
    tm.save(src / "big.jpg", picture, quality=95)
    result = prepare(_opts(src, tmp_path / "ds", crop="center", size=256, val_fraction=0))
    record = _files(result.manifest)["big.jpg"]
    left, top, right, bottom = record["crop"]["box"]
    assert (left, top, right, bottom) == (200, 0, 1400, 1200)
    expected = cv2.resize(picture[top:bottom, left:right], (256, 256), interpolation=cv2.INTER_AREA).astype(int)
    written = np.asarray(Image.open(tmp_path / "ds" / record["output"]).convert("RGB")).astype(int)
    assert np.abs(written - expected).mean() < 4.0  # same framing; only JPEG/DCT-scaling noise


def test_every_supported_format_and_mode_loads(tmp_path: Path) -> None:
    src = tmp_path / "src"
    base = tm.scene(88, (256, 192))
    src.mkdir()
    Image.fromarray(base).save(src / "a.webp", "WEBP", quality=90)
    Image.fromarray(base).save(src / "b.bmp")
    Image.fromarray(base).convert("CMYK").save(src / "c.jpeg", "JPEG", quality=90)
    Image.fromarray(tm.greyscale(tm.scene(89, (256, 192)))[..., 0].astype(np.uint16) * 257).save(src / "d16.png")
    palette = Image.fromarray(tm.scene(90, (256, 192))).convert("P", palette=Image.ADAPTIVE, colors=16)
    palette.info["transparency"] = 0
    palette.save(src / "e_palette.png", transparency=0)
    result = prepare(_opts(src, tmp_path / "ds", val_fraction=0, drop_monochrome=False, dedupe=False, min_side=0))
    files = _files(result.manifest)
    assert {name: f["status"] for name, f in files.items()} == dict.fromkeys(
        ["a.webp", "b.bmp", "c.jpeg", "d16.png", "e_palette.png"], "train"
    )
    grey16 = np.asarray(Image.open(tmp_path / "ds" / files["d16.png"]["output"]).convert("L")).astype(int)
    expected = tm.greyscale(tm.scene(89, (256, 192)))[..., 0].astype(int)
    assert np.abs(grey16 - expected).max() <= 1  # 16-bit scaled to 8-bit, not clipped to white
    assert files["e_palette.png"]["alpha_flattened"] is True


def test_face_detector_specs(tmp_path: Path) -> None:
    from vidstyle.errors import ModelNotFoundError

    assert faces.resolve_spec("none") is None and faces.resolve_spec("auto") == faces.bundled_cascade()
    with pytest.raises(ModelNotFoundError):
        faces.resolve_spec(str(tmp_path / "missing.xml"))
    (tmp_path / "bad.xml").write_text("<opencv_storage></opencv_storage>", encoding="utf-8")
    (tmp_path / "bad.onnx").write_bytes(b"not a network")
    for name in ("bad.xml", "bad.onnx"):
        with pytest.raises(UserInputError, match="face"):
            faces.load_detector(faces.resolve_spec(str(tmp_path / name)))
