"""vidstyle.overrides: `--set` splitting and values, TOML reading and validation sentences (both CLIs)."""

from __future__ import annotations

from pathlib import Path

import pytest

from vidstyle.compat import BaseModel, Extra, ValidationError
from vidstyle.errors import SpecError, UserInputError
from vidstyle.overrides import describe_validation_error, parse_value, read_toml, split_assignment, suggest


def test_split_assignment() -> None:
    assert split_assignment(" sampling.steps = 30 ") == ("sampling.steps", "30")
    assert split_assignment("prompt=a=b") == ("prompt", "a=b")
    for bad in ("novalue", "=3", "  =3"):
        with pytest.raises(SpecError, match=r"^--set takes KEY=VALUE, got '.*'\.$"):
            split_assignment(bad)


def test_parse_value_reads_toml_literals() -> None:
    for strict in (False, True):
        assert parse_value("1e-4", strict) == 1e-4 and parse_value("true", strict) is True
        assert parse_value("[1, 2]", strict) == [1, 2] and parse_value("'quoted'", strict) == "quoted"
        assert parse_value("AdamW8bit", strict) == "AdamW8bit" and parse_value("", strict) == ""


def test_parse_value_strict_refuses_half_values() -> None:
    assert parse_value("{broken") == "{broken"  # vidstyle: anything else is a plain string
    with pytest.raises(UserInputError, match="quote strings"):
        parse_value("{broken", strict=True)  # trainer: a typo'd TOML value is not silently a string


def test_read_toml_errors_are_one_sentence(tmp_path: Path) -> None:
    good = tmp_path / "a.toml"
    good.write_text("[x]\ny = 1\n")
    assert read_toml(good, "preset") == {"x": {"y": 1}}
    bad = tmp_path / "b.toml"
    bad.write_text("x = [\n")
    with pytest.raises(SpecError, match=r"^Preset .*b\.toml is not valid TOML: "):
        read_toml(bad, "preset")
    with pytest.raises(UserInputError, match=r"^Cannot read job file .*c\.toml: No such file"):
        read_toml(tmp_path / "c.toml", "job file")
    with pytest.raises(UserInputError, match=r"^Training config .*c\.toml does not exist; run it first\.$"):
        read_toml(tmp_path / "c.toml", "training config", missing="run it first")


class _Item(BaseModel):
    weight: float

    class Config:
        extra = Extra.forbid


class _Doc(BaseModel):
    name: str
    items: list[_Item] = []

    class Config:
        extra = Extra.forbid


def _error(data: dict) -> ValidationError:
    with pytest.raises(ValidationError) as info:
        _Doc.parse_obj(data)
    return info.value


def test_validation_sentences() -> None:
    bad_value = _error({"name": "x", "items": [{"weight": 1}, {"weight": "heavy"}]})
    assert (
        describe_validation_error(bad_value, "job")
        == "job: invalid value for 'items[1].weight': value is not a valid float."
    )
    # a misspelled required key is both missing and unknown: the unknown one is named
    typo = _error({"nmae": "x"})
    assert describe_validation_error(typo, "job") == "job: unknown setting 'nmae' (check its spelling and section)."
    assert describe_validation_error(typo, "job", lambda key, loc: f"'{key}'{suggest(key, ['name'])} is unknown.") == (
        "job: 'nmae' (did you mean 'name'?) is unknown."
    )
    assert suggest("zzz", ["name"]) == ""
