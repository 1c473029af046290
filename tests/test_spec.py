from pathlib import Path

import pytest

from vidstyle.errors import SpecError, UserInputError
from vidstyle.spec import JobSpec, field_info, frame_seed, list_presets, load_spec, preset_path


def test_every_shipped_preset_is_valid() -> None:
    names = list_presets()
    assert "anime-canny-sd15" in names
    for name in names:
        spec = load_spec(name)
        assert spec.size.width % 8 == 0


def test_overrides_apply_over_preset() -> None:
    spec = load_spec(
        "anime-canny-sd15", {"sampling.denoise": 0.35, "model.loras": [{"name": "zhongli", "weight": 0.7}]}
    )
    assert spec.sampling.denoise == 0.35
    assert spec.model.loras[0].name == "zhongli"
    assert spec.controlnet.model == "control_v11p_sd15_canny"  # untouched preset value


@pytest.mark.parametrize(
    "overrides, fragment",
    [
        ({"sampling.denoize": 0.5}, "unknown setting 'sampling.denoize'"),
        ({"sampling.denoise": 1.5}, "'sampling.denoise'"),
        ({"size.width": 500}, "multiple of 8"),
        ({"controlnet.guidance_start": 0.8, "controlnet.guidance_end": 0.2}, "guidance_end must be greater"),
        ({"controlnet.blur": 4}, "odd kernel"),
        ({"source.target_fps": 12, "source.every_nth": 2}, "either every_nth or target_fps"),
        ({"backend.webui_auth": "alice:pw"}, "--webui-auth or VIDSTYLE_WEBUI_AUTH"),  # never part of a spec
    ],
)
def test_invalid_values_name_the_key(overrides: dict, fragment: str) -> None:
    with pytest.raises(SpecError) as err:
        load_spec("anime-canny-sd15", overrides)
    assert fragment in str(err.value) and "alice:pw" not in str(err.value)
    assert "\n" not in str(err.value)


def test_unknown_preset_lists_choices() -> None:
    with pytest.raises(UserInputError, match="anime-canny-sd15"):
        preset_path("no-such-preset")


def test_bad_toml_preset(tmp_path: Path) -> None:
    bad = tmp_path / "bad.toml"
    bad.write_text("[sampling\ndenoise = 0.5\n")
    with pytest.raises(SpecError, match="not valid TOML"):
        load_spec(str(bad))


def test_toml_round_trip_and_seed_resolution() -> None:
    spec = load_spec("anime-canny-sd15").resolved()
    assert spec.sampling.seed >= 0
    from vidstyle.compat import tomllib

    again = JobSpec.parse_obj(tomllib.loads(spec.to_toml()))
    assert again == spec


def test_frame_seed_policies() -> None:
    fixed = load_spec(None, {"sampling.seed": 10})
    assert frame_seed(fixed, 0, 0) == frame_seed(fixed, 5, 0) == 10
    assert frame_seed(fixed, 5, 1) != 10
    per_frame = load_spec(None, {"sampling.seed": 10, "sampling.seed_policy": "per_frame"})
    assert [frame_seed(per_frame, i, 0) for i in range(3)] == [10, 11, 12]
    with pytest.raises(SpecError):
        frame_seed(load_spec(None), 0, 0)


def test_field_info_declares_bounds_once() -> None:
    info = field_info("sampling.denoise")
    assert info["ge"] == 0 and info["le"] == 1 and info["default"] == 0.5 and info["help"]
    assert field_info("controlnet.control_mode")["choices"][0] == "Balanced"
