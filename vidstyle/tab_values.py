"""The tab's widget values and JobSpec, both ways: pure helpers with no gradio import.

ui.py builds the gradio widgets and calls these; tests and other front ends import them
directly, without gradio installed.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from .backends.webui_preflight import find_listed
from .render import redo_may_change
from .samplers import SAMPLERS
from .spec import DEFAULT_PRESET, JobSpec, field_info, load_spec

# Widget keys that are not JobSpec fields (they are turned into fields by values_to_spec).
UPLOAD = "ui.upload"
PRESET = "ui.preset"
JOB_NAME = "ui.job_name"
LORA_NAMES = "ui.lora_names"
LORA_WEIGHT = "ui.lora_weight"
WEBUI_URLS = "ui.webui_urls"

# Nicer labels than the field names; help, bounds and defaults still come from the spec.
LABELS = {
    "source.path": "Video path on this machine (used when nothing is uploaded)",
    "source.start_time": "Start (s)",
    "source.end_time": "End (s)",
    "source.start_frame": "Start frame",
    "source.end_frame": "End frame (exclusive)",
    "source.every_nth": "Every Nth frame",
    "source.target_fps": "Resample to fps",
    "size.width": "Width",
    "size.height": "Height",
    "size.fit": "Fit",
    "prompt": "Prompt",
    "negative_prompt": "Negative prompt",
    "model.checkpoint": "Checkpoint",
    "controlnet.model": "ControlNet model",
    "controlnet.enabled": "ControlNet canny",
    "controlnet.weight": "ControlNet weight",
    "controlnet.guidance_start": "Guidance start",
    "controlnet.guidance_end": "Guidance end",
    "controlnet.control_mode": "Control mode",
    "controlnet.low_threshold": "Canny low threshold",
    "controlnet.high_threshold": "Canny high threshold",
    "controlnet.blur": "Blur before canny",
    "controlnet.preprocessor": "Canny map from",
    "controlnet.pixel_perfect": "Pixel perfect",
    "sampling.denoise": "Denoising strength",
    "sampling.steps": "Sampling steps",
    "sampling.cfg_scale": "CFG scale",
    "sampling.sampler": "Sampler",
    "sampling.scheduler": "Schedule type",
    "sampling.seed": "Seed",
    "sampling.seed_policy": "Seed policy",
    "encode.crf": "Video quality (CRF)",
    "encode.preset": "Encoder speed",
    "encode.fps": "Output fps",
    "encode.keep_audio": "Keep audio",
    "backend.kind": "Render with",
    "backend.device": "Device",
    "backend.memory_mode": "GPU memory mode",
    "backend.vae_slicing": "VAE slicing",
    "backend.vae_tiling": "VAE tiling",
    "backend.attention": "Attention",
    "backend.compile": "torch.compile",
    "backend.ray_address": "Ray cluster",
    "backend.ray_workers": "Ray workers",
    "backend.ray_gpus_per_worker": "GPUs per Ray worker",
    "model.loras.weight": "LoRA weight",
    "coherence.mode": "Coherence mode",
    "coherence.flow_denoise": "Flow denoise",
    "coherence.source_mix": "Source mix",
    "coherence.keyframe_interval": "Keyframe every K frames",
    "coherence.coverage_threshold": "Fill coverage needed",
    "coherence.color_match": "Colour matching",
    "coherence.color_match_strength": "Colour matching strength",
    "coherence.deflicker": "Deflicker",
    "coherence.deflicker_window": "Deflicker window (frames)",
    "coherence.scene_cuts": "Restart at scene cuts",
    "coherence.scene_cut_z": "Scene cut threshold (z)",
}
# Slider steps where 1/100 of the range is not what a user wants.
STEPS = {
    "sampling.cfg_scale": 0.5,
    "controlnet.weight": 0.05,
    "sampling.denoise": 0.01,
    "coherence.flow_denoise": 0.01,
    "coherence.source_mix": 0.01,
    "coherence.scene_cut_z": 0.5,
}
# Numbers with a range this wide get a number box instead of a slider (seeds, timeouts).
MAX_SLIDER_SPAN = 4096
# Optional numbers where an empty box (or 0, which gradio 3 sends for a cleared box) means "not set".
UNSET_WHEN_ZERO = {
    "source.start_time",
    "source.end_time",
    "source.start_frame",
    "source.end_frame",
    "source.target_fps",
    "encode.fps",
    "backend.ray_workers",
}
# Pickers over the host's own model lists: they start on a model the host has, never on a
# preset's name it lacks (a job would only fail at preflight).
MODEL_PICKERS = ("model.checkpoint", "controlnet.model")
NONE_FOUND = "None found: put one in the models folder, then press Refresh lists. "


@dataclass
class UiChoices:
    """What the host offers in the pickers; callables so a refresh button can ask again."""

    checkpoints: Callable[[], list[str]]
    loras: Callable[[], list[str]]
    controlnet_models: Callable[[], list[str]]
    samplers: Callable[[], list[str]] = field(default=lambda: list(SAMPLERS))
    default_preset: str = DEFAULT_PRESET
    gallery_size: int = 8
    # None: the tab shows a backend picker (standalone); else every job uses this kind (e.g. webui_local).
    backend_kind: str | None = None


# --------------------------------------------------------------------------- pure helpers


def field_kind(dotted: str) -> type | None:
    """bool, int, float or str for a field (pydantic gives constrained subclasses such as ConstrainedIntValue)."""
    declared = field_info(dotted)["type"]
    if isinstance(declared, type):
        for base in (bool, int, float, str):  # bool first: it is an int subclass
            if issubclass(declared, base):
                return base
    return None


def _is_unset(value: Any) -> bool:
    return value is None or (isinstance(value, str) and not value.strip())


def _clean(dotted: str, value: Any) -> Any:
    """Widget value -> spec value: empty optional boxes unset, whole floats to int fields."""
    if dotted in UNSET_WHEN_ZERO and (_is_unset(value) or value == 0):
        return None
    if field_kind(dotted) is int and isinstance(value, float) and value.is_integer():
        return int(value)
    return value


def values_to_spec(values: Mapping[str, Any], backend_kind: str | None = None) -> JobSpec:
    """THE one place widget values become a JobSpec: preset + every widget as an override.

    `values` maps dotted JobSpec names (and the ui.* keys above) to widget values; fields
    without a widget keep the preset's value. Raises SpecError naming the bad key.
    """
    overrides: dict[str, Any] = {}
    for key, value in values.items():
        if key.startswith("ui."):
            continue
        overrides[key] = _clean(key, value)
    upload = values.get(UPLOAD)
    if upload:
        overrides["source.path"] = str(getattr(upload, "name", upload))  # gradio 3 files carry .name
    elif isinstance(overrides.get("source.path"), str):
        overrides["source.path"] = overrides["source.path"].strip()
    if LORA_NAMES in values:
        weight = float(values.get(LORA_WEIGHT) or 0.8)
        overrides["model.loras"] = [{"name": name, "weight": weight} for name in values[LORA_NAMES] or []]
    if WEBUI_URLS in values:
        text = values.get(WEBUI_URLS) or ""
        overrides["backend.webui_urls"] = [u.strip() for u in text.replace(",", "\n").splitlines() if u.strip()]
    if backend_kind:
        overrides["backend.kind"] = backend_kind
    return load_spec(values.get(PRESET) or None, overrides)


def spec_to_values(spec: JobSpec, keys: Sequence[str]) -> dict[str, Any]:
    """The inverse, for loading a preset into the widgets."""
    data = spec.dict()
    values: dict[str, Any] = {}
    for key in keys:
        if key == LORA_NAMES:
            values[key] = [lora.name for lora in spec.model.loras]
        elif key == LORA_WEIGHT:
            values[key] = spec.model.loras[0].weight if spec.model.loras else 0.8
        elif key == WEBUI_URLS:
            values[key] = "\n".join(spec.backend.webui_urls)
        elif not key.startswith("ui."):
            node: Any = data
            for part in key.split("."):
                node = node[part]
            values[key] = node
    return values


def redo_overrides(spec: JobSpec) -> dict[str, Any]:
    """The settings a redo may change (prompt, models, ControlNet strength, sampling), as dotted keys."""
    flat: dict[str, Any] = {}

    def walk(prefix: str, node: Any) -> None:
        if isinstance(node, dict):
            for key, value in node.items():
                walk(f"{prefix}{key}." if isinstance(value, dict) else f"{prefix}{key}", value)
        else:
            flat[prefix] = node

    walk("", spec.dict())
    allowed = {k: v for k, v in flat.items() if redo_may_change(k)}
    if allowed.get("sampling.seed") == -1:
        allowed.pop("sampling.seed")  # -1 would mean "pick one"; a redo keeps the job's seed instead
    return allowed


def slider_step(dotted: str, info: Mapping[str, Any]) -> float:
    if dotted in STEPS:
        return STEPS[dotted]
    if field_kind(dotted) is int:
        return info.get("multiple_of") or 1
    return 0.01


def existing_model(wanted: str | None, listed: Sequence[str]) -> str | None:
    """The listed model `wanted` names, else the first one listed, else None (the host has none)."""
    match = find_listed(wanted, listed) if wanted else None
    return match if match is not None else (listed[0] if listed else None)


def union_of(first: list[str], more: list[str]) -> list[str]:
    return list(first) + [name for name in more if name not in first]
