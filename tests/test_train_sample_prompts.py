"""sample_prompts.txt built from the dataset (issue 13): the subject tag the captions use, the
most frequent non-feature tags, the preset's framing, and a comment above every prompt saying
where it came from; and caption text that can never become an sd-scripts prompt option
(issue 10: whitespace is normalised before " --" is neutralised)."""

from __future__ import annotations

import json
from pathlib import Path

import train_helpers as th  # tests/train_helpers.py
from PIL import Image

from trainer import commands
from trainer.config_schema import FAMILIES
from trainer.run import SamplesSpec, build_sample_prompts, inspect_dataset, parse_prompt_line, read_sample_prompts


def male_dataset(folder: Path) -> Path:
    """27 training captions: 26 say 1boy (one, a group shot, says 1girl); black hair is his
    feature; a jacket, a smile and a katana are what the set mostly shows."""
    images = folder / "img" / "10_kenji"
    images.mkdir(parents=True)
    for i in range(27):
        Image.new("RGB", (32, 32), (i * 9, 80, 120)).save(images / f"k_{i:02d}.png")
        tags = [
            "kenji",
            "1girl" if i == 0 else "1boy",
            "black hair",
            "short hair",
            "upper body" if i % 2 else "full body",
        ]
        tags += ["jacket"] * (i < 22) + ["katana"] * (i < 15) + ["grin"] * (i < 18) + [f"pose {i}"]
        (images / f"k_{i:02d}.txt").write_text(", ".join(tags), encoding="utf-8")
    (folder / "val").mkdir()
    Image.new("RGB", (32, 32), (200, 10, 10)).save(folder / "val" / "v_00.png")
    (folder / "val" / "v_00.txt").write_text("kenji, 1boy, sitting, bench", encoding="utf-8")
    prep = {
        "dataset": {"trigger": "kenji", "resolution": 512},
        "tags": {"suggested_prune": [{"tag": "short hair", "count": 27, "fraction": 1.0}]},
    }
    (folder / "prep.json").write_text(json.dumps(prep), encoding="utf-8")
    return folder


def prompt_lines(path: Path) -> list[str]:
    """What sd-scripts' load_prompts() reads: stripped lines, not empty, not starting with '#'."""
    return [
        line.strip() for line in path.read_text(encoding="utf-8").splitlines(True) if line.strip() and line[0] != "#"
    ]


def test_character_samples_ask_for_the_subject_the_captions_use(tmp_path: Path) -> None:
    ds = male_dataset(tmp_path / "ds")
    out = tmp_path / "run"
    assert commands.main(th.config_argv(ds, th.make_checkpoint(tmp_path), out, "sd15-character")) == 0
    text = (out / "sample_prompts.txt").read_text(encoding="utf-8")
    lines = prompt_lines(out / "sample_prompts.txt")
    prompts = [parse_prompt_line(line)["prompt"] for line in lines]
    assert len(prompts) == 4 and all(p.startswith("kenji, 1boy, solo") for p in prompts[:3])
    assert not any("1girl" in p for p in prompts)
    portrait, full_body, outfit = prompts[:3]
    # the set's frequent tags, not its features (black hair, short hair) and not its framing
    assert portrait == "kenji, 1boy, solo, jacket, grin, katana, upper body, looking at viewer, simple background"
    assert "full body" in full_body and "jacket" in full_body
    assert "casual clothes" in outfit and "jacket" not in outfit  # another outfit
    # every prompt line has a comment right above it saying where it came from
    raw = text.splitlines()
    for line in lines:
        comment = raw[raw.index(line) - 1]
        assert comment.startswith("# ")
    assert "{subject} = 1boy (in 26 of 27 training captions)" in text
    assert "{tags} = jacket (22), grin (18), katana (15)" in text
    assert "held-out caption of val/v_00.png" in text
    assert [p["source"] for p in read_sample_prompts(out / "sample_prompts.txt")] == ["preset"] * 3 + ["heldout"]


def test_a_dataset_without_subject_or_frequent_tags_leaves_no_stray_commas(tmp_path: Path) -> None:
    ds = th.make_dataset(tmp_path / "ds", name="zed", train=4, val=0, captions=False)
    spec = SamplesSpec(prompts=["{trigger}, {subject}, solo, {tags}, upper body"], heldout=0)
    [prompt] = build_sample_prompts(spec, FAMILIES["sd15"], inspect_dataset(ds))
    assert prompt.prompt == "zed, solo, upper body"
    assert "{subject} left out" in prompt.note and "{tags} left out" in prompt.note


def test_caption_whitespace_cannot_smuggle_an_sd_scripts_option(tmp_path: Path) -> None:
    ds = th.make_dataset(tmp_path / "ds", name="zed", train=2, val=3)
    tricky = ["zed, 1boy\t--n evil", "zed, 1boy\n--w 4096 --h 4096", "zed, 1boy, \u3000 ---d 7 \t\t--ss ddim"]
    for i, caption in enumerate(tricky):
        (ds / "val" / f"val_{i:02d}.txt").write_text(caption, encoding="utf-8")
    prompts = build_sample_prompts(
        SamplesSpec(prompts=["{trigger}"], negative="bad\t--w 9", heldout=3), FAMILIES["sd15"], inspect_dataset(ds)
    )
    for prompt in prompts:
        assert " --" not in prompt.prompt and "\t" not in prompt.prompt and "\n" not in prompt.prompt
        parsed = parse_prompt_line(prompt.line())  # as sd-scripts splits the line
        assert parsed["width"] == 512 and parsed["height"] == 512 and parsed["seed"] == prompt.seed
        assert parsed["negative"] == "bad -w 9" and parsed.get("sampler") is None
    assert [p.prompt for p in prompts[1:]] == [
        "zed, 1boy -n evil",
        "zed, 1boy -w 4096 -h 4096",
        "zed, 1boy, -d 7 -ss ddim",
    ]
