"""How much GPU memory a diffusers img2img job needs, per memory mode, and which mode fits.

The estimate is arithmetic on numbers read from the loaded (not yet placed) models:
parameters x bytes per parameter, plus the activations of the largest phase of one frame:

* a denoising step: the UNet's skip connections (kept for the up path) plus the working set
  of its full-resolution level, at batch 2 for classifier-free guidance; a ControlNet adds
  its residuals (the same shapes as the skips) and its hint embedding;
* the VAE encode / decode at full frame size, in fp32 when the VAE forces an upcast
  (SDXL's does), or tile by tile with VAE tiling.

The activation factors below were fitted to a trace of the real SD1.5 and SDXL
architectures on the `meta` device (every tensor created and freed, no memory used);
tests/test_memory_modes.py keeps the estimate within 20 % of that trace.

Which weights are resident depends on the mode, as diffusers places them:
* none: everything on the GPU;
* model_offload (accelerate hooks per model, chain text encoder -> UNet -> VAE): during the
  steps the UNet, the VAE and the ControlNet are resident, the text encoders are not;
* sequential_offload: one leaf module's weights at a time, plus the activations.

Pure Python (no torch import), so it can be tested and reused anywhere.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

GIB = 2**30
# Frames are decoded in tiles of this many pixels when VAE tiling is on (diffusers' default is
# the VAE's sample_size, 1024 for SDXL, which would save nothing at 1024x1024).
VAE_TILE_PX = 512
VAE_TILE_OVERLAP = 0.25
# cuDNN/cuBLAS workspaces and allocator slack on top of the estimate when judging a fit.
HEADROOM_FRACTION = 0.10
HEADROOM_BYTES = 256 * 2**20
MODES = ("none", "model_offload", "sequential_offload")

# Activation factors, in units of one channel of the largest latent map (batch x h/8 x w/8 x bytes):
# the full-resolution level's working set, per channel of that level, with and without its
# transformer (the feed-forward's 4x GEGLU widening dominates when attention runs there).
_WORKING_SET_ATTENTION = 20
_WORKING_SET_PLAIN = 10
# A ControlNet's residuals and hint embedding, relative to the UNet's skip connections.
_CONTROLNET_SKIP_SHARE = 1.5
# Live full-size maps at the VAE's peak, per channel: the encoder's first level and the
# decoder's last upsampler (which outputs the second level's channels at full size).
_VAE_ENCODE_MAPS = 5
_VAE_DECODE_MAPS = 3
TEXT_TOKENS = 77


@dataclass(frozen=True)
class ComponentSize:
    """One model's parameter count, the largest single leaf module's, and bytes per parameter."""

    params: int
    largest_leaf: int
    dtype_bytes: int

    @property
    def weight_bytes(self) -> int:
        return self.params * self.dtype_bytes


@dataclass(frozen=True)
class ModelProfile:
    """What the estimate needs to know about a loaded pipeline (see `profile_modules`)."""

    components: dict[str, ComponentSize]
    unet_channels: tuple[int, ...]
    unet_layers_per_block: int
    unet_top_attention: bool
    vae_channels: tuple[int, ...]
    vae_upcast: bool
    dtype_bytes: int


@dataclass(frozen=True)
class Frame:
    """The work of one frame: size, guidance batch (2 with CFG), ControlNet and VAE tiling."""

    width: int
    height: int
    controlnet: bool = True
    batch: int = 2
    vae_tiling: bool = False


@dataclass(frozen=True)
class MemoryEstimate:
    mode: str
    weight_bytes: int
    activation_bytes: int
    phases: dict[str, int] = field(default_factory=dict)

    @property
    def total_bytes(self) -> int:
        return self.weight_bytes + self.activation_bytes

    @property
    def with_headroom(self) -> int:
        return int(self.total_bytes * (1 + HEADROOM_FRACTION)) + HEADROOM_BYTES


def gib(value: int) -> str:
    return f"{value / GIB:.1f} GB"


def profile_modules(modules: dict[str, Any], dtype_bytes: int) -> ModelProfile:
    """A ModelProfile from torch modules (unet, vae, text_encoder[_2], optional controlnet)."""
    components = {name: _component_size(module) for name, module in modules.items() if module is not None}
    unet, vae = modules["unet"].config, modules["vae"].config
    return ModelProfile(
        components=components,
        unet_channels=tuple(unet.block_out_channels),
        unet_layers_per_block=_first(unet.layers_per_block),
        unet_top_attention="CrossAttn" in unet.down_block_types[0],
        vae_channels=tuple(vae.block_out_channels),
        vae_upcast=bool(getattr(vae, "force_upcast", False)) and dtype_bytes < 4,
        dtype_bytes=dtype_bytes,
    )


def _first(value: Any) -> int:
    return int(value[0] if isinstance(value, (list, tuple)) else value)


def _component_size(module: Any) -> ComponentSize:
    params = list(module.parameters())
    largest = max((sum(p.numel() for p in leaf.parameters(recurse=False)) for leaf in module.modules()), default=0)
    dtype_bytes = params[0].element_size() if params else 0
    return ComponentSize(sum(p.numel() for p in params), largest, dtype_bytes)


def _unet_skip_channels(profile: ModelProfile) -> float:
    """Sum of the skip connections' channels, each weighted by its map's area relative to level 0."""
    layers = profile.unet_layers_per_block
    total = float(profile.unet_channels[0])  # conv_in
    levels = len(profile.unet_channels)
    for level, channels in enumerate(profile.unet_channels):
        area = 4.0**-level
        total += layers * channels * area
        if level < levels - 1:
            total += channels * area / 4  # the downsampler's output
    return total


def activation_phases(profile: ModelProfile, frame: Frame) -> dict[str, int]:
    """Peak activation bytes of each phase of one frame: step, encode, decode."""
    latent_unit = frame.batch * (frame.height // 8) * (frame.width // 8) * profile.dtype_bytes
    skips = _unet_skip_channels(profile)
    working = profile.unet_channels[0] * (_WORKING_SET_ATTENTION if profile.unet_top_attention else _WORKING_SET_PLAIN)
    step_channels = skips + working + (_CONTROLNET_SKIP_SHARE * skips if frame.controlnet else 0.0)
    width, height = frame.width, frame.height
    if frame.vae_tiling:  # tiles of VAE_TILE_PX, the last one possibly smaller
        width, height = min(width, VAE_TILE_PX), min(height, VAE_TILE_PX)
    vae_bytes = 4 if profile.vae_upcast else profile.dtype_bytes
    full_map = width * height * vae_bytes
    return {
        "step": int(step_channels * latent_unit),
        "encode": int(_VAE_ENCODE_MAPS * profile.vae_channels[0] * full_map),
        "decode": int(_VAE_DECODE_MAPS * profile.vae_channels[1] * full_map),
    }


def _weights(profile: ModelProfile, names: Iterable[str]) -> int:
    total = 0
    for name in names:
        size = profile.components.get(name)
        if size is None:
            continue
        upcast = name == "vae" and profile.vae_upcast
        total += size.params * 4 if upcast else size.weight_bytes
    return total


def estimate(profile: ModelProfile, frame: Frame, mode: str) -> MemoryEstimate:
    """Peak GPU bytes of one frame in `mode` (one of MODES)."""
    phases = activation_phases(profile, frame)
    names = [name for name in profile.components if frame.controlnet or name != "controlnet"]
    text = [name for name in names if name.startswith("text_encoder")]
    cn = ["controlnet"] if "controlnet" in names else []
    if mode == "none":
        resident = {phase: _weights(profile, names) for phase in phases}
    elif mode == "model_offload":
        resident = {
            "encode": _weights(profile, text + ["vae"]),
            "step": _weights(profile, ["unet", "vae"] + cn),
            "decode": _weights(profile, ["vae"] + cn),
        }
    elif mode == "sequential_offload":
        leaf = max(profile.components[name].largest_leaf * profile.components[name].dtype_bytes for name in names)
        resident = {phase: leaf for phase in phases}
    else:
        raise ValueError(f"unknown memory mode {mode!r}")
    worst = max(phases, key=lambda phase: resident[phase] + phases[phase])
    return MemoryEstimate(mode, resident[worst], phases[worst], phases)


@dataclass(frozen=True)
class MemoryPlan:
    """The mode to use and why, plus a sentence for the user when nothing fits."""

    mode: str
    estimate: MemoryEstimate
    free_bytes: int | None
    fits: bool
    advice: str = ""


def plan_memory(profile: ModelProfile, frame: Frame, wanted: str, free_bytes: int | None, device: str) -> MemoryPlan:
    """Pick the mode (`wanted`, or the fastest that fits for 'auto') and say which would fit if it does not.

    `free_bytes` is None when there is no accelerator to fill (CPU): then there is nothing to
    offload to, 'auto' means none, and every mode fits.
    """
    estimates = {mode: estimate(profile, frame, mode) for mode in MODES}
    if free_bytes is None:
        mode = "none" if wanted == "auto" else wanted
        return MemoryPlan(mode, estimates[mode], None, True)
    fitting = [mode for mode in MODES if estimates[mode].with_headroom <= free_bytes]
    mode = wanted if wanted != "auto" else (fitting[0] if fitting else MODES[-1])
    chosen = estimates[mode]
    if mode in fitting:
        return MemoryPlan(mode, chosen, free_bytes, True)
    need = f"memory_mode {mode} needs about {gib(chosen.with_headroom)} but {device} has {gib(free_bytes)} free"
    if fitting:
        better = estimates[fitting[0]]
        advice = f"{need}; set backend.memory_mode to {fitting[0]} (about {gib(better.with_headroom)})."
    elif not frame.vae_tiling and chosen.phases["decode"] >= chosen.phases["step"]:
        advice = f"{need}; turn on backend.vae_tiling, lower the frame size, or close other GPU programs."
    else:
        advice = f"{need}; lower the frame size or close other GPU programs."
    return MemoryPlan(mode, chosen, free_bytes, False, advice)
