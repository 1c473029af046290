"""Test-only builders over the tiny model (vidstyle.tiny_models): SDXL-shaped pipeline, kohya LoRAs, LDM single file.

The package ships only what `tiny` needs at run time (the SD1.5-shaped folder the demo and the
diffusers backend load); these build the other shapes the tests feed to the backends.
Torch, diffusers and transformers are imported inside functions, as in tiny_models.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from vidstyle.tiny_models import (
    CONFIG_METADATA_KEY,
    CONFIG_METADATA_VALUE,
    TEXT_HIDDEN,
    TINY_SEED,
    UNET_CHANNELS,
    _controlnet,
    _seeded_text_encoder_init,
    _vae,
    text_encoder_config,
    tiny_pipeline_dir,
    write_tiny_tokenizer,
)


def build_tiny_sdxl(folder: Path) -> Path:
    """Write a tiny SDXL-shaped pipeline folder (two text encoders, text_time embedding) + `controlnet/`.

    For tests of the SDXL code path; same seeds and 8x VAE as the SD1.5 set. Not cached:
    nothing renders SDXL in the hot path of the test suite.
    """
    import torch
    from diffusers import (
        EulerDiscreteScheduler,
        StableDiffusionXLPipeline,
        UNet2DConditionModel,
    )
    from transformers import (
        CLIPTextModel,
        CLIPTextModelWithProjection,
        CLIPTokenizer,
    )

    folder = Path(folder)
    write_tiny_tokenizer(folder / "tokenizer")
    tokenizer = CLIPTokenizer.from_pretrained(str(folder / "tokenizer"))
    text_config = text_encoder_config()
    torch.manual_seed(TINY_SEED + 10)
    text_encoder, text_encoder_2 = CLIPTextModel(text_config).eval(), CLIPTextModelWithProjection(text_config).eval()
    _seeded_text_encoder_init(text_encoder, TINY_SEED + 10)
    _seeded_text_encoder_init(text_encoder_2, TINY_SEED + 12)
    torch.manual_seed(TINY_SEED + 11)
    unet = UNet2DConditionModel(
        sample_size=64,
        in_channels=4,
        out_channels=4,
        block_out_channels=UNET_CHANNELS,
        layers_per_block=1,
        down_block_types=("DownBlock2D", "DownBlock2D", "CrossAttnDownBlock2D"),
        up_block_types=("CrossAttnUpBlock2D", "UpBlock2D", "UpBlock2D"),
        # SDXL: both encoders' hidden states side by side, plus pooled text + 6 size/crop numbers.
        cross_attention_dim=2 * TEXT_HIDDEN,
        attention_head_dim=8,
        norm_num_groups=32,
        use_linear_projection=True,
        addition_embed_type="text_time",
        addition_time_embed_dim=8,
        projection_class_embeddings_input_dim=6 * 8 + TEXT_HIDDEN,
    ).eval()
    torch.manual_seed(TINY_SEED + 2)
    vae = _vae()
    scheduler = EulerDiscreteScheduler(
        num_train_timesteps=1000, beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear", steps_offset=1
    )
    pipe = StableDiffusionXLPipeline(
        vae=vae,
        text_encoder=text_encoder,
        text_encoder_2=text_encoder_2,
        tokenizer=tokenizer,
        tokenizer_2=tokenizer,
        unet=unet,
        scheduler=scheduler,
        add_watermarker=False,
    )
    pipe.save_pretrained(str(folder), safe_serialization=True)
    for name in ("tokenizer", "tokenizer_2"):
        write_tiny_tokenizer(folder / name)
    _controlnet(unet).save_pretrained(str(folder / "controlnet"), safe_serialization=True)
    return folder


def kohya_lora_targets(unet: Any, text_encoder: Any) -> dict[str, Any]:
    """Kohya LoRA module name -> Linear/1x1-Conv module, as sd-scripts' networks.lora picks them.

    sd-scripts wraps every Linear and 1x1 Conv2d inside Transformer2DModel blocks of the
    UNet and inside CLIPAttention/CLIPMLP of the text encoder; the name is the prefix plus
    the module path with dots turned into underscores.
    """
    import torch

    # sd-scripts names text-encoder modules as transformers 4 laid CLIPTextModel out
    # (`text_model.encoder...`); transformers 5 dropped the `text_model` level.
    te_root = "" if hasattr(text_encoder, "text_model") else "text_model."
    targets: dict[str, Any] = {}
    for prefix, root, module_root, parent_types in (
        ("lora_unet", unet, "", ("Transformer2DModel",)),
        ("lora_te", text_encoder, te_root, ("CLIPAttention", "CLIPSdpaAttention", "CLIPMLP")),
    ):
        for parent_name, parent in root.named_modules():
            if type(parent).__name__ not in parent_types:
                continue
            for child_name, child in parent.named_modules():
                pointwise = isinstance(child, torch.nn.Conv2d) and child.kernel_size == (1, 1)
                if (isinstance(child, torch.nn.Linear) or pointwise) and child_name:
                    full = f"{module_root}{parent_name}.{child_name}".replace(".", "_")
                    targets[f"{prefix}_{full}"] = child
    return targets


def make_tiny_kohya_lora(
    path: Path, unet: Any, text_encoder: Any, rank: int = 4, seed: int = 0, scale: float = 0.5
) -> list[str]:
    """Write a kohya-format LoRA .safetensors for the given tiny UNet and text encoder.

    Keys follow sd-scripts: `<name>.lora_down.weight`, `<name>.lora_up.weight`, `<name>.alpha`.
    Up weights are non-zero (a trained LoRA's are; a fresh one's are zero) so the LoRA visibly
    changes the output. `scale` sets the up/down weights' standard deviation. Returns the names.
    """
    import torch
    from safetensors.torch import save_file

    generator = torch.Generator().manual_seed(seed)
    tensors: dict[str, torch.Tensor] = {}
    targets = kohya_lora_targets(unet, text_encoder)
    for name, module in sorted(targets.items()):
        # 1x1 convolutions (SD1.5's proj_in/proj_out) get 1x1 conv LoRA weights, as in sd-scripts.
        pointwise = isinstance(module, torch.nn.Conv2d)
        fan_in = module.in_channels if pointwise else module.in_features
        fan_out = module.out_channels if pointwise else module.out_features
        tail = (1, 1) if pointwise else ()
        down = torch.randn((rank, fan_in) + tail, generator=generator) * scale
        up = torch.randn((fan_out, rank) + tail, generator=generator) * scale
        tensors[f"{name}.lora_down.weight"] = down.contiguous()
        tensors[f"{name}.lora_up.weight"] = up.contiguous()
        tensors[f"{name}.alpha"] = torch.tensor(float(rank))
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    save_file(tensors, str(path), metadata={"ss_network_module": "networks.lora", "ss_network_dim": str(rank)})
    return sorted(targets)


# ----- the tiny model as a WebUI-style single file (original LDM/CompVis key layout) -----

_RESNET_TO_LDM = (
    ("norm1", "in_layers.0"),
    ("conv1", "in_layers.2"),
    ("time_emb_proj", "emb_layers.1"),
    ("norm2", "out_layers.0"),
    ("conv2", "out_layers.3"),
    ("conv_shortcut", "skip_connection"),
)
_VAE_ATTENTION_TO_LDM = (("group_norm", "norm"), ("to_q", "q"), ("to_k", "k"), ("to_v", "v"), ("to_out.0", "proj_out"))


def _rename(key: str, prefix: str, target: str, renames: tuple[tuple[str, str], ...] = ()) -> str:
    rest = key[len(prefix) :]
    for old, new in renames:
        if rest.startswith(old + "."):
            rest = new + rest[len(old) :]
            break
    return target + rest


def _unet_key_to_ldm(key: str, layers: int, attention_up: tuple[bool, ...]) -> str:
    """One diffusers UNet2DConditionModel key -> its name in an SD1.x `model.diffusion_model`.

    `attention_up[i]` says whether up block i has attentions (its upsampler then sits in
    slot 2 of the LDM output block instead of slot 1).
    """
    parts = key.split(".")
    plain = {
        "time_embedding.linear_1": "time_embed.0",
        "time_embedding.linear_2": "time_embed.2",
        "conv_in": "input_blocks.0.0",
        "conv_norm_out": "out.0",
        "conv_out": "out.2",
    }
    head = ".".join(parts[:2]) if parts[0] == "time_embedding" else parts[0]
    if head in plain:
        return plain[head] + key[len(head) :]
    if parts[0] == "mid_block":
        index = {"resnets.0": 0, "attentions.0": 1, "resnets.1": 2}[".".join(parts[1:3])]
        prefix = ".".join(parts[:3]) + "."
        return _rename(key, prefix, f"middle_block.{index}.", _RESNET_TO_LDM if parts[1] == "resnets" else ())
    block, kind, layer = int(parts[1]), parts[2], int(parts[3])
    prefix = ".".join(parts[:4]) + "."
    stride = layers + 1  # each level: `layers` layers plus one down/up-sampling slot
    renames = _RESNET_TO_LDM if kind == "resnets" else ()
    slot = 0 if kind == "resnets" else 1
    if parts[0] == "down_blocks":
        if kind == "downsamplers":
            return _rename(key, prefix + "conv.", f"input_blocks.{(block + 1) * stride}.0.op.")
        return _rename(key, prefix, f"input_blocks.{1 + block * stride + layer}.{slot}.", renames)
    if kind == "upsamplers":
        upsampler_slot = 2 if attention_up[block] else 1
        return _rename(key, prefix, f"output_blocks.{block * stride + layers}.{upsampler_slot}.")
    return _rename(key, prefix, f"output_blocks.{block * stride + layer}.{slot}.", renames)


def _unet_to_ldm(unet: Any) -> dict[str, Any]:
    attention_up = tuple("CrossAttn" in kind for kind in unet.config.up_block_types)
    layers = unet.config.layers_per_block
    return {
        "model.diffusion_model." + _unet_key_to_ldm(key, layers, attention_up): value
        for key, value in unet.state_dict().items()
    }


def _vae_key_to_ldm(key: str, levels: int) -> tuple[str, bool]:
    """One AutoencoderKL key -> (LDM `first_stage_model` name, is a mid-attention linear weight)."""
    parts = key.split(".")
    side = parts[0]
    if parts[0] in ("quant_conv", "post_quant_conv"):
        return key, False
    if parts[1] == "conv_norm_out":
        return key.replace("conv_norm_out", "norm_out"), False
    if parts[1] in ("conv_in", "conv_out"):
        return key, False
    if parts[1] == "mid_block":
        if parts[2] == "attentions":
            prefix = ".".join(parts[:4]) + "."
            name = _rename(key, prefix, f"{side}.mid.attn_1.", _VAE_ATTENTION_TO_LDM)
            return name, name.endswith(("q.weight", "k.weight", "v.weight", "proj_out.weight"))
        prefix = ".".join(parts[:4]) + "."
        return _rename(
            key, prefix, f"{side}.mid.block_{int(parts[3]) + 1}.", (("conv_shortcut", "nin_shortcut"),)
        ), False
    block = int(parts[2])
    level = block if side == "encoder" else levels - 1 - block  # LDM numbers decoder levels bottom-up
    group = "down" if side == "encoder" else "up"
    prefix = ".".join(parts[:5]) + "."
    if parts[3] in ("downsamplers", "upsamplers"):
        sampler = "downsample" if side == "encoder" else "upsample"
        return _rename(key, prefix, f"{side}.{group}.{level}.{sampler}."), False
    return _rename(
        key, prefix, f"{side}.{group}.{level}.block.{parts[4]}.", (("conv_shortcut", "nin_shortcut"),)
    ), False


def _vae_to_ldm(vae: Any) -> dict[str, Any]:
    levels = len(vae.config.block_out_channels)
    out: dict[str, Any] = {}
    for key, value in vae.state_dict().items():
        name, pointwise = _vae_key_to_ldm(key, levels)
        # The original VAE's attention uses 1x1 convolutions where diffusers uses linears.
        out["first_stage_model." + name] = value[:, :, None, None] if pointwise and value.dim() == 2 else value
    return out


def ldm_state_dict(unet: Any, vae: Any, text_encoder: Any) -> dict[str, Any]:
    """SD1.x diffusers modules -> one state dict in the original layout the WebUI loads."""
    te_root = "" if hasattr(text_encoder, "text_model") else "text_model."
    out = _unet_to_ldm(unet)
    out.update(_vae_to_ldm(vae))
    for key, value in text_encoder.state_dict().items():
        out[f"cond_stage_model.transformer.{te_root}{key}"] = value
    return {key: value.detach().contiguous().clone() for key, value in out.items()}


def write_tiny_single_file(path: Path) -> Path:
    """Write the tiny model as a single .safetensors checkpoint, laid out as WebUI checkpoints are.

    Its metadata names the tiny configs, as the diffusers backend needs for a single file.
    """
    from safetensors.torch import save_file

    parts = tiny_components()
    tensors = ldm_state_dict(parts["unet"], parts["vae"], parts["text_encoder"])
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    save_file(tensors, str(path), metadata={CONFIG_METADATA_KEY: CONFIG_METADATA_VALUE})
    return Path(path)


_loaded: dict[Path, dict[str, Any]] = {}


def tiny_components() -> dict[str, Any]:
    """The cached tiny model's modules, loaded once per process (callers must not modify them).

    Handy for making LoRAs that match the tiny model without rebuilding it.
    """
    folder = tiny_pipeline_dir()
    if folder not in _loaded:
        from diffusers import AutoencoderKL, ControlNetModel, UNet2DConditionModel
        from transformers import CLIPTextModel, CLIPTokenizer

        _loaded[folder] = {
            "unet": UNet2DConditionModel.from_pretrained(str(folder / "unet")).eval(),
            "vae": AutoencoderKL.from_pretrained(str(folder / "vae")).eval(),
            "text_encoder": CLIPTextModel.from_pretrained(str(folder / "text_encoder")).eval(),
            "tokenizer": CLIPTokenizer.from_pretrained(str(folder / "tokenizer")),
            "controlnet": ControlNetModel.from_pretrained(str(folder / "controlnet")).eval(),
        }
    return _loaded[folder]
