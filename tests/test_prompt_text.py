"""The prompt + `<lora:name:weight>` text (vidstyle.prompt_text), shared by both WebUI backends and infotext."""

from __future__ import annotations

from vidstyle.infotext import build_parameters
from vidstyle.prompt_text import lora_tag, prompt_with_loras
from vidstyle.spec import JobSpec


def test_tags_follow_the_prompt_after_one_space() -> None:
    assert (
        prompt_with_loras("1girl, anime", [("charA", 0.75), ("flat", 1.0)])
        == "1girl, anime <lora:charA:0.75> <lora:flat:1>"
    )


def test_an_empty_prompt_gets_no_leading_space() -> None:
    assert prompt_with_loras("", [("charA", 0.8)]) == "<lora:charA:0.8>"
    assert prompt_with_loras("", [("charA", 0.8), ("flat", -0.5)]) == "<lora:charA:0.8> <lora:flat:-0.5>"


def test_no_loras_leaves_the_prompt_as_it_is() -> None:
    assert prompt_with_loras("  spaced prompt ", []) == "  spaced prompt "
    assert prompt_with_loras("", []) == ""


def test_weights_are_written_as_the_webui_writes_them() -> None:
    assert [lora_tag("x", w) for w in (1.0, 0.5, -1.25, 0.333333)] == [
        "<lora:x:1>",
        "<lora:x:0.5>",
        "<lora:x:-1.25>",
        "<lora:x:0.333333>",
    ]


def test_infotext_of_an_empty_prompt_starts_with_the_tag() -> None:
    spec = JobSpec.parse_obj(
        {
            "prompt": "",
            "model": {
                "checkpoint": "anything-v5.safetensors",
                "loras": [{"name": "zhongli.safetensors", "weight": 0.8}],
            },
        }
    )
    first, *rest = build_parameters(spec, seed=7, frame_index=0).split("\n")
    assert first == "<lora:zhongli:0.8>"  # the file name as the WebUI lists the LoRA
    assert "Model: anything-v5" in rest[-1]
