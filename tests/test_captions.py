"""trainer.captions (normalising, trigger, pruning, suggestions) and the WD14 tagger runner."""

from __future__ import annotations

import csv
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import trainer_media as tm  # tests/trainer_media.py

from trainer import captions as cap
from trainer.dataset import prepare
from trainer.prep_options import build_options
from vidstyle.errors import ModelNotFoundError, UserInputError


def test_normalise_underscores_weights_duplicates_whitespace() -> None:
    text = " long_hair,(blue_eyes:0.91) ,  Long_Hair,^_^ ,,  hair   ornament\n>_<, "
    assert cap.parse_caption(text) == ["long hair", "blue eyes", "^_^", "hair ornament", ">_<"]
    assert cap.parse_caption("long_hair", underscores_to_spaces=False) == ["long_hair"]


def test_trigger_goes_first_once() -> None:
    assert cap.with_trigger(["1boy", "Zhongli", "brown hair"], "zhongli") == ["zhongli", "1boy", "brown hair"]


def test_pruner_exact_patterns_and_protected() -> None:
    pruner = cap.Pruner(["brown_hair", "* eyes", "tassel"], protected=["amber eyes"])
    kept, removed = cap.prune(
        ["zhongli", "Brown Hair", "amber eyes", "blue eyes", "tassel", "coat"], pruner, keep=["zhongli"]
    )
    assert kept == ["zhongli", "amber eyes", "coat"]
    assert removed == ["Brown Hair", "blue eyes", "tassel"]
    assert cap.prune(["* eyes"], cap.Pruner(["* eyes"]), keep=["* eyes"])[0] == ["* eyes"]


def test_suggestions_are_frequent_non_generic_tags_with_counts() -> None:
    captions: list[list[str]] = [["1girl", "solo", "brown hair", "amber eyes", f"pose {i}"] for i in range(10)]
    for tags in captions[:4]:
        tags.append("earrings")  # 40%: below a 50% threshold
    frequencies = cap.tag_frequencies(captions)
    assert frequencies["brown hair"] == 10 and frequencies["earrings"] == 4
    suggested = cap.suggest_prune(frequencies, 10, 0.5)
    assert [(s.tag, s.count, s.fraction) for s in suggested] == [("amber eyes", 10, 1.0), ("brown hair", 10, 1.0)]
    assert [s.tag for s in cap.suggest_prune(frequencies, 10, 0.4, protected=["amber eyes"])] == [
        "brown hair",
        "earrings",
    ]
    assert cap.suggest_prune(Counter(), 0, 0.5) == []
    assert cap.suggest_prune(Counter({"brown hair": 2}), 2, 0.5) == []  # two images say nothing


def test_frequency_table() -> None:
    table = cap.frequency_table_csv(Counter({"b": 2, "a": 2, "c": 1}), 4, suggested={"a"}, pruned={"c"})
    rows = list(csv.reader(table.splitlines()))
    assert rows == [
        ["tag", "count", "percent", "suggested", "pruned"],
        ["a", "2", "50.0", "yes", ""],
        ["b", "2", "50.0", "", ""],
        ["c", "1", "25.0", "", "yes"],
    ]


def test_caption_files_in_other_encodings(tmp_path: Path) -> None:
    (tmp_path / "bom.txt").write_bytes("\ufeffcafé, hair".encode("utf-8"))
    (tmp_path / "legacy.txt").write_bytes("café, hair".encode("cp1252"))
    assert cap.parse_caption(cap.read_caption_file(tmp_path / "bom.txt")) == ["café", "hair"]
    assert cap.parse_caption(cap.read_caption_file(tmp_path / "legacy.txt")) == ["café", "hair"]
    (tmp_path / "prune.txt").write_text("# features\nbrown hair, amber eyes\ntassel  # outfit\n", encoding="utf-8")
    assert cap.read_list_file(tmp_path / "prune.txt") == ["brown hair", "amber eyes", "tassel"]


# ------------------------------------------------------------------------------ WD14 tagger

TAGS = [
    # name, category: the tiny model's outputs are wired to these rows
    ("general", 9),  # rating: always high, never written
    ("zhongli_(genshin_impact)", 4),  # character: fires on red
    ("blue_hair", 0),  # general: fires on blue
    ("white_background", 0),  # general: fires when the mean of all channels is high
]


def _tiny_wd14(folder: Path) -> Path:
    """A 4-output WD14 look-alike: NHWC 448 BGR float input -> channel means -> sigmoid."""
    onnx = pytest.importorskip("onnx", reason="building the test tagger needs the onnx package (pip install onnx)")
    from onnx import TensorProto, helper, numpy_helper

    # means are of B, G, R (the tagger feeds BGR); weights map them to 4 logits
    weights = (
        np.array(
            [
                [0.0, -12.0, 12.0, 4.0],  # B
                [0.0, -12.0, -12.0, 4.0],  # G
                [0.0, 12.0, -12.0, 4.0],  # R
            ],
            dtype=np.float32,
        )
        / 255.0
    )
    bias = np.array([6.0, -4.0, -4.0, -10.0], dtype=np.float32)
    graph = helper.make_graph(
        [
            helper.make_node("ReduceMean", ["input_1:0"], ["means"], axes=[1, 2], keepdims=0),
            helper.make_node("MatMul", ["means", "weights"], ["logits_raw"]),
            helper.make_node("Add", ["logits_raw", "bias"], ["logits"]),
            helper.make_node("Sigmoid", ["logits"], ["predictions_sigmoid"]),
        ],
        "tiny_wd14",
        [helper.make_tensor_value_info("input_1:0", TensorProto.FLOAT, ["batch", 448, 448, 3])],
        [helper.make_tensor_value_info("predictions_sigmoid", TensorProto.FLOAT, ["batch", 4])],
        initializer=[numpy_helper.from_array(weights, "weights"), numpy_helper.from_array(bias, "bias")],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "model.onnx"
    onnx.save(model, str(path))
    with open(folder / "selected_tags.csv", "w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(["tag_id", "name", "category", "count"])
        for n, (name, category) in enumerate(TAGS):
            writer.writerow([n, name, category, 100])
    return path


def test_wd14_tagger_channel_order_padding_and_categories(tmp_path: Path) -> None:
    from trainer.tagger import WD14Tagger

    tagger = WD14Tagger(str(_tiny_wd14(tmp_path / "model")))
    red = np.zeros((300, 300, 3), np.uint8)
    red[..., 0] = 255
    blue = np.zeros((300, 300, 3), np.uint8)
    blue[..., 2] = 255
    thin_black = np.zeros((40, 448, 3), np.uint8)  # padded square on white: mostly white
    tags = tagger.tag([red, blue, thin_black])
    assert tags[0] == ["zhongli_(genshin_impact)"]  # red seen as red: BGR order is right
    assert tags[1] == ["blue_hair"]
    assert tags[2] == ["white_background"]  # padding is white, not black
    assert all("general" not in t for t in tags)  # rating tags are never written


def test_wd14_tagger_errors_are_sentences(tmp_path: Path) -> None:
    from trainer.tagger import WD14Tagger

    with pytest.raises(ModelNotFoundError, match="does not exist"):
        WD14Tagger(str(tmp_path / "missing.onnx"))
    (tmp_path / "lonely").mkdir()
    (tmp_path / "lonely" / "model.onnx").write_bytes(b"not a model")
    with pytest.raises(ModelNotFoundError, match="selected_tags.csv"):
        WD14Tagger(str(tmp_path / "lonely" / "model.onnx"))
    (tmp_path / "lonely" / "selected_tags.csv").write_text("tag_id,name,category,count\n0,a,0,1\n", encoding="utf-8")
    pytest.importorskip("onnxruntime", reason="the tagger's optional dependency (vidstyle[tagger])")
    with pytest.raises(UserInputError, match="cannot load"):
        WD14Tagger(str(tmp_path / "lonely" / "model.onnx"))


def test_prep_with_wd14_captions(tmp_path: Path) -> None:
    model = _tiny_wd14(tmp_path / "model")
    src = tmp_path / "src"
    for i in range(3):
        image = tm.scene(500 + i)
        image[:, :, 0] = np.maximum(image[:, :, 0], 220)  # strongly red pictures
        image[:, :, 1:] = (image[:, :, 1:] * 0.1).astype(np.uint8)
        tm.save(src / f"r{i}.png", image)
    options = build_options(
        sources=[str(src)],
        out=str(tmp_path / "ds"),
        name="zhongli",
        caption_source="wd14",
        tagger_model=str(model),
        workers=1,
        face_detector="none",
        val_fraction=0,
        blur_threshold=0,
        drop_monochrome=False,
        dedupe=False,
    )
    result = prepare(options)
    captions = {f["relative"]: f["caption"] for f in result.manifest["files"]}
    assert set(captions.values()) == {"zhongli, zhongli (genshin impact)"}
    assert all(f["caption_from"] == "wd14 tagger" for f in result.manifest["files"])
