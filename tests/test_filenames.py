"""vidstyle.filenames.safe_name: the one sanitiser, with each caller's parameters."""

from __future__ import annotations

import pytest

from vidstyle.filenames import safe_name


def test_default_rule_keeps_dots_and_trims_separators() -> None:
    assert safe_name("  ../a b/c  ") == "a-b-c"
    assert safe_name("///") == ""
    assert safe_name("clip.v2 (final)") == "clip.v2-final"


@pytest.mark.parametrize("text", ["..", ".hidden", "-rf", "_x_", "a/../../etc"])
def test_never_hidden_dotdot_or_option_like(text: str) -> None:
    name = safe_name(text, fallback="f")
    assert name[0] not in "-_." and name[-1] not in "-_." and "/" not in name


def test_caller_parameters() -> None:
    # job folders (manager): 64 characters at most
    assert len(safe_name("x" * 100, max_len=64)) == 64
    # staged LoRA names (lora_stage): no dots, 40 characters, 'run' when empty
    assert safe_name("my.run v1", keep_dots=False, max_len=40, fallback="run") == "my-run-v1"
    assert safe_name("!!!", keep_dots=False, fallback="run") == "run"
    # LoRA output names (trainer.run): '_' separator, no dots
    assert safe_name("miku chan.v2", sep="_", keep_dots=False, fallback="lora") == "miku_chan_v2"
    # dataset image stems (trainer.dataset): Unicode letters kept, '_' separator
    assert safe_name("café frame#1", sep="_", unicode=True, max_len=60, fallback="image") == "café_frame_1"
    assert safe_name("café", fallback="x") == "caf"
