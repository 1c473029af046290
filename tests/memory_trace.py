"""Peak activation memory of a real architecture, measured by tracing it on the `meta` device.

A TorchDispatchMode sees every tensor an op creates; a weakref finalizer sees it freed. The
running sum of live bytes, and its maximum, is what the forward pass needs on top of the
weights, computed without allocating anything. Used to check the analytic estimate in
`vidstyle.backends.diffusers_memory` against the models themselves.
"""

from __future__ import annotations

import weakref
from collections.abc import Callable
from typing import Any

import torch
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_flatten


class LiveBytes(TorchDispatchMode):
    """Tracks the bytes of tensors created inside the mode and still alive; `peak` is the maximum."""

    def __init__(self) -> None:
        super().__init__()
        self.live = 0
        self.peak = 0
        self._alive: set[int] = set()

    def _freed(self, key: int, size: int) -> None:
        self._alive.discard(key)
        self.live -= size

    def __torch_dispatch__(self, func: Any, types: Any, args: Any = (), kwargs: Any = None) -> Any:
        out = func(*args, **(kwargs or {}))
        for tensor in tree_flatten(out)[0]:
            # views and in-place results share storage that is already counted
            if not isinstance(tensor, torch.Tensor) or tensor._base is not None or id(tensor) in self._alive:
                continue
            size = tensor.numel() * tensor.element_size()
            self._alive.add(id(tensor))
            self.live += size
            weakref.finalize(tensor, self._freed, id(tensor), size)
        self.peak = max(self.peak, self.live)
        return out


def peak_bytes(run: Callable[[], Any]) -> int:
    """Peak live bytes of the tensors `run` creates (its result is dropped at once)."""
    with torch.inference_mode(), LiveBytes() as mode:
        run()
    return mode.peak


def traced_phases(modules: dict[str, Any], width: int, height: int, dtype: torch.dtype) -> dict[str, int]:
    """Peak activation bytes of each phase of one img2img frame: a CFG step of UNet (+ ControlNet),
    the VAE encode and the VAE decode.

    `modules` are meta-device models (vidstyle.sd_architectures.build_modules); the VAE runs
    in fp32 when its config forces an upcast, as diffusers' SDXL pipelines do.
    """
    unet, vae, controlnet = modules["unet"].to(dtype), modules["vae"], modules.get("controlnet")
    if controlnet is not None:  # cast outside the traced region: new weights are not activations
        controlnet = controlnet.to(dtype)
    vae_dtype = torch.float32 if vae.config.force_upcast else dtype
    vae = vae.to(vae_dtype)
    latent = (height // 8, width // 8)
    meta = {"device": "meta", "dtype": dtype}
    batch = 2  # classifier-free guidance: conditional + unconditional in one batch

    def step() -> Any:
        sample = torch.empty((batch, 4, *latent), **meta)
        text = torch.empty((batch, 77, unet.config.cross_attention_dim), **meta)
        timestep = torch.empty((batch,), device="meta", dtype=torch.long)
        extra: dict[str, Any] = {}
        if unet.config.addition_embed_type == "text_time":
            extra["added_cond_kwargs"] = {
                "text_embeds": torch.empty((batch, 1280), **meta),
                "time_ids": torch.empty((batch, 6), **meta),
            }
        residuals: dict[str, Any] = {}
        if controlnet is not None:
            hint = torch.empty((batch, 3, height, width), **meta)
            down, mid = controlnet(sample, timestep, text, hint, return_dict=False, **extra)
            residuals = {"down_block_additional_residuals": down, "mid_block_additional_residual": mid}
        return unet(sample, timestep, text, return_dict=False, **extra, **residuals)

    def encode() -> Any:
        return vae.encode(torch.empty((1, 3, height, width), device="meta", dtype=vae_dtype)).latent_dist.mean

    def decode() -> Any:
        return vae.decode(torch.empty((1, 4, *latent), device="meta", dtype=vae_dtype)).sample

    return {"step": peak_bytes(step), "encode": peak_bytes(encode), "decode": peak_bytes(decode)}
