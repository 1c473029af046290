"""One checkpoint-family reader (vidstyle.sd_architectures) for the trainer, the diffusers backend
and the epoch preview: SD1.x, SD2 and SDXL told apart by the text encoders' tensor names, as
kohya sd-scripts and diffusers' single-file loader name them."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import train_helpers as th  # tests/train_helpers.py

from trainer.config_schema import get_family
from trainer.run import resolve_model
from vidstyle.backends.diffusers import ModelSource, pipeline_family
from vidstyle.epoch_preview import EpochLora, check_families
from vidstyle.epoch_preview import checkpoint_family as preview_family
from vidstyle.errors import MediaError, ModelNotFoundError, SpecError, UserInputError
from vidstyle.sd_architectures import checkpoint_family, family_from_keys
from vidstyle.spec import load_spec

UNET = "model.diffusion_model.input_blocks.0.0.weight"
VAE = "first_stage_model.decoder.conv_in.weight"
# The text encoders as each family's single file holds them (a few names of each).
SD1_KEYS = (UNET, VAE, "cond_stage_model.transformer.text_model.embeddings.position_ids")
SD2_KEYS = (
    UNET,
    VAE,
    "cond_stage_model.model.ln_final.weight",
    "cond_stage_model.model.transformer.resblocks.0.attn.in_proj_weight",
)
SDXL_KEYS = (
    UNET,
    VAE,
    "conditioner.embedders.0.transformer.text_model.embeddings.position_ids",  # CLIP ViT-L, as in SD1
    "conditioner.embedders.1.model.ln_final.weight",  # OpenCLIP bigG, as SD2's encoder is named
    "conditioner.embedders.1.model.transformer.resblocks.0.attn.in_proj_weight",
)


@pytest.mark.parametrize(
    ("keys", "family"),
    [
        (SD1_KEYS, "sd15"),
        (SD2_KEYS, "sd2"),
        (SDXL_KEYS, "sdxl"),
        (tuple(reversed(SDXL_KEYS)), "sdxl"),  # order of names in the header does not matter
        ((UNET, VAE), None),  # a UNet + VAE without text encoder says nothing of the family
        (("lora_unet_down_blocks_0_attentions_0_proj_in.lora_down.weight",), None),  # a LoRA, not a checkpoint
        ((), None),
    ],
)
def test_family_from_tensor_names(keys: tuple[str, ...], family: str | None, tmp_path: Path) -> None:
    assert family_from_keys(keys) == family
    path = th.write_safetensors_header(tmp_path / "model.safetensors", keys)
    assert checkpoint_family(path) == family


def write_folder(folder: Path, class_name: str, cross_attention_dim: int | None = None, **extra: object) -> Path:
    (folder / "unet").mkdir(parents=True)
    (folder / "model_index.json").write_text(json.dumps({"_class_name": class_name, **extra}))
    if cross_attention_dim is not None:
        (folder / "unet" / "config.json").write_text(json.dumps({"cross_attention_dim": cross_attention_dim}))
    return folder


def test_family_of_diffusers_folders(tmp_path: Path) -> None:
    assert checkpoint_family(write_folder(tmp_path / "sd1", "StableDiffusionPipeline", 768)) == "sd15"
    assert checkpoint_family(write_folder(tmp_path / "sd2", "StableDiffusionPipeline", 1024)) == "sd2"
    assert checkpoint_family(write_folder(tmp_path / "xl", "StableDiffusionXLPipeline", 2048)) == "sdxl"
    renamed = write_folder(
        tmp_path / "xl2", "MyPipeline", text_encoder_2=["transformers", "CLIPTextModelWithProjection"]
    )
    assert checkpoint_family(renamed) == "sdxl"
    assert checkpoint_family(write_folder(tmp_path / "flux", "FluxPipeline")) is None
    assert checkpoint_family(tmp_path / "empty_folder_is_no_model") is None


def test_other_files_are_not_guessed_and_damaged_ones_say_so(tmp_path: Path) -> None:
    ckpt = tmp_path / "model.ckpt"
    ckpt.write_bytes(b"pickle")
    assert checkpoint_family(ckpt) is None
    damaged = tmp_path / "cut.safetensors"
    damaged.write_bytes(b"\x01")
    with pytest.raises(MediaError, match="too short"):
        checkpoint_family(damaged)
    with pytest.raises(ModelNotFoundError, match="too short"):  # the backend's error type for a bad checkpoint
        pipeline_family(ModelSource("file", damaged, "cut"))


def test_the_diffusers_backend_runs_sd2_with_the_sd15_pipeline_classes(tmp_path: Path) -> None:
    for keys, pipeline in ((SD1_KEYS, "sd15"), (SD2_KEYS, "sd15"), (SDXL_KEYS, "sdxl"), ((UNET,), "sd15")):
        path = th.write_safetensors_header(tmp_path / f"{len(keys)}-{pipeline}.safetensors", keys)
        assert pipeline_family(ModelSource("file", path, path.name)) == pipeline


def test_trainer_refuses_an_sd2_checkpoint_for_an_sd15_preset(tmp_path: Path) -> None:
    sd2 = th.write_safetensors_header(tmp_path / "sd2.safetensors", SD2_KEYS)
    with pytest.raises(SpecError, match="looks like an SD2 checkpoint"):
        resolve_model(str(sd2), get_family("sd15"))
    sd1 = th.write_safetensors_header(tmp_path / "sd1.safetensors", SD1_KEYS)
    assert resolve_model(str(sd1), get_family("sd15")) == str(sd1.resolve())


def test_epoch_preview_matches_an_sd2_lora_with_an_sd2_checkpoint(tmp_path: Path) -> None:
    sd2 = th.write_safetensors_header(tmp_path / "sd2.safetensors", SD2_KEYS)
    spec = load_spec("anime-canny-sd15", {"backend.kind": "diffusers", "model.checkpoint": str(sd2)})
    family = preview_family(spec)
    assert family == "sd2"
    lora = tmp_path / "lora.safetensors"
    check_families([EpochLora(1, lora, family="sd2")], family, str(sd2))  # was refused as "SD1.5"
    with pytest.raises(UserInputError, match="trained for SD1.5 but the checkpoint .* is SD2"):
        check_families([EpochLora(1, lora, family="sd15")], family, str(sd2))
