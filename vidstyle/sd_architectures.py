"""The real SD1.5 and SDXL architectures (UNet, VAE, text encoders, ControlNet), built in code.

The configs are the published shapes of runwayml/stable-diffusion-v1-5 + lllyasviel's
control_v11p_sd15_canny and stabilityai/stable-diffusion-xl-base-1.0 + a full-size SDXL
ControlNet. Nothing is downloaded: modules are built on the `meta` device (no memory; for
counting parameters and tracing activations) or with random weights written to a diffusers
folder the standalone backend loads like any other (for GPU benchmarks). The tokenizer is
the tiny offline one from `vidstyle.tiny_models`: its ids fit inside CLIP's vocabulary.

`checkpoint_family` tells SD1.x, SD2 and SDXL checkpoints apart from tensor names alone; the
trainer (checking a checkpoint against its preset), the diffusers backend (picking pipeline
classes) and the epoch preview (checking LoRAs against the checkpoint) all ask it.

Torch, diffusers and transformers are imported inside functions, as in `tiny_models`.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from .safetensors_header import read_header

ARCHITECTURES = ("sd15", "sdxl")
CLIP_VOCAB = 49408

# The text encoders' key prefixes in a single-file (LDM / SGM layout) checkpoint, as kohya
# sd-scripts' model_util / sdxl_model_util and diffusers' single-file loader read them: SD1.x
# has CLIP ViT-L in transformers layout, SD2 OpenCLIP ViT-H, SDXL a second (OpenCLIP bigG) embedder.
SD15_TEXT_KEY = "cond_stage_model.transformer."
SD2_TEXT_KEY = "cond_stage_model.model."
SDXL_TEXT_KEY = "conditioner.embedders.1."
SD2_CROSS_ATTENTION_DIM = 1024  # a diffusers SD2 UNet's (SD1.x: 768, SDXL: 2048)

_SD_VAE: dict[str, Any] = {
    "in_channels": 3,
    "out_channels": 3,
    "block_out_channels": (128, 256, 512, 512),
    "down_block_types": ("DownEncoderBlock2D",) * 4,
    "up_block_types": ("UpDecoderBlock2D",) * 4,
    "layers_per_block": 2,
    "latent_channels": 4,
    "norm_num_groups": 32,
}

UNET_CONFIGS: dict[str, dict[str, Any]] = {
    "sd15": {
        "sample_size": 64,
        "block_out_channels": (320, 640, 1280, 1280),
        "layers_per_block": 2,
        "down_block_types": ("CrossAttnDownBlock2D",) * 3 + ("DownBlock2D",),
        "up_block_types": ("UpBlock2D",) + ("CrossAttnUpBlock2D",) * 3,
        "cross_attention_dim": 768,
        "attention_head_dim": 8,
    },
    "sdxl": {
        "sample_size": 128,
        "block_out_channels": (320, 640, 1280),
        "layers_per_block": 2,
        "down_block_types": ("DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D"),
        "up_block_types": ("CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D"),
        "transformer_layers_per_block": (1, 2, 10),
        "attention_head_dim": (5, 10, 20),
        "cross_attention_dim": 2048,
        "use_linear_projection": True,
        "addition_embed_type": "text_time",
        "addition_time_embed_dim": 256,
        "projection_class_embeddings_input_dim": 2816,
    },
}

VAE_CONFIGS: dict[str, dict[str, Any]] = {
    "sd15": {**_SD_VAE, "sample_size": 512, "scaling_factor": 0.18215, "force_upcast": False},
    # SDXL's VAE overflows in fp16, so diffusers runs it in fp32 (force_upcast).
    "sdxl": {**_SD_VAE, "sample_size": 1024, "scaling_factor": 0.13025, "force_upcast": True},
}

# (hidden, intermediate, layers, heads, activation) of CLIP ViT-L/14 and OpenCLIP ViT-bigG/14.
_CLIP_L = (768, 3072, 12, 12, "quick_gelu")
_CLIP_BIG_G = (1280, 5120, 32, 20, "gelu")
TEXT_ENCODERS: dict[str, dict[str, Any]] = {
    "sd15": {"text_encoder": _CLIP_L},
    "sdxl": {"text_encoder": _CLIP_L, "text_encoder_2": _CLIP_BIG_G},
}


def _text_config(shape: Any) -> Any:
    from transformers import CLIPTextConfig

    from .tiny_models import BOS_TOKEN, EOS_TOKEN, MAX_TOKENS, tiny_vocab

    vocab, _ = tiny_vocab()
    hidden, intermediate, layers, heads, activation = shape
    return CLIPTextConfig(
        vocab_size=CLIP_VOCAB,
        hidden_size=hidden,
        intermediate_size=intermediate,
        num_hidden_layers=layers,
        num_attention_heads=heads,
        hidden_act=activation,
        projection_dim=hidden,
        max_position_embeddings=MAX_TOKENS,
        bos_token_id=vocab[BOS_TOKEN],
        eos_token_id=vocab[EOS_TOKEN],
        pad_token_id=vocab[EOS_TOKEN],
    )


def build_modules(arch: str, controlnet: bool = True) -> dict[str, Any]:
    """unet, vae, text encoder(s) and (optionally) ControlNet of `arch`, with default-initialised weights.

    Call it under `torch.device("meta")` to get the shapes without allocating anything.
    """
    from diffusers import AutoencoderKL, ControlNetModel, UNet2DConditionModel
    from transformers import CLIPTextModel, CLIPTextModelWithProjection

    if arch not in ARCHITECTURES:
        raise ValueError(f"Unknown architecture '{arch}'; choose one of {', '.join(ARCHITECTURES)}.")
    unet = UNet2DConditionModel(in_channels=4, out_channels=4, norm_num_groups=32, **UNET_CONFIGS[arch]).eval()
    modules: dict[str, Any] = {"unet": unet, "vae": AutoencoderKL(**VAE_CONFIGS[arch]).eval()}
    for name, shape in TEXT_ENCODERS[arch].items():
        cls = CLIPTextModelWithProjection if name == "text_encoder_2" else CLIPTextModel
        modules[name] = cls(_text_config(shape)).eval()
    if controlnet:
        modules["controlnet"] = ControlNetModel.from_unet(unet).eval()
    return modules


def _randomise(module: Any, dtype: Any, generator: Any) -> None:
    """Replace meta parameters with random ones in `dtype`: N(0, 1/fan_in) weights, unit norms, zero biases.

    1/fan_in keeps activations near unit scale through deep stacks, so fp16 runs do the same
    work as with trained weights instead of overflowing into NaNs.
    """
    import torch

    for name, param in list(module.named_parameters()):
        owner_name, _, leaf = name.rpartition(".")
        owner = module.get_submodule(owner_name) if owner_name else module
        if param.dim() >= 2:
            fan_in = param[0].numel()
            value = torch.randn(param.shape, generator=generator) * fan_in**-0.5
        elif leaf == "weight":  # norm scales
            value = torch.ones(param.shape)
        else:
            value = torch.zeros(param.shape)
        owner._parameters[leaf] = torch.nn.Parameter(value.to(dtype), requires_grad=False)


def write_random_pipeline(arch: str, folder: Path, dtype: Any | None = None, seed: int = 0) -> Path:
    """A diffusers pipeline folder of `arch` with random weights (+ `controlnet/`), for GPU benchmarks.

    Parameters are allocated once, directly in `dtype` (fp16 halves host memory for SDXL).
    Reuses a complete folder written before with the same arch, dtype and seed.
    """
    import torch
    from accelerate import init_empty_weights
    from diffusers import EulerAncestralDiscreteScheduler, StableDiffusionPipeline, StableDiffusionXLPipeline
    from transformers import CLIPTokenizer

    from .tiny_models import write_tiny_tokenizer

    dtype = dtype or torch.float16
    folder = Path(folder)
    stamp = {"arch": arch, "dtype": str(dtype), "seed": seed}
    marker = folder / "vidstyle_random.json"
    if marker.is_file() and json.loads(marker.read_text(encoding="utf-8")) == stamp:
        return folder
    with init_empty_weights(include_buffers=False):  # buffers (e.g. CLIP position ids) stay real
        modules = build_modules(arch)
    generator = torch.Generator().manual_seed(seed)
    for module in modules.values():
        _randomise(module, dtype, generator)
    write_tiny_tokenizer(folder / "tokenizer")
    tokenizer = CLIPTokenizer.from_pretrained(str(folder / "tokenizer"))
    scheduler = EulerAncestralDiscreteScheduler(
        num_train_timesteps=1000, beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear", steps_offset=1
    )
    parts = {name: modules[name] for name in modules if name != "controlnet"}
    if arch == "sdxl":
        pipe = StableDiffusionXLPipeline(
            **parts, tokenizer=tokenizer, tokenizer_2=tokenizer, scheduler=scheduler, add_watermarker=False
        )
    else:
        pipe = StableDiffusionPipeline(
            **parts,
            tokenizer=tokenizer,
            scheduler=scheduler,
            safety_checker=None,
            feature_extractor=None,
            requires_safety_checker=False,
        )
    pipe.save_pretrained(str(folder), safe_serialization=True)
    for name in ("tokenizer", "tokenizer_2") if arch == "sdxl" else ("tokenizer",):
        write_tiny_tokenizer(folder / name)
    modules["controlnet"].save_pretrained(str(folder / "controlnet"), safe_serialization=True)
    marker.write_text(json.dumps(stamp), encoding="utf-8")
    return folder


# --------------------------------------------------------------------------- families


def family_from_keys(names: Iterable[str]) -> str | None:
    """'sd15', 'sd2' or 'sdxl' from a single-file checkpoint's tensor names; None if none fits."""
    found = set()
    for name in names:
        for prefix in (SDXL_TEXT_KEY, SD2_TEXT_KEY, SD15_TEXT_KEY):
            if name.startswith(prefix):
                found.add(prefix)
    # SDXL's first embedder is a CLIP too, so its second one decides before any other.
    for prefix, family in ((SDXL_TEXT_KEY, "sdxl"), (SD2_TEXT_KEY, "sd2"), (SD15_TEXT_KEY, "sd15")):
        if prefix in found:
            return family
    return None


def checkpoint_family(path: Path) -> str | None:
    """The family of a .safetensors checkpoint or a diffusers folder; None when it cannot tell.

    Reads only the file's header (no torch); MediaError for a file that is not .safetensors inside.
    """
    path = Path(path)
    if path.is_dir():
        return _folder_family(path)
    if path.suffix.lower() != ".safetensors":
        return None
    names, _ = read_header(path)
    return family_from_keys(names)


def _folder_family(folder: Path) -> str | None:
    index = _read_json(folder / "model_index.json")
    if index is None:
        return None
    name = str(index.get("_class_name", ""))
    if "text_encoder_2" in index or "XL" in name:
        return "sdxl"
    if name not in ("StableDiffusionPipeline", "StableDiffusionImg2ImgPipeline"):
        return None
    unet = _read_json(folder / "unet" / "config.json") or {}
    return "sd2" if unet.get("cross_attention_dim") == SD2_CROSS_ATTENTION_DIM else "sd15"


def _read_json(path: Path) -> dict[str, Any] | None:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None
