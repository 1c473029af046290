"""The tiny random-weight SD1.5-shaped model set (vidstyle.tiny_models)."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

torch = pytest.importorskip("torch", reason="the tiny model needs torch")
pytest.importorskip("diffusers", reason="the tiny model needs diffusers")

from safetensors.torch import load_file  # noqa: E402
from tiny_builders import (  # noqa: E402  # tests/tiny_builders.py
    kohya_lora_targets,
    ldm_state_dict,
    make_tiny_kohya_lora,
    tiny_components,
    write_tiny_single_file,
)

from vidstyle import tiny_models  # noqa: E402
from vidstyle.tiny_models import tiny_pipeline_dir  # noqa: E402

WEIGHT_FILES = (
    "unet/diffusion_pytorch_model.safetensors",
    "vae/diffusion_pytorch_model.safetensors",
    "text_encoder/model.safetensors",
    "controlnet/diffusion_pytorch_model.safetensors",
)


def _same_weights(a: Path, b: Path) -> bool:
    for name in WEIGHT_FILES:
        left, right = load_file(str(a / name)), load_file(str(b / name))
        if left.keys() != right.keys() or any(not torch.equal(left[k], right[k]) for k in left):
            return False
    return True


def test_pipeline_folder_layout() -> None:
    folder = tiny_pipeline_dir()
    index = json.loads((folder / "model_index.json").read_text())
    assert index["_class_name"] == "StableDiffusionPipeline"
    for name in WEIGHT_FILES:
        assert (folder / name).is_file(), name
    assert (folder / "tokenizer" / "vocab.json").is_file() and (folder / "tokenizer" / "merges.txt").is_file()
    assert tiny_pipeline_dir() == folder  # cached: built once, then reused


def test_text_encoder_loads_its_saved_weights() -> None:
    """Every weight comes from the file (a layout mismatch would silently re-initialise them randomly)."""
    from transformers import CLIPTextModel

    folder = tiny_pipeline_dir() / "text_encoder"
    first, second = CLIPTextModel.from_pretrained(str(folder)), CLIPTextModel.from_pretrained(str(folder))
    saved = load_file(str(folder / "model.safetensors"))
    assert all(key.startswith("text_model.") for key in saved)  # loadable by transformers 4 and 5
    assert all(
        torch.equal(a, b) for a, b in zip(first.state_dict().values(), second.state_dict().values(), strict=False)
    )
    loaded = first.state_dict()
    for key, value in saved.items():
        name = key if key in loaded else key[len("text_model.") :]
        assert torch.equal(loaded[name], value), key


def test_build_is_deterministic_across_processes(tmp_path: Path) -> None:
    """A fresh process builds bit-identical weights to the cached folder (fixed seeds)."""
    fresh = tmp_path / "fresh"
    code = (
        "import sys; from pathlib import Path; from vidstyle.tiny_models import build_tiny_sd15; "
        "build_tiny_sd15(Path(sys.argv[1]))"
    )
    subprocess.run(
        [sys.executable, "-c", code, str(fresh)],
        check=True,
        capture_output=True,
        cwd=Path(__file__).resolve().parent.parent,
    )
    assert _same_weights(fresh, tiny_pipeline_dir())


def test_cache_dir_is_built_atomically(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("VIDSTYLE_CACHE_DIR", str(tmp_path / "cache"))
    folder = tiny_pipeline_dir()
    assert folder.parent == tmp_path / "cache"
    assert [p.name for p in folder.parent.iterdir()] == [folder.name]  # no temp folders left behind
    stamp = (folder / "model_index.json").stat().st_mtime_ns
    assert tiny_pipeline_dir() == folder
    assert (folder / "model_index.json").stat().st_mtime_ns == stamp


def test_tokenizer_handles_any_prompt_offline() -> None:
    tokenizer = tiny_components()["tokenizer"]
    assert tokenizer.model_max_length == 77
    ids = tokenizer("1girl, anime style, 日本語, émoji 🎉, <lora:x:0.8>").input_ids
    vocab_size = tiny_components()["text_encoder"].config.vocab_size
    assert ids[0] == tokenizer.bos_token_id and ids[-1] == tokenizer.eos_token_id
    assert all(0 <= i < vocab_size for i in ids)
    assert tokenizer.unk_token_id not in ids[1:-1]  # every byte is in the vocab
    # the merges are real: a merged word is one token
    assert len(tokenizer("the anime girl").input_ids) == 5


def test_vae_and_controlnet_hint_downsample_8x() -> None:
    parts = tiny_components()
    image = torch.zeros(1, 3, 64, 64)
    with torch.no_grad():
        latent = parts["vae"].encode(image).latent_dist.mean
        hint = parts["controlnet"].controlnet_cond_embedding(image)
    assert latent.shape == (1, 4, 8, 8)
    assert hint.shape[-2:] == (8, 8)


def test_controlnet_outputs_are_not_zero_initialised() -> None:
    controlnet = tiny_components()["controlnet"]
    assert controlnet.controlnet_cond_embedding.conv_out.weight.abs().sum() > 0
    assert all(block.weight.abs().sum() > 0 for block in controlnet.controlnet_down_blocks)
    assert controlnet.controlnet_mid_block.weight.abs().sum() > 0


KOHYA_KEY = re.compile(r"^lora_(unet|te)_[A-Za-z0-9_]+\.(lora_down\.weight|lora_up\.weight|alpha)$")


def test_kohya_lora_file_format(tmp_path: Path) -> None:
    parts = tiny_components()
    path = tmp_path / "char.safetensors"
    names = make_tiny_kohya_lora(path, parts["unet"], parts["text_encoder"], rank=4)
    tensors = load_file(str(path))
    assert all(KOHYA_KEY.match(key) for key in tensors)
    assert {key.split(".")[0] for key in tensors} == set(names)
    for name in names:
        down, up = tensors[f"{name}.lora_down.weight"], tensors[f"{name}.lora_up.weight"]
        assert down.shape[0] == 4 and up.shape[1] == 4
        assert up.abs().sum() > 0
        assert float(tensors[f"{name}.alpha"]) == 4.0
    # sd-scripts' names: diffusers UNet paths, and transformers-4 text encoder paths
    assert "lora_te_text_model_encoder_layers_0_self_attn_q_proj" in names
    assert "lora_te_text_model_encoder_layers_1_mlp_fc2" in names
    assert any(n.endswith("_transformer_blocks_0_attn2_to_k") for n in names)
    assert any(n.endswith("_proj_in") for n in names)  # 1x1 conv in SD1.5 layout
    assert names == sorted(kohya_lora_targets(parts["unet"], parts["text_encoder"]))


def test_diffusers_converts_every_kohya_key(tmp_path: Path) -> None:
    from diffusers import StableDiffusionPipeline

    parts = tiny_components()
    path = tmp_path / "char.safetensors"
    names = make_tiny_kohya_lora(path, parts["unet"], parts["text_encoder"])
    state, alphas = StableDiffusionPipeline.lora_state_dict(str(path.parent), weight_name=path.name)
    unet_keys = [k for k in state if k.startswith("unet.")]
    te_keys = [k for k in state if k.startswith("text_encoder.")]
    assert len(unet_keys) == 2 * sum(n.startswith("lora_unet_") for n in names)
    assert len(te_keys) == 2 * sum(n.startswith("lora_te_") for n in names)
    assert len(alphas) == len(names)


def test_single_file_has_the_original_sd_layout(tmp_path: Path) -> None:
    from diffusers.loaders.single_file_utils import infer_diffusers_model_type

    path = write_tiny_single_file(tmp_path / "tiny.safetensors")
    tensors = load_file(str(path))
    for key in (
        "model.diffusion_model.input_blocks.0.0.weight",
        "model.diffusion_model.time_embed.0.weight",
        "model.diffusion_model.middle_block.1.proj_in.weight",
        "model.diffusion_model.out.2.weight",
        "first_stage_model.decoder.up.0.block.0.conv1.weight",
        "first_stage_model.encoder.mid.attn_1.q.weight",
        "cond_stage_model.transformer.text_model.embeddings.token_embedding.weight",
    ):
        assert key in tensors, key
    assert tensors["first_stage_model.encoder.mid.attn_1.q.weight"].dim() == 4  # 1x1 conv, as in CompVis
    assert infer_diffusers_model_type(tensors) == "v1"


def test_single_file_round_trips_through_diffusers(tmp_path: Path) -> None:
    """diffusers' own single-file loader reads our layout back to the very same weights."""
    from diffusers import StableDiffusionPipeline

    path = write_tiny_single_file(tmp_path / "tiny.safetensors")
    pipe = StableDiffusionPipeline.from_single_file(
        str(path),
        config=str(tiny_pipeline_dir()),
        local_files_only=True,
        safety_checker=None,
        feature_extractor=None,
        requires_safety_checker=False,
    )
    parts = tiny_components()
    for name in ("unet", "vae", "text_encoder"):
        loaded, original = getattr(pipe, name).state_dict(), parts[name].state_dict()
        assert loaded.keys() == original.keys(), name
        assert all(torch.equal(loaded[k], original[k]) for k in original), name
    assert set(ldm_state_dict(parts["unet"], parts["vae"], parts["text_encoder"])) == set(load_file(str(path)))


def test_module_import_is_cheap() -> None:
    code = "import sys, vidstyle.tiny_models; print('torch' in sys.modules)"
    out = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        check=True,
        cwd=Path(__file__).resolve().parent.parent,
    ).stdout
    assert out.strip() == "False"
    assert tiny_models.TINY_VERSION
