"""JobSpec: everything that decides a frame's pixels, declared once with bounds and help.

The CLI options and the gradio tab are generated from these declarations (default,
bounds, description), as ComfyUI v3 nodes do; presets are TOML files of the same shape.
A frame's output is a pure function of (spec, frame index, attempt).
"""

from __future__ import annotations

import copy
import random
from pathlib import Path
from typing import Any, Dict, List, Literal, Mapping, Optional

import tomli_w

from .compat import BaseModel, Extra, Field, ValidationError, describe_validation_error, root_validator, tomllib, validator
from .errors import SpecError, UserInputError

PRESET_DIR = Path(__file__).resolve().parent.parent / "presets" / "video"
SEED_MAX = 2**32 - 1

# Sampler names as the WebUI shows them; every backend maps these (diffusers to schedulers,
# the WebUI API passes them through after checking /sdapi/v1/samplers).
SAMPLERS = ("Euler a", "Euler", "DPM++ 2M Karras", "DPM++ 2M", "DPM++ SDE Karras", "DDIM", "UniPC")
CONTROL_MODES = ("Balanced", "My prompt is more important", "ControlNet is more important")
FIT_MODES = ("crop", "pad", "stretch")


class SpecModel(BaseModel):
    class Config:
        extra = Extra.forbid
        validate_assignment = True


class SourceSpec(SpecModel):
    path: str = Field("", description="Video file, or a folder of PNG/JPG frames (sorted by name).")
    start_time: Optional[float] = Field(None, ge=0, description="First second to use (default: the start).")
    end_time: Optional[float] = Field(None, ge=0, description="Last second to use, exclusive (default: the end).")
    start_frame: Optional[int] = Field(None, ge=0, description="First source frame index to use.")
    end_frame: Optional[int] = Field(None, ge=0, description="Source frame index to stop before.")
    every_nth: int = Field(1, ge=1, le=1000, description="Use every Nth source frame (output fps = source fps / N).")
    target_fps: Optional[float] = Field(
        None, gt=0, le=240, description="Resample to this frame rate by time (handles variable-fps sources)."
    )
    sequence_fps: float = Field(30.0, gt=0, le=240, description="Frame rate assumed for a folder of frames.")

    @root_validator(skip_on_failure=True)
    def _ranges(cls, values: Dict[str, Any]) -> Dict[str, Any]:
        if values.get("start_time") is not None and values.get("end_time") is not None:
            if values["end_time"] <= values["start_time"]:
                raise ValueError("end_time must be after start_time")
        if values.get("start_frame") is not None and values.get("end_frame") is not None:
            if values["end_frame"] <= values["start_frame"]:
                raise ValueError("end_frame must be after start_frame")
        if values.get("target_fps") is not None and values.get("every_nth", 1) != 1:
            raise ValueError("choose either every_nth or target_fps, not both")
        return values


class SizeSpec(SpecModel):
    width: int = Field(512, ge=64, le=2048, multiple_of=8, description="Output width in pixels (multiple of 8).")
    height: int = Field(512, ge=64, le=2048, multiple_of=8, description="Output height in pixels (multiple of 8).")
    fit: Literal["crop", "pad", "stretch"] = Field(
        "crop", description="How a source of another aspect ratio fits: crop the sides, pad with black, or stretch."
    )


class LoraRef(SpecModel):
    name: str = Field(..., min_length=1, description="LoRA name as the WebUI lists it, or a .safetensors path.")
    weight: float = Field(0.8, ge=-4, le=4, description="LoRA strength (<lora:name:weight> in the WebUI).")


class ModelSpec(SpecModel):
    checkpoint: str = Field(
        "tiny",
        description="Checkpoint: a .safetensors file or diffusers folder (standalone), a WebUI model name, "
        "or 'tiny' for the built-in random-weight test model.",
    )
    loras: List[LoraRef] = Field(default_factory=list, description="LoRAs applied with their weights.")


class ControlNetSpec(SpecModel):
    enabled: bool = Field(True, description="Guide every frame with a canny ControlNet unit.")
    model: str = Field(
        "control_v11p_sd15_canny",
        description="ControlNet canny model: a file/folder (standalone), a name from the WebUI's model list, or 'tiny'.",
    )
    weight: float = Field(1.0, ge=0, le=2, description="ControlNet weight (conditioning scale).")
    guidance_start: float = Field(0.0, ge=0, le=1, description="Fraction of the steps where ControlNet starts.")
    guidance_end: float = Field(1.0, ge=0, le=1, description="Fraction of the steps where ControlNet stops.")
    control_mode: Literal["Balanced", "My prompt is more important", "ControlNet is more important"] = Field(
        "Balanced", description="How prompt and ControlNet are balanced (sd-webui-controlnet's control mode)."
    )
    low_threshold: int = Field(100, ge=0, le=255, description="Canny low threshold.")
    high_threshold: int = Field(200, ge=0, le=255, description="Canny high threshold.")
    blur: int = Field(0, ge=0, le=31, description="Gaussian blur kernel before canny (0 = none; odd sizes).")
    preprocessor: Literal["ours", "server"] = Field(
        "ours",
        description="'ours': send our canny map (module none); 'server': let the WebUI run its canny module.",
    )
    pixel_perfect: bool = Field(False, description="Let the WebUI pick the preprocessor resolution.")

    @root_validator(skip_on_failure=True)
    def _cross(cls, values: Dict[str, Any]) -> Dict[str, Any]:
        if values["guidance_end"] <= values["guidance_start"]:
            raise ValueError("guidance_end must be greater than guidance_start")
        if values["high_threshold"] < values["low_threshold"]:
            raise ValueError("high_threshold must be at least low_threshold")
        if values["blur"] and values["blur"] % 2 == 0:
            raise ValueError("blur must be an odd kernel size (or 0 for none)")
        return values


class SamplingSpec(SpecModel):
    denoise: float = Field(0.5, ge=0, le=1, description="Denoising strength: how far each frame may move from the source.")
    steps: int = Field(20, ge=1, le=150, description="Sampling steps.")
    cfg_scale: float = Field(7.0, ge=1, le=30, description="Classifier-free guidance scale (CFG).")
    sampler: str = Field("Euler a", description="Sampler, by its WebUI name: " + ", ".join(SAMPLERS) + ".")
    scheduler: str = Field("Automatic", description="WebUI 1.9+ schedule type (Automatic, Karras, ...).")
    seed: int = Field(-1, ge=-1, le=SEED_MAX, description="Seed; -1 picks one when the job is created.")
    seed_policy: Literal["fixed", "per_frame"] = Field(
        "fixed", description="'fixed': the same seed every frame (steadier video); 'per_frame': seed + frame index."
    )


class BackendSpec(SpecModel):
    kind: Literal["diffusers", "webui_api", "webui_local", "passthrough"] = Field(
        "diffusers",
        description="Where frames render: standalone diffusers, running WebUIs over HTTP, inside the WebUI, "
        "or passthrough (no model; for benchmarks and dry runs).",
    )
    device: str = Field("auto", description="diffusers device: auto (CUDA when present), cpu, cuda, cuda:1, ...")
    webui_urls: List[str] = Field(default_factory=list, description="WebUI base URLs for the HTTP backend.")
    webui_auth: Optional[str] = Field(None, description="user:pass for a WebUI started with --api-auth.")
    requests_per_server: int = Field(1, ge=1, le=16, description="Requests in flight per WebUI server.")
    timeout: float = Field(600.0, gt=0, description="Seconds before one img2img request counts as failed.")

    @validator("webui_auth")
    def _auth_shape(cls, value: Optional[str]) -> Optional[str]:
        if value is not None and ":" not in value:
            raise ValueError("webui_auth must look like user:password")
        return value


class EncodeSpec(SpecModel):
    crf: int = Field(18, ge=0, le=51, description="H.264 quality (lower is better; 18 looks lossless).")
    preset: Literal["ultrafast", "superfast", "veryfast", "faster", "fast", "medium", "slow", "slower", "veryslow"] = Field(
        "veryfast", description="x264 speed preset: at a given CRF, slower presets only make the file smaller."
    )
    fps: Optional[float] = Field(None, gt=0, le=240, description="Output fps (default: the selection's fps).")
    keep_audio: bool = Field(True, description="Copy the source audio (trimmed to the selection) into result.mp4.")


class JobSpec(SpecModel):
    version: int = Field(1, description="JobSpec format version.")
    source: SourceSpec = Field(default_factory=SourceSpec)
    size: SizeSpec = Field(default_factory=SizeSpec)
    prompt: str = Field("", description="Prompt for every frame (LoRAs are added by the backend).")
    negative_prompt: str = Field("", description="Negative prompt for every frame.")
    model: ModelSpec = Field(default_factory=ModelSpec)
    controlnet: ControlNetSpec = Field(default_factory=ControlNetSpec)
    sampling: SamplingSpec = Field(default_factory=SamplingSpec)
    backend: BackendSpec = Field(default_factory=BackendSpec)
    encode: EncodeSpec = Field(default_factory=EncodeSpec)

    def to_toml(self) -> str:
        return tomli_w.dumps(_drop_none(self.dict()))

    def with_overrides(self, overrides: Mapping[str, Any]) -> "JobSpec":
        data = self.dict()
        for dotted, value in overrides.items():
            set_dotted(data, dotted, value)
        return build_spec(data, what="overrides")

    def resolved(self) -> "JobSpec":
        """Pin down choices made at creation (the seed), so resume gives the same pixels."""
        if self.sampling.seed != -1:
            return self
        return self.with_overrides({"sampling.seed": random.SystemRandom().randint(0, SEED_MAX)})


def frame_seed(spec: JobSpec, frame_index: int, attempt: int) -> int:
    """The seed for one frame attempt: a pure function of spec, index and attempt.

    Attempt 0 uses the policy's seed; each redo attempt shifts it by a large odd number
    so a re-render of a broken frame explores a new sample unless the user sets a seed.
    """
    base = spec.sampling.seed
    if base < 0:
        raise SpecError("The job's seed is not resolved; create the job through vidstyle.job.")
    if spec.sampling.seed_policy == "per_frame":
        base += frame_index
    return (base + attempt * 1_000_003) % (SEED_MAX + 1)


def _drop_none(value: Any) -> Any:
    """TOML has no null: leave unset optional values out."""
    if isinstance(value, dict):
        return {k: _drop_none(v) for k, v in value.items() if v is not None}
    if isinstance(value, list):
        return [_drop_none(v) for v in value]
    return value


def set_dotted(data: Dict[str, Any], dotted: str, value: Any) -> None:
    """Set `a.b.c` in nested dicts, creating sections a preset left out."""
    keys = dotted.split(".")
    node = data
    for key in keys[:-1]:
        node = node.setdefault(key, {})
        if not isinstance(node, dict):
            raise SpecError(f"Unknown setting '{dotted}': '{key}' is not a section.")
    node[keys[-1]] = value


def deep_merge(base: Dict[str, Any], top: Mapping[str, Any]) -> Dict[str, Any]:
    merged = copy.deepcopy(base)
    for key, value in top.items():
        if isinstance(value, Mapping) and isinstance(merged.get(key), dict):
            merged[key] = deep_merge(merged[key], value)
        else:
            merged[key] = copy.deepcopy(value)
    return merged


def build_spec(data: Mapping[str, Any], what: str = "job spec") -> JobSpec:
    try:
        return JobSpec.parse_obj(data)
    except ValidationError as exc:
        raise SpecError(describe_validation_error(exc, what)) from None


def presets_in(folder: Path) -> List[str]:
    return sorted(p.stem for p in folder.glob("*.toml"))


def find_preset(folder: Path, name_or_path: str, what: str = "preset") -> Path:
    """A preset by name from `folder`, or any .toml path; an unknown name lists the choices."""
    candidate = Path(name_or_path)
    if candidate.suffix == ".toml" and candidate.is_file():
        return candidate
    named = folder / f"{name_or_path}.toml"
    if named.is_file():
        return named
    choices = ", ".join(presets_in(folder)) or "(none found)"
    raise UserInputError(f"Unknown {what} '{name_or_path}'; choose one of: {choices}, or give a .toml path.")


def list_presets() -> List[str]:
    return presets_in(PRESET_DIR)


def preset_path(name_or_path: str) -> Path:
    return find_preset(PRESET_DIR, name_or_path)


def read_toml(path: Path, what: str) -> Dict[str, Any]:
    try:
        with open(path, "rb") as handle:
            return tomllib.load(handle)
    except OSError as exc:
        raise UserInputError(f"Cannot read {what} {path}: {exc.strerror}.") from None
    except tomllib.TOMLDecodeError as exc:
        raise SpecError(f"{what.capitalize()} {path} is not valid TOML: {exc}.") from None


def load_spec(preset: Optional[str] = None, overrides: Optional[Mapping[str, Any]] = None) -> JobSpec:
    """Preset (name or path) + dotted overrides -> validated JobSpec."""
    data: Dict[str, Any] = {}
    what = "job spec"
    if preset:
        path = preset_path(preset)
        data = read_toml(path, "preset")
        what = f"preset {path.name}"
    for dotted, value in (overrides or {}).items():
        set_dotted(data, dotted, value)
    return build_spec(data, what=what)


def field_info(dotted: str) -> Dict[str, Any]:
    """Default, bounds and help of one spec field, for generating CLI options and widgets."""
    model: Any = JobSpec
    keys = dotted.split(".")
    for key in keys[:-1]:
        model = model.__fields__[key].type_
    field = model.__fields__[keys[-1]]
    info = field.field_info
    bounds = {name: getattr(info, name, None) for name in ("ge", "gt", "le", "lt", "multiple_of")}
    choices = getattr(field.outer_type_, "__args__", None) if "Literal" in str(field.outer_type_) else None
    return {
        "name": dotted,
        "default": field.default,
        "type": field.type_,
        "help": info.description or "",
        "choices": list(choices) if choices else None,
        **{k: v for k, v in bounds.items() if v is not None},
    }
