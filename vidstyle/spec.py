"""JobSpec: everything that decides a frame's pixels, declared once with bounds and help.

The CLI options and the gradio tab are generated from these declarations (default,
bounds, description), as ComfyUI v3 nodes do; presets are TOML files of the same shape.
A frame's output is a pure function of (spec, frame index, attempt).
"""

from __future__ import annotations

import copy
import random
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal

import tomli_w

from .compat import BaseModel, Extra, Field, ValidationError, root_validator, validator
from .errors import SpecError, UserInputError
from .overrides import describe_validation_error, read_toml
from .samplers import SAMPLERS  # the one sampler table's names; also imported from here by the tab and tests

PRESET_DIR = Path(__file__).resolve().parent.parent / "presets" / "video"
# The preset every entry point starts from when none is named (the CLI, the tab, the job API);
# inside the WebUI its "Default preset" setting takes this place.
DEFAULT_PRESET = "anime-canny-sd15"
SEED_MAX = 2**32 - 1

CONTROL_MODES = ("Balanced", "My prompt is more important", "ControlNet is more important")
FIT_MODES = ("crop", "pad", "stretch")


class SpecModel(BaseModel):
    class Config:
        extra = Extra.forbid
        validate_assignment = True


class SourceSpec(SpecModel):
    path: str = Field(default="", description="Video file, or a folder of PNG/JPG frames (sorted by name).")
    start_time: float | None = Field(default=None, ge=0, description="First second to use (default: the start).")
    end_time: float | None = Field(default=None, ge=0, description="Last second to use, exclusive (default: the end).")
    start_frame: int | None = Field(default=None, ge=0, description="First source frame index to use.")
    end_frame: int | None = Field(default=None, ge=0, description="Source frame index to stop before.")
    every_nth: int = Field(
        default=1, ge=1, le=1000, description="Use every Nth source frame (output fps = source fps / N)."
    )
    target_fps: float | None = Field(
        default=None, gt=0, le=240, description="Resample to this frame rate by time (handles variable-fps sources)."
    )
    sequence_fps: float = Field(default=30.0, gt=0, le=240, description="Frame rate assumed for a folder of frames.")

    @root_validator(skip_on_failure=True)
    def _ranges(cls, values: dict[str, Any]) -> dict[str, Any]:
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
    width: int = Field(
        default=512, ge=64, le=2048, multiple_of=8, description="Output width in pixels (multiple of 8)."
    )
    height: int = Field(
        default=512, ge=64, le=2048, multiple_of=8, description="Output height in pixels (multiple of 8)."
    )
    fit: Literal["crop", "pad", "stretch"] = Field(
        default="crop",
        description="How a source of another aspect ratio fits: crop the sides, pad with black, or stretch.",
    )


class LoraRef(SpecModel):
    name: str = Field(..., min_length=1, description="LoRA name as the WebUI lists it, or a .safetensors path.")
    weight: float = Field(default=0.8, ge=-4, le=4, description="LoRA strength (<lora:name:weight> in the WebUI).")


class ModelSpec(SpecModel):
    checkpoint: str = Field(
        default="tiny",
        description="Checkpoint: a .safetensors file or diffusers folder (standalone), a WebUI model name, "
        "or 'tiny' for the built-in random-weight test model.",
    )
    loras: list[LoraRef] = Field(default_factory=list, description="LoRAs applied with their weights.")


class ControlNetSpec(SpecModel):
    enabled: bool = Field(default=True, description="Guide every frame with a canny ControlNet unit.")
    model: str = Field(
        default="control_v11p_sd15_canny",
        description="ControlNet canny model: a file/folder (standalone), a name from the WebUI's model list, or "
        "'tiny'.",
    )
    weight: float = Field(default=1.0, ge=0, le=2, description="ControlNet weight (conditioning scale).")
    guidance_start: float = Field(default=0.0, ge=0, le=1, description="Fraction of the steps where ControlNet starts.")
    guidance_end: float = Field(default=1.0, ge=0, le=1, description="Fraction of the steps where ControlNet stops.")
    control_mode: Literal["Balanced", "My prompt is more important", "ControlNet is more important"] = Field(
        default="Balanced", description="How prompt and ControlNet are balanced (sd-webui-controlnet's control mode)."
    )
    low_threshold: int = Field(default=100, ge=0, le=255, description="Canny low threshold.")
    high_threshold: int = Field(default=200, ge=0, le=255, description="Canny high threshold.")
    blur: int = Field(default=0, ge=0, le=31, description="Gaussian blur kernel before canny (0 = none; odd sizes).")
    preprocessor: Literal["ours", "server"] = Field(
        default="ours",
        description="'ours': send our canny map (module none); 'server': let the WebUI run its canny module.",
    )
    pixel_perfect: bool = Field(default=False, description="Let the WebUI pick the preprocessor resolution.")

    @root_validator(skip_on_failure=True)
    def _cross(cls, values: dict[str, Any]) -> dict[str, Any]:
        if values["guidance_end"] <= values["guidance_start"]:
            raise ValueError("guidance_end must be greater than guidance_start")
        if values["high_threshold"] < values["low_threshold"]:
            raise ValueError("high_threshold must be at least low_threshold")
        if values["blur"] and values["blur"] % 2 == 0:
            raise ValueError("blur must be an odd kernel size (or 0 for none)")
        return values


class SamplingSpec(SpecModel):
    denoise: float = Field(
        default=0.5, ge=0, le=1, description="Denoising strength: how far each frame may move from the source."
    )
    steps: int = Field(default=20, ge=1, le=150, description="Sampling steps.")
    cfg_scale: float = Field(default=7.0, ge=1, le=30, description="Classifier-free guidance scale (CFG).")
    sampler: str = Field(default="Euler a", description="Sampler, by its WebUI name: " + ", ".join(SAMPLERS) + ".")
    scheduler: str = Field(default="Automatic", description="WebUI 1.9+ schedule type (Automatic, Karras, ...).")
    seed: int = Field(default=-1, ge=-1, le=SEED_MAX, description="Seed; -1 picks one when the job is created.")
    seed_policy: Literal["fixed", "per_frame"] = Field(
        default="fixed",
        description="'fixed': the same seed every frame (steadier video); 'per_frame': seed + frame index.",
    )


class BackendSpec(SpecModel):
    kind: Literal["diffusers", "webui_api", "webui_local", "passthrough", "ray", "simulated"] = Field(
        default="diffusers",
        description="Where frames render: standalone diffusers, running WebUIs over HTTP, inside the WebUI, "
        "passthrough (no model; for benchmarks and dry runs), ray (diffusers workers on a Ray cluster), or "
        "simulated (a SIMULATION of img2img, no model: for tests and benchmarks of temporal coherence only).",
    )
    device: str = Field(
        default="auto", description="diffusers device: auto (CUDA when present), cpu, cuda, cuda:1, ..."
    )
    # diffusers memory/speed options. None of them changes pixels beyond float noise except
    # vae_tiling (seams are blended, but the decode differs), so `auto` never turns that on.
    memory_mode: Literal["auto", "none", "model_offload", "sequential_offload"] = Field(
        default="auto",
        description="diffusers GPU memory: none (all models on the GPU, fastest), model_offload (one model on the "
        "GPU at a time), sequential_offload (layer by layer: least memory, slowest), or auto (picked from the "
        "card's free memory).",
    )
    vae_slicing: bool = Field(
        default=False, description="diffusers: decode a batch one image at a time (less VAE memory)."
    )
    vae_tiling: bool = Field(
        default=False,
        description="diffusers: encode/decode large frames in overlapping tiles (much less VAE memory at 1024+).",
    )
    attention: Literal["auto", "xformers", "sdpa"] = Field(
        default="auto",
        description="diffusers attention: xformers (needs the xformers package), sdpa (PyTorch's own), "
        "or auto (xformers when installed, else sdpa).",
    )
    compile: bool = Field(
        default=False, description="diffusers: torch.compile the UNet and ControlNet (slow first frame, faster after)."
    )
    # Credentials are not a spec field: a spec is saved in job.toml and report.json. They come from
    # --webui-auth, VIDSTYLE_WEBUI_AUTH or the server's policy (see vidstyle.backends.webui_http).
    webui_urls: list[str] = Field(default_factory=list, description="WebUI base URLs for the HTTP backend.")
    # 2: one frame renders while the next waits in the WebUI's queue, so its GPU never waits
    # for our round trip (benchmarks/bench_http_scaling.py: ~0.77 of the GPU's time used with 1,
    # >= 0.99 with 2; 3 adds nothing but one more queued request a cancel has to stop).
    requests_per_server: int = Field(
        default=2,
        ge=1,
        le=16,
        description="Requests in flight per WebUI server: one rendering, the rest queued behind it.",
    )
    timeout: float = Field(default=600.0, gt=0, description="Seconds before one img2img request counts as failed.")
    # The ray backend runs the diffusers backend (and its options above) in every worker.
    ray_address: str = Field(
        default="auto",
        min_length=1,
        max_length=256,
        regex=r"^\S+$",
        description="Ray cluster to render on: auto (RAY_ADDRESS, else the cluster `ray start --head` started on "
        "this machine, else a local one for this job) or its address, e.g. 10.0.0.5:6379.",
    )
    ray_workers: int | None = Field(
        default=None,
        ge=1,
        le=1024,
        description="Ray workers, each holding the models once (default: one per GPU in the cluster, or one per CPU "
        "when it has none).",
    )
    ray_gpus_per_worker: float | None = Field(
        default=None,
        ge=0,
        le=16,
        description="GPUs each Ray worker reserves; a fraction shares a GPU (default: 1 when the cluster has GPUs, "
        "else 0).",
    )

    @validator("webui_urls", each_item=True)
    def _no_credentials_in_urls(cls, value: str) -> str:
        if "@" in value.split("://", 1)[-1].split("/", 1)[0]:
            raise ValueError("put the WebUI's user:password in --webui-auth or VIDSTYLE_WEBUI_AUTH, not in the URL")
        return value


class EncodeSpec(SpecModel):
    crf: int = Field(default=18, ge=0, le=51, description="H.264 quality (lower is better; 18 looks lossless).")
    preset: Literal["ultrafast", "superfast", "veryfast", "faster", "fast", "medium", "slow", "slower", "veryslow"] = (
        Field(
            default="veryfast",
            description="x264 speed preset: at a given CRF, slower presets only make the file smaller.",
        )
    )
    fps: float | None = Field(default=None, gt=0, le=240, description="Output fps (default: the selection's fps).")
    keep_audio: bool = Field(
        default=True, description="Copy the source audio (trimmed to the selection) into result.mp4."
    )


class RepairStep(SpecModel):
    """One repair attempt's changes, relative to the job's own settings (not to the previous attempt)."""

    new_seed: bool = Field(
        default=True, description="Sample with a new seed (each attempt gets its own); false keeps the job's seed."
    )
    denoise_delta: float = Field(
        default=0.0,
        ge=-1,
        le=1,
        description="Added to sampling.denoise; negative keeps the frame closer to the source.",
    )
    controlnet_weight_delta: float = Field(
        default=0.0, ge=-2, le=2, description="Added to controlnet.weight; positive follows the canny outlines more."
    )
    cfg_scale_delta: float = Field(default=0.0, ge=-29, le=29, description="Added to sampling.cfg_scale.")


def _default_repair_schedule() -> list[RepairStep]:
    return [RepairStep(), RepairStep(denoise_delta=-0.1, controlnet_weight_delta=0.2)]


class RepairSpec(SpecModel):
    enabled: bool = Field(
        default=False,
        description="After the render, re-render suspect frames (outliers in edge fidelity or warp error) and keep the "
        "best attempt.",
    )
    max_attempts: int = Field(
        default=2,
        ge=1,
        le=10,
        description="Repair attempts per suspect frame; past the schedule's end its last step repeats with a new seed.",
    )
    schedule: list[RepairStep] = Field(
        default_factory=_default_repair_schedule,
        min_items=1,
        max_items=10,
        description="What each repair attempt changes, in order.",
    )


def repair_schedule_problem(
    sampling: SamplingSpec, controlnet: ControlNetSpec, schedule: list[RepairStep]
) -> str | None:
    """Why a repair step would give settings the job could not use itself (never clamped), or None."""
    for number, step in enumerate(schedule, start=1):
        for name, value, low, high in (
            ("denoise", sampling.denoise + step.denoise_delta, 0.0, 1.0),
            ("controlnet weight", controlnet.weight + step.controlnet_weight_delta, 0.0, 2.0),
            ("cfg scale", sampling.cfg_scale + step.cfg_scale_delta, 1.0, 30.0),
        ):
            if not low - 1e-9 <= value <= high + 1e-9:
                return f"repair step {number} makes the {name} {value:g}, outside {low:g}-{high:g}; change its delta"
    return None


class CoherenceSpec(SpecModel):
    """How frames hang together over time; the defaults of the tuning values come from benchmarks/bench_temporal.py."""

    mode: Literal["independent", "flow", "keyframes"] = Field(
        default="independent",
        description="independent: every frame alone (flickers); flow: each frame starts from the previous output "
        "warped by optical flow; keyframes: render every Kth frame and fill the frames between by flow.",
    )
    flow_denoise: float = Field(
        default=0.3,
        ge=0,
        le=1,
        description="Denoising strength of flow-guided frames (and of in-between frames sent to img2img).",
    )
    source_mix: float = Field(
        default=0.1,
        ge=0,
        le=1,
        description="Share of the source frame mixed into a flow-guided init (keeps a long chain from drifting).",
    )
    keyframe_interval: int = Field(
        default=4, ge=2, le=1000, description="keyframes mode: render every Kth frame (and the last)."
    )
    coverage_threshold: float = Field(
        default=0.9,
        ge=0,
        le=1,
        description="keyframes mode: an in-between frame whose pixels the keyframes cover less than this goes to "
        "img2img.",
    )
    color_match: Literal["off", "first_frame", "keyframe"] = Field(
        default="off",
        description="Match each rendered frame's colours (LAB statistics) to its scene's first frame, or to the "
        "latest keyframe (every keyframe_interval frames), so the palette does not wander.",
    )
    color_match_strength: float = Field(
        default=1.0, ge=0, le=1, description="How fully colours are matched (0 = not at all)."
    )
    deflicker: bool = Field(
        default=False, description="Even out frame-to-frame brightness and colour flicker when encoding."
    )
    deflicker_window: int = Field(
        default=3,
        ge=1,
        le=60,
        description="Deflicker: frames on each side whose median colour statistics a frame is pulled to.",
    )
    scene_cuts: bool = Field(
        default=True, description="Detect scene cuts in the source and restart flow/keyframe chains there."
    )
    scene_cut_z: float = Field(
        default=8.0,
        ge=2,
        le=50,
        description="Scene cut sensitivity: how far (robust z-score) a frame change must stand out from the clip's "
        "own motion to count as a cut; lower finds more cuts.",
    )


class JobSpec(SpecModel):
    version: int = Field(default=1, description="JobSpec format version.")
    source: SourceSpec = Field(default_factory=SourceSpec)
    size: SizeSpec = Field(default_factory=SizeSpec)
    prompt: str = Field(default="", description="Prompt for every frame (LoRAs are added by the backend).")
    negative_prompt: str = Field(default="", description="Negative prompt for every frame.")
    model: ModelSpec = Field(default_factory=ModelSpec)
    controlnet: ControlNetSpec = Field(default_factory=ControlNetSpec)
    sampling: SamplingSpec = Field(default_factory=SamplingSpec)
    backend: BackendSpec = Field(default_factory=BackendSpec)
    encode: EncodeSpec = Field(default_factory=EncodeSpec)
    repair: RepairSpec = Field(default_factory=RepairSpec)
    coherence: CoherenceSpec = Field(default_factory=CoherenceSpec)

    @root_validator(skip_on_failure=True)
    def _repair_steps_in_bounds(cls, values: dict[str, Any]) -> dict[str, Any]:
        # Only an enabled schedule must fit the job's settings; `vidstyle repair` checks it when it runs.
        if values["repair"].enabled:
            problem = repair_schedule_problem(values["sampling"], values["controlnet"], values["repair"].schedule)
            if problem:
                raise ValueError(problem)
        return values

    def to_toml(self) -> str:
        return tomli_w.dumps(_drop_none(self.dict()))

    def with_overrides(self, overrides: Mapping[str, Any]) -> JobSpec:
        data = self.dict()
        for dotted, value in overrides.items():
            set_dotted(data, dotted, value)
        return build_spec(data, what="overrides")

    def resolved(self) -> JobSpec:
        """Pin down choices made at creation (the seed), so resume gives the same pixels."""
        if self.sampling.seed != -1:
            return self
        return self.with_overrides({"sampling.seed": random.SystemRandom().randint(0, SEED_MAX)})


def frame_seed(spec: JobSpec, frame_index: int, attempt: int, seed_given: bool = False) -> int:
    """The seed for one frame attempt: a pure function of spec, index and attempt.

    Attempt 0 uses the policy's seed; each redo attempt shifts it by a large odd number
    so a re-render of a broken frame explores a new sample, unless the user set the seed
    for this redo (`seed_given`): then that seed is used as given, so the frame matches
    a fresh job with that seed.
    """
    base = spec.sampling.seed
    if base < 0:
        raise SpecError("The job's seed is not resolved; create the job through vidstyle.job.")
    if spec.sampling.seed_policy == "per_frame":
        base += frame_index
    shift = 0 if seed_given else attempt * 1_000_003
    return (base + shift) % (SEED_MAX + 1)


def _drop_none(value: Any) -> Any:
    """TOML has no null: leave unset optional values out."""
    if isinstance(value, dict):
        return {k: _drop_none(v) for k, v in value.items() if v is not None}
    if isinstance(value, list):
        return [_drop_none(v) for v in value]
    return value


def set_dotted(data: dict[str, Any], dotted: str, value: Any) -> None:
    """Set `a.b.c` in nested dicts, creating sections a preset left out."""
    keys = dotted.split(".")
    node = data
    for key in keys[:-1]:
        node = node.setdefault(key, {})
        if not isinstance(node, dict):
            raise SpecError(f"Unknown setting '{dotted}': '{key}' is not a section.")
    node[keys[-1]] = value


def deep_merge(base: dict[str, Any], top: Mapping[str, Any]) -> dict[str, Any]:
    merged = copy.deepcopy(base)
    for key, value in top.items():
        if isinstance(value, Mapping) and isinstance(merged.get(key), dict):
            merged[key] = deep_merge(merged[key], value)
        else:
            merged[key] = copy.deepcopy(value)
    return merged


LEGACY_AUTH_KEY = "webui_auth"


def pop_stored_credentials(data: dict[str, Any]) -> str | None:
    """Take `backend.webui_auth` out of a job.toml written before credentials left the spec.

    Such a job still resumes with it; nothing writes it anywhere again.
    """
    backend = data.get("backend")
    if isinstance(backend, dict) and LEGACY_AUTH_KEY in backend:
        value = backend.pop(LEGACY_AUTH_KEY)
        return str(value) if value else None
    return None


def build_spec(data: Mapping[str, Any], what: str = "job spec") -> JobSpec:
    backend = data.get("backend")
    if isinstance(backend, Mapping) and LEGACY_AUTH_KEY in backend:
        raise SpecError(
            f"{what}: 'backend.webui_auth' is not a job setting (a spec is saved in the job folder); "
            "give the WebUI's user:password with --webui-auth or VIDSTYLE_WEBUI_AUTH."
        )
    try:
        return JobSpec.parse_obj(data)
    except ValidationError as exc:
        raise SpecError(describe_validation_error(exc, what)) from None


def presets_in(folder: Path) -> list[str]:
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


def list_presets() -> list[str]:
    return presets_in(PRESET_DIR)


def preset_path(name_or_path: str) -> Path:
    return find_preset(PRESET_DIR, name_or_path)


def load_spec(preset: str | None = None, overrides: Mapping[str, Any] | None = None) -> JobSpec:
    """Preset (name or path) + dotted overrides -> validated JobSpec."""
    data: dict[str, Any] = {}
    what = "job spec"
    if preset:
        path = preset_path(preset)
        data = read_toml(path, "preset")
        what = f"preset {path.name}"
    if overrides:  # a bad value may come from either; name both rather than blame the preset
        what = f"{what} with your settings"
    for dotted, value in (overrides or {}).items():
        set_dotted(data, dotted, value)
    return build_spec(data, what=what)


def field_info(dotted: str) -> dict[str, Any]:
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
