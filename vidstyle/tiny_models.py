"""A tiny random-weight model set shaped like SD1.5, for tests and benchmarks without downloads.

Channel counts are tiny, but the shape that decides cost is SD's: the VAE has four blocks
(8x downsampling, so a 512x512 frame becomes a 64x64 latent) and the ControlNet
conditioning embedding downsamples 8x as well. A two-block VAE would leave the UNet on
256x256 latents and make one frame take minutes on a laptop CPU.

Weights come from fixed torch seeds, so every process builds identical weights; the
built folder is also cached on disk (`tiny_pipeline_dir()`) and reused. ControlNet's
zero-initialised output convolutions are re-initialised with small random values, since
an untrained all-zero ControlNet would have no effect and the tests could not see it.

Torch, diffusers and transformers are imported inside functions: importing this module
is free, and only the standalone diffusers backend and tests call it.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Any, Dict, List, Optional, Tuple

if TYPE_CHECKING:  # pragma: no cover - imports for type hints only
    import torch

# Bump when anything below changes the weights, so old cache folders are not reused.
TINY_VERSION = "v6"
TINY_SEED = 0
TEXT_HIDDEN = 32
CROSS_ATTENTION_DIM = 32
UNET_CHANNELS = (32, 32, 64)
VAE_CHANNELS = (8, 16, 32, 32)
CONTROL_EMBEDDING_CHANNELS = (4, 8, 16, 32)
MAX_TOKENS = 77
BOS_TOKEN = "<|startoftext|>"
EOS_TOKEN = "<|endoftext|>"
# A few byte-pair merges so the tokenizer really merges; every byte is in the vocab too, so
# any prompt in any script tokenizes without a network download.
_MERGES: Tuple[Tuple[str, str], ...] = (
    ("t", "h"), ("i", "n"), ("a", "n"), ("e", "r"), ("o", "n"), ("r", "e"), ("a", "r"), ("e", "n"),
    ("th", "e</w>"), ("in", "g</w>"), ("an", "d</w>"), ("g", "i"), ("gi", "r"), ("gir", "l</w>"),
    ("h", "a"), ("ha", "i"), ("hai", "r</w>"), ("an", "i"), ("ani", "m"), ("anim", "e</w>"),
    ("s", "t"), ("st", "y"), ("sty", "l"), ("styl", "e</w>"), ("o", "f</w>"),
)


def cache_root() -> Path:
    """Where built tiny models live: $VIDSTYLE_CACHE_DIR, else the XDG cache folder."""
    explicit = os.environ.get("VIDSTYLE_CACHE_DIR")
    if explicit:
        return Path(explicit)
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "vidstyle"


def _bytes_to_unicode() -> Dict[int, str]:
    """GPT-2/CLIP byte-to-printable-character table (byte-level BPE works on these chars)."""
    printable = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1))
    printable += list(range(ord("®"), ord("ÿ") + 1))
    chars = printable[:]
    extra = 0
    for byte in range(256):
        if byte not in printable:
            printable.append(byte)
            chars.append(256 + extra)
            extra += 1
    return {byte: chr(code) for byte, code in zip(printable, chars)}


def tiny_vocab() -> Tuple[Dict[str, int], List[str]]:
    """A CLIP-layout BPE vocab: bytes, bytes + '</w>', merges, then BOS/EOS (as CLIP orders them)."""
    symbols = list(_bytes_to_unicode().values())
    tokens = symbols + [s + "</w>" for s in symbols]
    merges: List[str] = []
    for left, right in _MERGES:
        merged = left + right
        if merged not in tokens:
            tokens.append(merged)
            merges.append(f"{left} {right}")
    tokens += [BOS_TOKEN, EOS_TOKEN]
    return {token: index for index, token in enumerate(tokens)}, merges


def write_tiny_tokenizer(folder: Path) -> None:
    """Write vocab.json/merges.txt/tokenizer_config.json that CLIPTokenizer loads offline."""
    folder.mkdir(parents=True, exist_ok=True)
    vocab, merges = tiny_vocab()
    (folder / "vocab.json").write_text(json.dumps(vocab, ensure_ascii=False), encoding="utf-8")
    (folder / "merges.txt").write_text("#version: 0.2\n" + "\n".join(merges) + "\n", encoding="utf-8")
    config = {
        "tokenizer_class": "CLIPTokenizer",
        "model_max_length": MAX_TOKENS,
        "bos_token": BOS_TOKEN,
        "eos_token": EOS_TOKEN,
        "unk_token": EOS_TOKEN,
        "pad_token": EOS_TOKEN,
        "do_lower_case": True,
    }
    (folder / "tokenizer_config.json").write_text(json.dumps(config, indent=2), encoding="utf-8")
    special = {"bos_token": BOS_TOKEN, "eos_token": EOS_TOKEN, "unk_token": EOS_TOKEN, "pad_token": EOS_TOKEN}
    (folder / "special_tokens_map.json").write_text(json.dumps(special, indent=2), encoding="utf-8")


def _text_encoder() -> Any:
    from transformers import CLIPTextConfig, CLIPTextModel

    vocab, _ = tiny_vocab()
    config = CLIPTextConfig(
        vocab_size=len(vocab),
        hidden_size=TEXT_HIDDEN,
        intermediate_size=37,
        num_hidden_layers=2,
        num_attention_heads=4,
        projection_dim=TEXT_HIDDEN,
        max_position_embeddings=MAX_TOKENS,
        bos_token_id=vocab[BOS_TOKEN],
        eos_token_id=vocab[EOS_TOKEN],
        pad_token_id=vocab[EOS_TOKEN],
    )
    model = CLIPTextModel(config).eval()
    _seeded_text_encoder_init(model, TINY_SEED)
    return model


def _seeded_text_encoder_init(model: Any, seed: int) -> None:
    """Set every text-encoder weight from our own seeded draws, in name order.

    transformers 4 and 5 initialise CLIP differently (and name the modules differently), so
    leaving init to them would give different tiny weights per transformers version.
    """
    import torch

    generator = torch.Generator().manual_seed(seed)
    named = sorted((name[len("text_model.") :] if name.startswith("text_model.") else name, param)
                   for name, param in model.named_parameters())
    with torch.no_grad():
        for name, param in named:
            if name.endswith("bias"):
                param.zero_()
            elif "layer_norm" in name:
                param.fill_(1.0)
            else:
                param.copy_(torch.randn(param.shape, generator=generator) * 0.02)


def _unet() -> Any:
    from diffusers import UNet2DConditionModel

    return UNet2DConditionModel(
        sample_size=64,
        in_channels=4,
        out_channels=4,
        block_out_channels=UNET_CHANNELS,
        layers_per_block=1,
        # Cross-attention only on the coarsest level (16x16 latents for a 512x512 frame):
        # attention over 64x64 latents would dominate the CPU time of a tiny model.
        down_block_types=("DownBlock2D", "DownBlock2D", "CrossAttnDownBlock2D"),
        up_block_types=("CrossAttnUpBlock2D", "UpBlock2D", "UpBlock2D"),
        cross_attention_dim=CROSS_ATTENTION_DIM,
        attention_head_dim=8,
        norm_num_groups=32,
    ).eval()


def _vae() -> Any:
    import torch
    from diffusers import AutoencoderKL

    vae = AutoencoderKL(
        in_channels=3,
        out_channels=3,
        block_out_channels=VAE_CHANNELS,
        down_block_types=("DownEncoderBlock2D",) * len(VAE_CHANNELS),
        up_block_types=("UpDecoderBlock2D",) * len(VAE_CHANNELS),
        layers_per_block=1,
        latent_channels=4,
        norm_num_groups=8,
        sample_size=512,
    ).eval()
    # SD's scaling factor (0.18215) is 1 / std of its latents, so scaled latents have unit
    # variance and the init image holds its own against img2img's noise. Measure ours the
    # same way; with SD's value the tiny model's init image would drown in the noise.
    images = torch.rand((4, 3, 64, 64), generator=torch.Generator().manual_seed(TINY_SEED + 4)) * 2 - 1
    with torch.no_grad():
        spread = float(vae.encode(images).latent_dist.mean.std())
    vae.register_to_config(scaling_factor=round(1.0 / spread, 4))
    return vae


def _controlnet(unet: Any) -> Any:
    import torch
    from diffusers import ControlNetModel

    controlnet = ControlNetModel.from_unet(unet, conditioning_embedding_out_channels=CONTROL_EMBEDDING_CHANNELS)
    generator = torch.Generator().manual_seed(TINY_SEED + 3)
    embedding = controlnet.controlnet_cond_embedding
    with torch.no_grad():
        # PyTorch's default conv init shrinks the signal ~3x per layer, so after the hint
        # embedding's seven convolutions the control image would barely matter; He-normal
        # weights and zero biases keep the edges visible in the embedding.
        for conv in [embedding.conv_in, *embedding.blocks, embedding.conv_out]:
            fan_in = conv.weight[0].numel()
            conv.weight.copy_(torch.randn(conv.weight.shape, generator=generator) * (2.0 / fan_in) ** 0.5)
            conv.bias.zero_()
        # SiLU still shrinks it; scale the last conv so an edge map embeds at unit spread
        # (a trained ControlNet's hint is as loud as the latent features it is added to).
        edges = (torch.rand((2, 3, 64, 64), generator=generator) > 0.9).float()
        embedding.conv_out.weight.div_(float(embedding(edges).std()))
        # from_unet zero-initialises the output convolutions (as ControlNet training starts);
        # small seeded values let the tiny ControlNet actually steer the output.
        for conv in [controlnet.controlnet_mid_block, *controlnet.controlnet_down_blocks]:
            conv.weight.copy_(torch.randn(conv.weight.shape, generator=generator) * 0.05)
            conv.bias.zero_()
    return controlnet.eval()


def _scheduler() -> Any:
    from diffusers import EulerAncestralDiscreteScheduler

    # SD1.5's training schedule (scaled_linear 0.00085..0.012 over 1000 steps).
    return EulerAncestralDiscreteScheduler(
        num_train_timesteps=1000,
        beta_start=0.00085,
        beta_end=0.012,
        beta_schedule="scaled_linear",
        steps_offset=1,
    )


def build_tiny_sd15(folder: Optional[Path] = None) -> Dict[str, Any]:
    """Build the tiny SD1.5-shaped components from fixed seeds; write them to `folder` if given.

    Returns the pipeline components (unet, vae, text_encoder, tokenizer, scheduler, controlnet).
    The folder is a diffusers StableDiffusionPipeline folder with an extra `controlnet/` folder.
    """
    import torch
    from transformers import CLIPTokenizer

    with tempfile.TemporaryDirectory() as scratch:
        tokenizer_dir = Path(folder) / "tokenizer" if folder is not None else Path(scratch) / "tokenizer"
        write_tiny_tokenizer(tokenizer_dir)
        tokenizer = CLIPTokenizer.from_pretrained(str(tokenizer_dir))
    # Each component gets its own seed so changing one never changes another's weights.
    torch.manual_seed(TINY_SEED)
    text_encoder = _text_encoder()
    torch.manual_seed(TINY_SEED + 1)
    unet = _unet()
    torch.manual_seed(TINY_SEED + 2)
    vae = _vae()
    controlnet = _controlnet(unet)
    components = {
        "unet": unet,
        "vae": vae,
        "text_encoder": text_encoder,
        "tokenizer": tokenizer,
        "scheduler": _scheduler(),
        "controlnet": controlnet,
    }
    if folder is not None:
        _save_components(Path(folder), components)
    return components


def _save_components(folder: Path, components: Dict[str, Any]) -> None:
    from diffusers import StableDiffusionPipeline

    pipe = StableDiffusionPipeline(
        vae=components["vae"],
        text_encoder=components["text_encoder"],
        tokenizer=components["tokenizer"],
        unet=components["unet"],
        scheduler=components["scheduler"],
        safety_checker=None,
        feature_extractor=None,
        requires_safety_checker=False,
    )
    pipe.save_pretrained(str(folder), safe_serialization=True)
    # Our hand-written tokenizer files stay authoritative (save_pretrained may add tokenizer.json).
    write_tiny_tokenizer(folder / "tokenizer")
    _store_text_encoder_v4_layout(folder / "text_encoder" / "model.safetensors")
    components["controlnet"].save_pretrained(str(folder / "controlnet"), safe_serialization=True)


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
        CLIPTextConfig,
        CLIPTextModel,
        CLIPTextModelWithProjection,
        CLIPTokenizer,
    )

    folder = Path(folder)
    write_tiny_tokenizer(folder / "tokenizer")
    tokenizer = CLIPTokenizer.from_pretrained(str(folder / "tokenizer"))
    vocab, _ = tiny_vocab()
    text_config = CLIPTextConfig(
        vocab_size=len(vocab), hidden_size=TEXT_HIDDEN, intermediate_size=37, num_hidden_layers=2,
        num_attention_heads=4, projection_dim=TEXT_HIDDEN, max_position_embeddings=MAX_TOKENS,
        bos_token_id=vocab[BOS_TOKEN], eos_token_id=vocab[EOS_TOKEN], pad_token_id=vocab[EOS_TOKEN],
    )
    torch.manual_seed(TINY_SEED + 10)
    text_encoder, text_encoder_2 = CLIPTextModel(text_config).eval(), CLIPTextModelWithProjection(text_config).eval()
    _seeded_text_encoder_init(text_encoder, TINY_SEED + 10)
    _seeded_text_encoder_init(text_encoder_2, TINY_SEED + 12)
    torch.manual_seed(TINY_SEED + 11)
    unet = UNet2DConditionModel(
        sample_size=64, in_channels=4, out_channels=4, block_out_channels=UNET_CHANNELS, layers_per_block=1,
        down_block_types=("DownBlock2D", "DownBlock2D", "CrossAttnDownBlock2D"),
        up_block_types=("CrossAttnUpBlock2D", "UpBlock2D", "UpBlock2D"),
        # SDXL: both encoders' hidden states side by side, plus pooled text + 6 size/crop numbers.
        cross_attention_dim=2 * TEXT_HIDDEN, attention_head_dim=8, norm_num_groups=32, use_linear_projection=True,
        addition_embed_type="text_time", addition_time_embed_dim=8,
        projection_class_embeddings_input_dim=6 * 8 + TEXT_HIDDEN,
    ).eval()
    torch.manual_seed(TINY_SEED + 2)
    vae = _vae()
    scheduler = EulerDiscreteScheduler(
        num_train_timesteps=1000, beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear", steps_offset=1
    )
    pipe = StableDiffusionXLPipeline(
        vae=vae, text_encoder=text_encoder, text_encoder_2=text_encoder_2, tokenizer=tokenizer,
        tokenizer_2=tokenizer, unet=unet, scheduler=scheduler, add_watermarker=False,
    )
    pipe.save_pretrained(str(folder), safe_serialization=True)
    for name in ("tokenizer", "tokenizer_2"):
        write_tiny_tokenizer(folder / name)
    _controlnet(unet).save_pretrained(str(folder / "controlnet"), safe_serialization=True)
    return folder


def _store_text_encoder_v4_layout(path: Path) -> None:
    """Keep CLIPTextModel keys as transformers 4 names them (`text_model.` prefix).

    transformers 5 saves them without the prefix, which transformers 4 cannot load; it
    still loads the prefixed names (as every hub checkpoint has them), so this layout
    works with both and a cache folder survives a transformers up- or downgrade.
    """
    from safetensors.torch import load_file, save_file

    tensors = load_file(str(path))
    if all(key.startswith("text_model.") for key in tensors):
        return
    save_file({f"text_model.{key}": value for key, value in tensors.items()}, str(path), metadata={"format": "pt"})


def tiny_pipeline_dir() -> Path:
    """The cached tiny model folder, built once (atomically) and reused by every process.

    Layout: a diffusers SD1.5 pipeline folder (model_index.json, unet/, vae/, text_encoder/,
    tokenizer/, scheduler/) plus `controlnet/` holding the matching tiny ControlNet.
    """
    final = cache_root() / f"tiny-sd15-{TINY_VERSION}"
    if (final / "model_index.json").is_file() and (final / "controlnet" / "config.json").is_file():
        return final
    final.parent.mkdir(parents=True, exist_ok=True)
    scratch = Path(tempfile.mkdtemp(prefix=f".{final.name}.", dir=final.parent))
    try:
        build_tiny_sd15(scratch)
        try:
            os.replace(scratch, final)
        except OSError:
            # Another process finished first; its weights are identical (same seeds).
            if not (final / "model_index.json").is_file():
                raise
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    return final


def kohya_lora_targets(unet: Any, text_encoder: Any) -> Dict[str, Any]:
    """Kohya LoRA module name -> Linear/1x1-Conv module, as sd-scripts' networks.lora picks them.

    sd-scripts wraps every Linear and 1x1 Conv2d inside Transformer2DModel blocks of the
    UNet and inside CLIPAttention/CLIPMLP of the text encoder; the name is the prefix plus
    the module path with dots turned into underscores.
    """
    import torch

    # sd-scripts names text-encoder modules as transformers 4 laid CLIPTextModel out
    # (`text_model.encoder...`); transformers 5 dropped the `text_model` level.
    te_root = "" if hasattr(text_encoder, "text_model") else "text_model."
    targets: Dict[str, Any] = {}
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
) -> List[str]:
    """Write a kohya-format LoRA .safetensors for the given tiny UNet and text encoder.

    Keys follow sd-scripts: `<name>.lora_down.weight`, `<name>.lora_up.weight`, `<name>.alpha`.
    Up weights are non-zero (a trained LoRA's are; a fresh one's are zero) so the LoRA visibly
    changes the output. `scale` sets the up/down weights' standard deviation. Returns the names.
    """
    import torch
    from safetensors.torch import save_file

    generator = torch.Generator().manual_seed(seed)
    tensors: Dict[str, "torch.Tensor"] = {}
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


def _rename(key: str, prefix: str, target: str, renames: Tuple[Tuple[str, str], ...] = ()) -> str:
    rest = key[len(prefix) :]
    for old, new in renames:
        if rest.startswith(old + "."):
            rest = new + rest[len(old) :]
            break
    return target + rest


def _unet_key_to_ldm(key: str, layers: int, attention_up: Tuple[bool, ...]) -> str:
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


def _unet_to_ldm(unet: Any) -> Dict[str, Any]:
    attention_up = tuple("CrossAttn" in kind for kind in unet.config.up_block_types)
    layers = unet.config.layers_per_block
    return {
        "model.diffusion_model." + _unet_key_to_ldm(key, layers, attention_up): value
        for key, value in unet.state_dict().items()
    }


def _vae_key_to_ldm(key: str, levels: int) -> Tuple[str, bool]:
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
        return _rename(key, prefix, f"{side}.mid.block_{int(parts[3]) + 1}.", (("conv_shortcut", "nin_shortcut"),)), False
    block = int(parts[2])
    level = block if side == "encoder" else levels - 1 - block  # LDM numbers decoder levels bottom-up
    group = "down" if side == "encoder" else "up"
    prefix = ".".join(parts[:5]) + "."
    if parts[3] in ("downsamplers", "upsamplers"):
        sampler = "downsample" if side == "encoder" else "upsample"
        return _rename(key, prefix, f"{side}.{group}.{level}.{sampler}."), False
    return _rename(key, prefix, f"{side}.{group}.{level}.block.{parts[4]}.", (("conv_shortcut", "nin_shortcut"),)), False


def _vae_to_ldm(vae: Any) -> Dict[str, Any]:
    levels = len(vae.config.block_out_channels)
    out: Dict[str, Any] = {}
    for key, value in vae.state_dict().items():
        name, pointwise = _vae_key_to_ldm(key, levels)
        # The original VAE's attention uses 1x1 convolutions where diffusers uses linears.
        out["first_stage_model." + name] = value[:, :, None, None] if pointwise and value.dim() == 2 else value
    return out


def ldm_state_dict(unet: Any, vae: Any, text_encoder: Any) -> Dict[str, Any]:
    """SD1.x diffusers modules -> one state dict in the original layout the WebUI loads."""
    te_root = "" if hasattr(text_encoder, "text_model") else "text_model."
    out = _unet_to_ldm(unet)
    out.update(_vae_to_ldm(vae))
    for key, value in text_encoder.state_dict().items():
        out[f"cond_stage_model.transformer.{te_root}{key}"] = value
    return {key: value.detach().contiguous().clone() for key, value in out.items()}


def write_tiny_single_file(path: Path) -> Path:
    """Write the tiny model as a single .safetensors checkpoint, laid out as WebUI checkpoints are."""
    from safetensors.torch import save_file

    parts = tiny_components()
    tensors = ldm_state_dict(parts["unet"], parts["vae"], parts["text_encoder"])
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    save_file(tensors, str(path))
    return Path(path)


_loaded: Dict[Path, Dict[str, Any]] = {}


def tiny_components() -> Dict[str, Any]:
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
