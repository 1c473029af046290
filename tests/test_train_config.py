"""kohya sd-scripts configs: the models against sd-scripts' documented schema, cross-checks,
TOML round trips, presets, overrides, sample prompts and the `config` command."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest
import train_helpers as th  # tests/train_helpers.py

from trainer import commands
from trainer.config import (
    dumps_toml,
    flatten_sections,
    load_dataset_config,
    load_train_args,
    train_args_to_toml_dict,
    write_dataset_config,
    write_train_args,
)
from trainer.config_checks import check_run
from trainer.config_errors import parse_dataset_config, parse_train_args
from trainer.config_schema import FAMILIES, LEVEL_KEYS
from trainer.presets import PRESET_DIR, apply_override, list_presets, load_stack
from trainer.run import (
    build_sample_prompts,
    inspect_dataset,
    load_run,
    parse_prompt_line,
    plan_run,
    read_sample_prompts,
)
from vidstyle.compat import tomllib
from vidstyle.errors import ModelNotFoundError, SpecError, UserInputError

# One valid value per dataset-config key (types as sd-scripts' ConfigSanitizer wants them).
VALID: dict[str, Any] = {
    "num_repeats": 3, "shuffle_caption": True, "keep_tokens": 1, "keep_tokens_separator": "|||",
    "secondary_separator": ";;;", "caption_separator": ",", "enable_wildcard": False, "color_aug": False,
    "flip_aug": True, "random_crop": False, "face_crop_aug_range": [2.0, 4.0], "token_warmup_min": 1,
    "token_warmup_step": 0.5, "caption_prefix": "masterpiece, ", "caption_suffix": ", best quality",
    "caption_dropout_rate": 0.1, "caption_dropout_every_n_epochs": 2, "caption_tag_dropout_rate": 0.05,
    "caption_extension": ".txt", "class_tokens": "mikuchan", "cache_info": True, "custom_attributes": {"x": 1},
    "resize_interpolation": "lanczos", "resolution": [512, 768], "batch_size": 2, "enable_bucket": True,
    "min_bucket_reso": 256, "max_bucket_reso": 1024, "bucket_reso_steps": 64, "bucket_no_upscale": True,
    "network_multiplier": 1.0, "validation_split": 0.1, "validation_seed": 7, "is_reg": False, "alpha_mask": False,
}  # fmt: skip
ALL_KEYS = sorted(set().union(*LEVEL_KEYS.values()) - {"image_dir"})


def dataset_with(level: str, key: str, value: Any) -> dict[str, Any]:
    data: dict[str, Any] = {"general": {}, "datasets": [{"subsets": [{"image_dir": "/data/img"}]}]}
    target = {
        "general": data["general"],
        "datasets": data["datasets"][0],
        "subsets": data["datasets"][0]["subsets"][0],
    }[level]
    target[key] = value
    return data


def train_args(**changes: Any) -> dict[str, Any]:
    base = dict(
        pretrained_model_name_or_path="/models/base.safetensors", network_dim=16, network_alpha=8.0, learning_rate=1e-4,
        dataset_config="/run/dataset.toml", output_dir="/run/output", output_name="lora", max_train_epochs=4,
        save_every_n_epochs=1,
    )  # fmt: skip
    base.update(changes)
    return base


def test_valid_value_table_covers_every_key() -> None:
    assert set(ALL_KEYS) <= set(VALID), "every dataset key needs a sample value in VALID"


@pytest.mark.parametrize("key", ALL_KEYS)
@pytest.mark.parametrize("level", ["general", "datasets", "subsets"])
def test_dataset_keys_only_at_their_levels(level: str, key: str) -> None:
    data = dataset_with(level, key, VALID[key])
    if key in LEVEL_KEYS[level]:
        config = parse_dataset_config(data)
        written = config.to_toml_dict()
        node = {
            "general": written.get("general", {}),
            "datasets": written["datasets"][0],
            "subsets": written["datasets"][0]["subsets"][0],
        }[level]
        assert node[key] == VALID[key]
    else:
        with pytest.raises(SpecError) as err:
            parse_dataset_config(data)
        message = str(err.value)
        assert f"'{key}'" in message
        assert "not allowed in" in message and "accepts it only in" in message


def test_levels_match_sd_scripts_schema() -> None:
    # from library/config_util.py ConfigSanitizer (DreamBooth style, dropout supported)
    dataset_only = {
        "resolution",
        "batch_size",
        "enable_bucket",
        "min_bucket_reso",
        "max_bucket_reso",
        "bucket_reso_steps",
        "bucket_no_upscale",
        "network_multiplier",
        "validation_split",
        "validation_seed",
    }
    subset_only = {"image_dir", "is_reg", "alpha_mask"}
    assert dataset_only <= LEVEL_KEYS["general"] and dataset_only <= LEVEL_KEYS["datasets"]
    assert not dataset_only & LEVEL_KEYS["subsets"]
    assert subset_only <= LEVEL_KEYS["subsets"] and not subset_only & (LEVEL_KEYS["general"] | LEVEL_KEYS["datasets"])
    assert "resize_interpolation" in LEVEL_KEYS["general"] & LEVEL_KEYS["datasets"] & LEVEL_KEYS["subsets"]


def test_unknown_dataset_key_is_named_with_a_suggestion() -> None:
    with pytest.raises(SpecError, match=r"unknown setting 'shuffle_captions'.*did you mean 'shuffle_caption'"):
        parse_dataset_config(dataset_with("subsets", "shuffle_captions", True))


def test_training_key_in_dataset_config_is_pointed_to_the_other_file() -> None:
    with pytest.raises(SpecError, match="'learning_rate' is a training setting"):
        parse_dataset_config(dataset_with("general", "learning_rate", 1e-4))


@pytest.mark.parametrize(
    "key, value, fragment",
    [
        ("num_repeats", 0, "num_repeats"),
        ("shuffle_caption", "yes", "'shuffle_caption' must be true or false"),
        ("keep_tokens", 1.5, "'keep_tokens' must be a whole number"),
        ("caption_extension", "txt", "must start with a dot"),
        ("caption_dropout_rate", 1.5, "caption_dropout_rate"),
        ("face_crop_aug_range", [4.0, 2.0], "lower bound"),
        ("resize_interpolation", "fancy", "not one of"),
    ],
)
def test_bad_dataset_values_name_the_key(key: str, value: Any, fragment: str) -> None:
    with pytest.raises(SpecError, match=re.escape(fragment)):
        parse_dataset_config(dataset_with("subsets", key, value))


@pytest.mark.parametrize("value", [512, [512, 768]])
def test_resolution_accepts_int_or_pair(value: Any) -> None:
    assert parse_dataset_config(dataset_with("general", "resolution", value)).general.resolution in (512, (512, 768))


@pytest.mark.parametrize("value", [[512], [512, 512, 512], "512", 32, [512, 7.5]])
def test_resolution_rejects_other_shapes(value: Any) -> None:
    with pytest.raises(SpecError, match="resolution"):
        parse_dataset_config(dataset_with("general", "resolution", value))


def test_subset_needs_image_dir() -> None:
    with pytest.raises(SpecError, match="image_dir"):
        parse_dataset_config({"datasets": [{"subsets": [{"num_repeats": 2}]}]})


# --------------------------------------------------------------------------- training config


def test_unknown_training_key_is_rejected_with_suggestion() -> None:
    with pytest.raises(SpecError, match=r"unknown setting 'netwrok_dim'.*'network_dim'.*silently ignore"):
        parse_train_args(train_args(netwrok_dim=32))


@pytest.mark.parametrize(
    "key, hint",
    [
        ("resolution", "dataset setting"),
        ("train_batch_size", "batch_size in the dataset config"),
        ("caption_extention", "caption_extension"),
    ],
)
def test_dataset_keys_in_training_config_point_to_the_right_place(key: str, hint: str) -> None:
    with pytest.raises(SpecError, match=hint):
        parse_train_args(train_args(**{key: 512 if key != "caption_extention" else ".txt"}))


@pytest.mark.parametrize(
    "change, fragment",
    [
        ({"optimizer_type": "AdamW9bit"}, "did you mean 'AdamW8bit'"),
        ({"lr_scheduler": "cosine_restarts"}, "not a scheduler"),
        ({"lr_scheduler": "adafactor:x"}, "adafactor:<initial learning rate>"),
        ({"mixed_precision": "fp32"}, "mixed_precision"),
        ({"max_token_length": 100}, "150 or 225"),
        ({"network_dim": 3.7}, "'network_dim' must be a whole number"),
        ({"network_dim": "32"}, "'network_dim' must be a whole number"),
        ({"gradient_checkpointing": 1}, "'gradient_checkpointing' must be true or false"),
        ({"learning_rate": -1e-4}, "learning_rate"),
        ({"lr_warmup_steps": 1.5}, "fraction"),
        ({"network_args": ["conv_dim"]}, "key=value"),
        ({"save_model_as": "ckpt"}, "safetensors"),
        ({"sample_sampler": "euler a"}, "sample_sampler"),
    ],
)
def test_bad_training_values_are_rejected(change: dict[str, Any], fragment: str) -> None:
    with pytest.raises(SpecError, match=re.escape(fragment)):
        parse_train_args(train_args(**change))


def test_known_optimizers_schedulers_and_module_paths_pass() -> None:
    for optimizer in ("AdamW8bit", "adamw8bit", "Prodigy", "Adafactor", "bitsandbytes.optim.AdEMAMix8bit"):
        assert parse_train_args(train_args(optimizer_type=optimizer)).optimizer_type == optimizer
    assert (
        parse_train_args(train_args(lr_scheduler="adafactor:1e-4", optimizer_type="Adafactor")).lr_scheduler
        == "adafactor:1e-4"
    )


def test_warmup_fraction_stays_a_float() -> None:
    assert parse_train_args(train_args(lr_warmup_steps=0.05)).lr_warmup_steps == 0.05
    assert parse_train_args(train_args(lr_warmup_steps=100)).lr_warmup_steps == 100


# --------------------------------------------------------------------------- cross checks


def run_check(family: str = "sd15", dataset: Any = None, **train: Any) -> list:
    ds = parse_dataset_config(
        dataset
        or {
            "general": {"resolution": FAMILIES[family].default_resolution},
            "datasets": [{"subsets": [{"image_dir": "/d"}]}],
        }
    )
    return check_run(FAMILIES[family], ds, parse_train_args(train_args(**train)))


def test_text_encoder_caching_needs_unet_only_training() -> None:
    with pytest.raises(SpecError, match="network_train_unet_only"):
        run_check("sdxl", cache_text_encoder_outputs=True)
    assert run_check("sdxl", cache_text_encoder_outputs=True, network_train_unet_only=True) == []


def test_text_encoder_caching_is_sdxl_only() -> None:
    with pytest.raises(SpecError, match="only in sdxl_train_network.py"):
        run_check("sd15", cache_text_encoder_outputs=True, network_train_unet_only=True)


def test_text_encoder_caching_forbids_caption_randomness() -> None:
    ds = {"general": {"shuffle_caption": True, "resolution": 1024}, "datasets": [{"subsets": [{"image_dir": "/d"}]}]}
    with pytest.raises(SpecError, match="shuffle_caption"):
        run_check("sdxl", ds, cache_text_encoder_outputs=True, network_train_unet_only=True)


def test_latent_caching_forbids_color_aug() -> None:
    ds = {"datasets": [{"subsets": [{"image_dir": "/d", "color_aug": True}]}]}
    with pytest.raises(SpecError, match="color_aug"):
        run_check("sd15", ds, cache_latents=True)


@pytest.mark.parametrize(
    "family, steps, ok", [("sd15", 64, True), ("sd15", 32, False), ("sdxl", 32, True), ("sdxl", 48, False)]
)
def test_bucket_steps_per_family(family: str, steps: int, ok: bool) -> None:
    res = FAMILIES[family].default_resolution
    ds = {"general": {"bucket_reso_steps": steps, "resolution": res}, "datasets": [{"subsets": [{"image_dir": "/d"}]}]}
    if ok:
        run_check(family, ds)
    else:
        with pytest.raises(SpecError, match=f"divisible by {FAMILIES[family].bucket_step}"):
            run_check(family, ds)


@pytest.mark.parametrize(
    "family, resolution, ok", [("sd15", 512, True), ("sd15", 544, False), ("sdxl", 1056, True), ("sdxl", 1000, False)]
)
def test_resolution_multiple_per_family(family: str, resolution: int, ok: bool) -> None:
    ds = {
        "general": {
            "resolution": resolution,
            "bucket_reso_steps": 64 if family == "sd15" else 32,
            "enable_bucket": True,
            "max_bucket_reso": 2048,
        },
        "datasets": [{"subsets": [{"image_dir": "/d"}]}],
    }
    if ok:
        run_check(family, ds)
    else:
        with pytest.raises(SpecError, match="resolution"):
            run_check(family, ds)


def test_bucket_bounds_must_hold_the_resolution() -> None:
    ds = {
        "general": {"resolution": 1024, "enable_bucket": True, "max_bucket_reso": 768},
        "datasets": [{"subsets": [{"image_dir": "/d"}]}],
    }
    with pytest.raises(SpecError, match="max_bucket_reso 768"):
        run_check("sdxl", ds)


def test_alpha_above_dim_warns() -> None:
    warnings = run_check(network_dim=8, network_alpha=16.0)
    assert any("network_alpha 16 is above network_dim 8" in w for w in warnings)


def test_learning_rate_in_nan_range_warns_and_absurd_rate_fails() -> None:
    assert any("unet_lr 0.002" in w and "NaN" in w for w in run_check(unet_lr=2e-3))
    assert run_check(unet_lr=1e-4) == []
    with pytest.raises(SpecError, match="learning_rate 0.1"):
        run_check(learning_rate=0.1)


def test_adaptive_optimizers_expect_rates_near_one() -> None:
    assert run_check(optimizer_type="Prodigy", learning_rate=1.0) == []
    assert any("expects learning_rate near 1.0" in w for w in run_check(optimizer_type="Prodigy", learning_rate=1e-4))


def test_constant_scheduler_refuses_warmup() -> None:
    with pytest.raises(SpecError, match="constant_with_warmup"):
        run_check(lr_scheduler="constant", lr_warmup_steps=10)


def test_sdxl_fp16_without_fp32_vae_warns() -> None:
    assert any("no_half_vae" in w for w in run_check("sdxl", mixed_precision="fp16"))
    assert run_check("sdxl", mixed_precision="fp16", no_half_vae=True) == []


def test_sdxl_refuses_clip_skip() -> None:
    with pytest.raises(SpecError, match="clip_skip"):
        run_check("sdxl", clip_skip=2)


def test_missing_epoch_saves_warns() -> None:
    assert any("save_every_n_epochs" in w for w in run_check(save_every_n_epochs=None))


# --------------------------------------------------------------------------- TOML


def test_toml_round_trip_of_both_files(tmp_path: Path) -> None:
    dataset = parse_dataset_config({
        "general": {"resolution": [512, 768], "shuffle_caption": True, "keep_tokens": 1, "caption_extension": ".txt",
                    "face_crop_aug_range": [2.0, 4.0]},
        "datasets": [{"batch_size": 2, "subsets": [{"image_dir": "/d/10_x", "num_repeats": 10}]},
                     {"validation_split": 1.0, "subsets": [{"image_dir": "/d/val", "num_repeats": 1}]}],
    })  # fmt: skip
    train = parse_train_args(
        train_args(lr_warmup_steps=0.05, text_encoder_lr=5e-5, network_args=["conv_dim=4", "conv_alpha=1"])
    )
    write_dataset_config(tmp_path / "dataset.toml", dataset, header="a header\nsecond line")
    write_train_args(tmp_path / "config.toml", train)
    assert load_dataset_config(tmp_path / "dataset.toml") == dataset
    assert load_train_args(tmp_path / "config.toml") == train
    text = (tmp_path / "dataset.toml").read_text()
    assert text.startswith("# a header\n# second line\n")
    raw = tomllib.loads((tmp_path / "config.toml").read_text())
    assert set(raw) <= {"model", "network", "optimizer", "training", "saving", "sample", "validation", "logging"}
    assert isinstance(raw["optimizer"]["lr_warmup_steps"], float) and isinstance(raw["network"]["network_alpha"], float)
    assert isinstance(tomllib.loads(text)["datasets"][1]["validation_split"], float)  # voluptuous wants a float


def test_flatten_refuses_a_key_set_twice() -> None:
    with pytest.raises(SpecError, match="'network_dim' is set twice"):
        flatten_sections({"network": {"network_dim": 8}, "other": {"network_dim": 16}}, "config.toml")


def test_every_training_key_is_written_to_one_section() -> None:
    full = parse_train_args(
        train_args(v2=False, clip_skip=2, sample_prompts="/p.txt", logging_dir="/l", validate_every_n_epochs=1)
    )
    sections = train_args_to_toml_dict(full)
    written = [k for section in sections.values() for k in section]
    assert sorted(written) == sorted(full.to_toml_dict())


def test_dumps_toml_has_header() -> None:
    assert dumps_toml({"a": 1}, "x").startswith("# x\n")


# --------------------------------------------------------------------------- presets


BASES = [p for p in list_presets() if not p.startswith("gpu-")]
OVERLAYS = [None, "8gb", "12gb", "24gb"]


def test_preset_set_is_complete() -> None:
    assert set(list_presets()) == {
        "sd15-character",
        "sd15-style",
        "sdxl-style-r4",
        "sdxl-style-r8",
        "sdxl-style-r16",
        "gpu-8gb",
        "gpu-12gb",
        "gpu-24gb",
    }


@pytest.mark.parametrize("name", sorted(p.stem for p in PRESET_DIR.glob("*.toml")))
def test_every_preset_value_is_commented(name: str) -> None:
    lines = (PRESET_DIR / f"{name}.toml").read_text(encoding="utf-8").splitlines()
    section = ""
    for line in lines:
        if line.startswith("["):
            section = line.split("]")[0].strip("[")
            continue
        if section.split(".")[-1] in ("dataset", "train", "subset", "install") and re.match(r"^\w+ = ", line):
            assert "#" in line, f"{name}: '{line}' needs a comment saying why"


@pytest.fixture(scope="module")
def prepared(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("presets")
    return {
        "dataset": th.make_dataset(root / "ds"),
        "sd15": th.make_checkpoint(root, "sd15"),
        "sdxl": th.make_checkpoint(root, "sdxl"),
        "root": root,
    }


@pytest.mark.parametrize("gpu", OVERLAYS)
@pytest.mark.parametrize("base", BASES)
def test_all_preset_combinations_are_valid(prepared: dict[str, Path], base: str, gpu: str) -> None:
    stack = load_stack([base], gpu)
    model = prepared["sdxl" if stack.family == "sdxl" else "sd15"]
    out = prepared["root"] / f"run-{base}-{gpu}"
    plan = plan_run(stack, prepared["dataset"], str(model), out)
    assert plan.family.name == ("sdxl" if base.startswith("sdxl") else "sd15")
    assert plan.validation == "heldout"
    assert not [w for w in plan.warnings if "NaN" in w or "alpha" in w], plan.warnings
    train = plan.train
    assert train.max_train_epochs and train.save_every_n_epochs == 1 and train.sample_every_n_epochs == 1
    assert train.save_state and train.console_log_simple and train.log_with == "tensorboard"
    assert plan.dataset.general.caption_extension == ".txt"  # sd-scripts' default would be .caption


def test_overlay_family_tables_apply_only_to_their_family() -> None:
    sdxl = load_stack(["sdxl-style-r8"], "8gb")
    sd15 = load_stack(["sd15-character"], "8gb")
    assert sdxl.table("train")["fp8_base"] is True and "fp8_base" not in sd15.table("train")
    assert sd15.table("dataset")["batch_size"] == 1 and sd15.table("train")["gradient_checkpointing"] is True


def test_preset_layering_rules() -> None:
    with pytest.raises(UserInputError, match="first preset must be a base"):
        load_stack(["gpu-8gb", "sd15-character"])
    with pytest.raises(UserInputError, match="Only one base preset"):
        load_stack(["sd15-character", "sd15-style"])
    with pytest.raises(UserInputError, match="Unknown training preset 'sd15-charcter'"):
        load_stack(["sd15-charcter"])
    assert load_stack(["sd15-character", "gpu-24gb"]).names == load_stack(["sd15-character"], "24gb").names


def test_overrides_reach_their_tables(prepared: dict[str, Path]) -> None:
    stack = load_stack(["sd15-character"])
    for key, value in (
        ("network_dim", 16),
        ("network_alpha", 8.0),
        ("dataset.batch_size", 3),
        ("subset.num_repeats", 7),
        ("samples.steps", 20),
    ):
        apply_override(stack, key, value)
    plan = plan_run(stack, prepared["dataset"], str(prepared["sd15"]), prepared["root"] / "ovr")
    assert plan.train.network_dim == 16 and plan.dataset.general.batch_size == 3
    assert plan.dataset.datasets[0].subsets[0].num_repeats == 7  # beats the folder's N
    assert all(p.steps == 20 for p in plan.prompts)
    with pytest.raises(UserInputError, match="Unknown setting 'foo.bar'"):
        apply_override(stack, "foo.bar", 1)


def test_dataset_key_as_plain_override_is_explained(prepared: dict[str, Path]) -> None:
    stack = load_stack(["sd15-character"])
    apply_override(stack, "resolution", 768)
    with pytest.raises(SpecError, match=r"--set dataset.resolution"):
        plan_run(stack, prepared["dataset"], str(prepared["sd15"]), prepared["root"] / "bad")


def test_run_folder_paths_cannot_be_overridden(prepared: dict[str, Path]) -> None:
    stack = load_stack(["sd15-character"])
    apply_override(stack, "output_dir", "/elsewhere")
    with pytest.raises(UserInputError, match="'output_dir' is set by `trainer config`"):
        plan_run(stack, prepared["dataset"], str(prepared["sd15"]), prepared["root"] / "bad2")


# --------------------------------------------------------------------------- dataset folder and model


def test_trigger_and_repeats_come_from_prep_json_or_folder(tmp_path: Path) -> None:
    with_prep = th.make_dataset(tmp_path / "a", name="folder_name", prep={"dataset": {"trigger": "sks_girl"}})
    assert inspect_dataset(with_prep).trigger == "sks_girl"
    no_prep = th.make_dataset(tmp_path / "b", name="kohya_chan", repeats=12, prep=False)
    info = inspect_dataset(no_prep)
    assert info.trigger == "kohya_chan" and info.concepts[0].repeats == 12 and info.val_images == 2
    broken = th.make_dataset(tmp_path / "c", name="x")
    (broken / "prep.json").write_text("{not json")
    assert inspect_dataset(broken).trigger == "x"
    options_only = th.make_dataset(tmp_path / "d", name="y", prep={"options": {"name": "y", "trigger": "ytrig"}})
    assert inspect_dataset(options_only).trigger == "ytrig"


def test_dataset_without_kohya_folder_is_refused(tmp_path: Path) -> None:
    (tmp_path / "img" / "no_repeats").mkdir(parents=True)
    with pytest.raises(UserInputError, match="10_name"):
        inspect_dataset(tmp_path)


def test_checkpoint_of_the_wrong_family_is_refused(prepared: dict[str, Path]) -> None:
    with pytest.raises(SpecError, match="looks like an SDXL checkpoint"):
        plan_run(load_stack(["sd15-character"]), prepared["dataset"], str(prepared["sdxl"]), prepared["root"] / "wrong")


def test_missing_checkpoint_and_hub_ids(prepared: dict[str, Path]) -> None:
    stack = load_stack(["sd15-character"])
    with pytest.raises(ModelNotFoundError, match="does not exist"):
        plan_run(stack, prepared["dataset"], str(prepared["root"] / "nope.safetensors"), prepared["root"] / "m")
    plan = plan_run(stack, prepared["dataset"], "stabilityai/stable-diffusion-xl-base-1.0", prepared["root"] / "hub")
    assert plan.train.pretrained_model_name_or_path == "stabilityai/stable-diffusion-xl-base-1.0"


def test_prepared_size_below_training_size_warns(tmp_path: Path) -> None:
    ds = th.make_dataset(tmp_path / "ds", prep={"dataset": {"trigger": "mikuchan", "resolution": 512}})
    plan = plan_run(load_stack(["sdxl-style-r8"]), ds, str(th.make_checkpoint(tmp_path, "sdxl")), tmp_path / "run")
    assert any("prepared at 512 px" in w for w in plan.warnings)


def test_validation_modes(prepared: dict[str, Path], tmp_path: Path) -> None:
    stack = load_stack(["sd15-character"])
    held = plan_run(stack, prepared["dataset"], str(prepared["sd15"]), tmp_path / "h", validation="heldout")
    assert [d.validation_split for d in held.dataset.datasets] == [None, 1.0]
    val_subset = held.dataset.datasets[1].subsets[0]
    assert val_subset.image_dir.endswith("val") and val_subset.num_repeats == 1 and val_subset.shuffle_caption is False
    split = plan_run(
        stack, prepared["dataset"], str(prepared["sd15"]), tmp_path / "s", validation="split", validation_split=0.25
    )
    assert len(split.dataset.datasets) == 1 and split.dataset.datasets[0].validation_split == 0.25
    assert not [w for w in split.warnings if "split" in w]  # 4 images: 3 train + 1 validation
    overlap = plan_run(
        stack, prepared["dataset"], str(prepared["sd15"]), tmp_path / "s2", validation="split", validation_split=0.2
    )
    assert any("also trains on the validation images" in w for w in overlap.warnings)  # ceil(3.2) + round(0.8) = 5 > 4
    empty = plan_run(
        stack, prepared["dataset"], str(prepared["sd15"]), tmp_path / "s3", validation="split", validation_split=0.1
    )
    assert any("no validation image" in w for w in empty.warnings)
    off = plan_run(stack, prepared["dataset"], str(prepared["sd15"]), tmp_path / "o", validation="off")
    assert len(off.dataset.datasets) == 1 and off.dataset.datasets[0].validation_split is None
    no_val = th.make_dataset(tmp_path / "nv", val=0)
    with pytest.raises(UserInputError, match="no val/ folder"):
        plan_run(stack, no_val, str(prepared["sd15"]), tmp_path / "nvr", validation="heldout")
    assert plan_run(stack, no_val, str(prepared["sd15"]), tmp_path / "nva").validation == "off"


# --------------------------------------------------------------------------- sample prompts


def test_sample_prompts_fixed_seeds_trigger_and_heldout(prepared: dict[str, Path]) -> None:
    stack = load_stack(["sd15-character"])
    plan = plan_run(stack, prepared["dataset"], str(prepared["sd15"]), prepared["root"] / "sp")
    prompts = plan.prompts
    assert len(prompts) == 3 + 2
    assert all(p.prompt.startswith("mikuchan") for p in prompts)
    assert [p.seed for p in prompts] == list(range(1234, 1239))
    held = [p for p in prompts if p.source == "heldout"]
    assert len(held) == 2 and all(" --" not in p.prompt for p in held)  # " --oops" would start an sd-scripts option
    parsed = parse_prompt_line(prompts[0].line())
    assert parsed["prompt"] == prompts[0].prompt and parsed["seed"] == 1234 and parsed["width"] == 512
    assert parsed["steps"] == 28 and parsed["scale"] == 7.0 and parsed["negative"].startswith("lowres")


def test_heldout_caption_without_trigger_gets_it(tmp_path: Path) -> None:
    ds = th.make_dataset(tmp_path / "ds", name="zed")
    (ds / "val" / "val_00.txt").write_text("1girl, standing")
    info = inspect_dataset(ds)
    from trainer.run import SamplesSpec

    prompts = build_sample_prompts(SamplesSpec(prompts=["{trigger}"], heldout=1), FAMILIES["sd15"], info)
    assert prompts[1].prompt == "zed, 1girl, standing"


# --------------------------------------------------------------------------- the command


def test_config_command_writes_the_run_folder(
    prepared: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "run"
    argv = th.config_argv(
        prepared["dataset"],
        prepared["sd15"],
        out,
        "sd15-character",
        extra=[
            "--gpu",
            "12gb",
            "--set",
            "network_dim=16",
            "--set",
            "network_alpha=8",
            "--sd-scripts",
            str(th.SD_SCRIPTS_DOUBLE),
        ],
    )
    assert commands.main(argv) == 0
    for name in ("dataset.toml", "config.toml", "sample_prompts.txt", "command.txt", "run.json"):
        assert (out / name).is_file()
    run = load_run(out)
    assert run.train.network_dim == 16 and run.train.network_alpha == 8.0
    assert run.train.mixed_precision == "bf16" and run.dataset.general.batch_size == 2  # gpu-12gb
    command = (out / "command.txt").read_text()
    assert "launch --num_cpu_threads_per_process 1 --mixed_precision bf16 --num_processes 1" in command
    assert f"{th.SD_SCRIPTS_DOUBLE / 'train_network.py'} --config_file {out.resolve() / 'config.toml'}" in command
    meta = json.loads((out / "run.json").read_text())
    assert (
        meta["family"] == "sd15" and meta["trigger"] == "mikuchan" and meta["presets"] == ["sd15-character", "gpu-12gb"]
    )
    assert len(read_sample_prompts(out / "sample_prompts.txt")) == 5
    assert "next: python -m trainer train" in capsys.readouterr().out


def test_config_command_reports_errors_as_one_line(
    prepared: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    argv = th.config_argv(prepared["dataset"], prepared["sd15"], tmp_path / "r", extra=["--set", "optimizer_typ=AdamW"])
    assert commands.main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "optimizer_typ" in err[0] and "optimizer_type" in err[0]


def test_config_refuses_to_rewrite_a_trained_run(prepared: dict[str, Path], tmp_path: Path) -> None:
    out = tmp_path / "run"
    assert commands.main(th.config_argv(prepared["dataset"], prepared["sd15"], out)) == 0
    (out / "output").mkdir()
    (out / "output" / "mikuchan-000001.safetensors").write_bytes(b"x")
    assert commands.main(th.config_argv(prepared["dataset"], prepared["sd15"], out)) == 2
    assert commands.main(th.config_argv(prepared["dataset"], prepared["sd15"], out, extra=["--force"])) == 0


def test_hand_edited_config_is_validated_again(prepared: dict[str, Path], tmp_path: Path) -> None:
    out = tmp_path / "run"
    assert commands.main(th.config_argv(prepared["dataset"], prepared["sd15"], out)) == 0
    text = (out / "config.toml").read_text().replace("network_dim = 32", "network_dims = 32")
    (out / "config.toml").write_text(text)
    with pytest.raises(SpecError, match="'network_dims'"):
        load_run(out)
    dataset_text = (out / "dataset.toml").read_text().replace("[[datasets]]", "[[datasets]]\nflip_augs = true", 1)
    (out / "config.toml").write_text(text.replace("network_dims", "network_dim"))
    (out / "dataset.toml").write_text(dataset_text)
    with pytest.raises(SpecError, match="'flip_augs'.*did you mean 'flip_aug'"):
        load_run(out)
