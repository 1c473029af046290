"""WebUI-style `parameters` text for frame PNGs, so the WebUI's PNG Info tab reads them.

Format as A1111 writes it (modules/processing.py create_infotext): prompt line, a
"Negative prompt:" line, then "Key: value" pairs joined by ", "; values holding commas
are quoted. The ControlNet unit is written as sd-webui-controlnet writes it ("ControlNet 0").
"""

from __future__ import annotations

import json
from pathlib import Path

from . import __version__
from .prompt_text import prompt_with_loras
from .spec import JobSpec


def _quote(value: str) -> str:
    return json.dumps(value) if ("," in value or ":" in value or "\n" in value) else value


def _model_name(name: str) -> str:
    """A model file as the WebUI names it in infotext: 'char.safetensors' -> 'char'."""
    return Path(name).stem if name.endswith(".safetensors") else name


def controlnet_infotext(spec: JobSpec) -> str:
    cn = spec.controlnet
    module = "none" if cn.preprocessor == "ours" else "canny"
    fields = [
        ("Module", module),
        ("Model", cn.model),
        ("Weight", f"{cn.weight:g}"),
        ("Resize Mode", "Just Resize"),
        ("Processor Res", "512"),
        ("Threshold A", str(cn.low_threshold)),
        ("Threshold B", str(cn.high_threshold)),
        ("Guidance Start", f"{cn.guidance_start:g}"),
        ("Guidance End", f"{cn.guidance_end:g}"),
        ("Pixel Perfect", str(cn.pixel_perfect)),
        ("Control Mode", cn.control_mode),
    ]
    return ", ".join(f"{k}: {v}" for k, v in fields)


def build_parameters(spec: JobSpec, seed: int, frame_index: int, extra: dict[str, str] | None = None) -> str:
    prompt = prompt_with_loras(spec.prompt, [(_model_name(lora.name), lora.weight) for lora in spec.model.loras])
    pairs: dict[str, str] = {
        "Steps": str(spec.sampling.steps),
        "Sampler": spec.sampling.sampler,
        "Schedule type": spec.sampling.scheduler,
        "CFG scale": f"{spec.sampling.cfg_scale:g}",
        "Seed": str(seed),
        "Size": f"{spec.size.width}x{spec.size.height}",
        "Model": _model_name(spec.model.checkpoint),
        "Denoising strength": f"{spec.sampling.denoise:g}",
    }
    if spec.controlnet.enabled:
        pairs["ControlNet 0"] = json.dumps(controlnet_infotext(spec))
    pairs["Vidstyle frame"] = str(frame_index)
    pairs.update(extra or {})
    pairs["Version"] = f"vidstyle {__version__}"
    tail = ", ".join(f"{k}: {v if k == 'ControlNet 0' else _quote(v)}" for k, v in pairs.items())
    lines = [prompt]
    if spec.negative_prompt:
        lines.append(f"Negative prompt: {spec.negative_prompt}")
    lines.append(tail)
    return "\n".join(lines)
