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
is free, and only the standalone diffusers backend and tests call it. What only tests need
(an SDXL-shaped set, kohya LoRAs, the LDM single-file layout) is in tests/tiny_builders.py.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

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
# A single-file copy of the tiny model names its diffusers configs in its safetensors metadata, so a
# loader never guesses the model from tensor shapes (diffusers' own detection takes it for SD1.5).
CONFIG_METADATA_KEY = "vidstyle.diffusers_config"
CONFIG_METADATA_VALUE = "tiny"
EOS_TOKEN = "<|endoftext|>"
# A few byte-pair merges so the tokenizer really merges; every byte is in the vocab too, so
# any prompt in any script tokenizes without a network download.
_MERGES: tuple[tuple[str, str], ...] = (
    ("t", "h"),
    ("i", "n"),
    ("a", "n"),
    ("e", "r"),
    ("o", "n"),
    ("r", "e"),
    ("a", "r"),
    ("e", "n"),
    ("th", "e</w>"),
    ("in", "g</w>"),
    ("an", "d</w>"),
    ("g", "i"),
    ("gi", "r"),
    ("gir", "l</w>"),
    ("h", "a"),
    ("ha", "i"),
    ("hai", "r</w>"),
    ("an", "i"),
    ("ani", "m"),
    ("anim", "e</w>"),
    ("s", "t"),
    ("st", "y"),
    ("sty", "l"),
    ("styl", "e</w>"),
    ("o", "f</w>"),
)


def cache_root() -> Path:
    """Where built tiny models live: $VIDSTYLE_CACHE_DIR, else the XDG cache folder."""
    explicit = os.environ.get("VIDSTYLE_CACHE_DIR")
    if explicit:
        return Path(explicit)
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "vidstyle"


def _bytes_to_unicode() -> dict[int, str]:
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
    return {byte: chr(code) for byte, code in zip(printable, chars, strict=False)}


def tiny_vocab() -> tuple[dict[str, int], list[str]]:
    """A CLIP-layout BPE vocab: bytes, bytes + '</w>', merges, then BOS/EOS (as CLIP orders them)."""
    symbols = list(_bytes_to_unicode().values())
    tokens = symbols + [s + "</w>" for s in symbols]
    merges: list[str] = []
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


def text_encoder_config() -> Any:
    """The tiny CLIP text encoder's config (SD1.5's one encoder; both of the test-only SDXL set's)."""
    from transformers import CLIPTextConfig

    vocab, _ = tiny_vocab()
    return CLIPTextConfig(
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


def _text_encoder() -> Any:
    from transformers import CLIPTextModel

    model = CLIPTextModel(text_encoder_config()).eval()
    _seeded_text_encoder_init(model, TINY_SEED)
    return model


def _seeded_text_encoder_init(model: Any, seed: int) -> None:
    """Set every text-encoder weight from our own seeded draws, in name order.

    transformers 4 and 5 initialise CLIP differently (and name the modules differently), so
    leaving init to them would give different tiny weights per transformers version.
    """
    import torch

    generator = torch.Generator().manual_seed(seed)
    named = sorted(
        (name[len("text_model.") :] if name.startswith("text_model.") else name, param)
        for name, param in model.named_parameters()
    )
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


def build_tiny_sd15(folder: Path | None = None) -> dict[str, Any]:
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


def _save_components(folder: Path, components: dict[str, Any]) -> None:
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
