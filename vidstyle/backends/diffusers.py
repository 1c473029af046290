"""Standalone backend: diffusers' ControlNet img2img pipeline (SD1.5 and SDXL), on CUDA or CPU.

Models come from local files only, never from the network:
* checkpoint: a diffusers folder (model_index.json), a WebUI-style single `.safetensors` file,
  or 'tiny' (the built-in random-weight test model, see `vidstyle.tiny_models`);
* ControlNet: a diffusers folder (config.json), a single `.safetensors`/`.pth` file, or 'tiny';
* LoRAs: kohya-format `.safetensors` files (what sd-scripts and the WebUI use), applied
  through diffusers' PEFT integration with their weights.

A single-file checkpoint holds weights but no configs. diffusers needs the matching
diffusers configs (tens of KB, no weights); we pass them as a local folder: the tiny
model's own folder (its single file names it in its metadata), or the Hugging Face cache (filled once online with
`hf download <repo> --include "*.json" --include "*.txt"`). A single-file ControlNet with
its WebUI `.yaml` next to it (sd-webui-controlnet ships them) needs nothing else.

A frame is a pure function of its request: the seed feeds a `torch.Generator`, and LoRA
weights, sampler and ControlNet settings are set from the request before every call.
"""

from __future__ import annotations

import importlib.util
import inspect
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from PIL import Image

from ..errors import (
    BackendError,
    Cancelled,
    MediaError,
    ModelNotFoundError,
    PreflightError,
    SpecError,
)
from ..samplers import build_scheduler, check_sampler
from ..sd_architectures import checkpoint_family
from ..spec import ControlNetSpec, JobSpec, LoraRef
from .base import Img2ImgRequest, Img2ImgResult, StatusCallback
from .diffusers_memory import VAE_TILE_OVERLAP, VAE_TILE_PX, Frame, MemoryPlan, gib, plan_memory, profile_modules

try:  # the WebUI and a slim install have no diffusers; say how to get it instead of a traceback
    import diffusers
    import torch
    from diffusers import ControlNetModel
except ImportError as _exc:  # pragma: no cover - depends on the environment
    torch = None  # type: ignore[assignment]
    diffusers = None
    _IMPORT_ERROR: ImportError | None = _exc
else:
    _IMPORT_ERROR = None

log = logging.getLogger("vidstyle.diffusers")


TINY = "tiny"
CHECKPOINT_SUFFIXES = (".safetensors",)
CONTROLNET_SUFFIXES = (".safetensors", ".pth", ".ckpt")
# sd-webui-controlnet's soft injection ("My prompt is more important"): residual i of n is
# scaled by 0.825 ** (n - 1 - i), so shallow blocks get ~0.1 and the middle block 1.0.
SOFT_INJECTION_BASE = 0.825
# Pipeline config flags carried over when the ControlNet pipeline shares the base's modules.
_PIPELINE_FLAGS = ("requires_safety_checker", "force_zeros_for_empty_prompt", "requires_aesthetics_score")
# torch.compile backend; tests swap in "eager" (inductor needs a C++ compiler and minutes on CPU).
COMPILE_BACKEND = "inductor"
# Free accelerator memory in bytes for a device, or None when there is nothing to fill (CPU).
FreeMemory = Callable[["torch.device"], int | None]
# Families of pipeline classes: (plain img2img, ControlNet img2img).
PIPELINES = {
    "sd15": ("StableDiffusionImg2ImgPipeline", "StableDiffusionControlNetImg2ImgPipeline"),
    "sdxl": ("StableDiffusionXLImg2ImgPipeline", "StableDiffusionXLControlNetImg2ImgPipeline"),
}


def _dtype_keyword() -> str:
    """diffusers renamed `torch_dtype` to `dtype` (0.42 warns on the old name; 0.30 lacks the new)."""
    try:
        from diffusers.utils import deprecation_utils
    except ImportError:
        return "torch_dtype"
    return "dtype" if hasattr(deprecation_utils, "_resolve_dtype") else "torch_dtype"


def _quiet_library_output() -> None:
    """Our progress bar and status lines are what the user follows; diffusers' and
    transformers' loading bars and advisory warnings (e.g. "torchvision not installed")
    would interleave with them. Errors still show."""
    if diffusers is None:
        return
    diffusers.utils.logging.set_verbosity_error()
    diffusers.utils.logging.disable_progress_bar()
    try:
        import transformers
    except ImportError:  # pragma: no cover - diffusers without transformers cannot load SD anyway
        return
    transformers.utils.logging.set_verbosity_error()
    transformers.utils.logging.disable_progress_bar()


@dataclass(frozen=True)
class ModelSource:
    """Where a model comes from: kind is 'folder' (diffusers layout) or 'file' (single file)."""

    kind: str
    path: Path
    label: str


def resolve_checkpoint(name: str) -> ModelSource:
    """A checkpoint name from the spec -> local folder or file; ModelNotFoundError if neither."""
    if name == TINY:
        from ..tiny_models import tiny_pipeline_dir

        return ModelSource("folder", tiny_pipeline_dir(), TINY)
    path = Path(name).expanduser()
    if path.is_dir():
        if not (path / "model_index.json").is_file():
            raise ModelNotFoundError(
                f"Checkpoint folder {path} has no model_index.json; give a diffusers model folder or a .safetensors "
                "file."
            )
        return ModelSource("folder", path, name)
    if path.is_file():
        if path.suffix.lower() not in CHECKPOINT_SUFFIXES:
            raise ModelNotFoundError(
                f"Checkpoint {path} is not a .safetensors file; convert it to .safetensors (e.g. with the WebUI's "
                "Checkpoint Merger) or give a diffusers folder."
            )
        return ModelSource("file", path, name)
    raise ModelNotFoundError(
        f"Checkpoint '{name}' not found: the diffusers backend needs the path to a .safetensors file or a diffusers "
        "folder (or 'tiny' for the test model)."
    )


def resolve_controlnet(name: str) -> ModelSource:
    if name == TINY:
        from ..tiny_models import tiny_pipeline_dir

        return ModelSource("folder", tiny_pipeline_dir() / "controlnet", TINY)
    path = Path(name).expanduser()
    if path.is_dir():
        if not (path / "config.json").is_file():
            raise ModelNotFoundError(
                f"ControlNet folder {path} has no config.json; give a diffusers ControlNet folder or a model file."
            )
        return ModelSource("folder", path, name)
    if path.is_file() and path.suffix.lower() in CONTROLNET_SUFFIXES:
        return ModelSource("file", path, name)
    raise ModelNotFoundError(
        f"ControlNet model '{name}' not found: give the path to a canny ControlNet file (.safetensors or .pth, e.g. "
        "control_v11p_sd15_canny.pth) or a diffusers ControlNet folder, or disable controlnet."
    )


def resolve_lora(name: str) -> Path:
    path = Path(name).expanduser()
    for candidate in (path, path.with_name(path.name + ".safetensors")):
        if candidate.is_file():
            return candidate.resolve()
    raise ModelNotFoundError(
        f"LoRA '{name}' not found: the diffusers backend needs the path to the LoRA's .safetensors file "
        "(it does not read the WebUI's models/Lora folder)."
    )


def _require_diffusers() -> None:
    if _IMPORT_ERROR is not None:
        raise PreflightError(
            f"The diffusers backend needs torch and diffusers ({_IMPORT_ERROR.name} is missing); "
            "install them with: pip install 'vidstyle[diffusers]' peft."
        )


def resolve_device(name: str) -> tuple[torch.device, torch.dtype]:
    """'auto' -> CUDA when present, else CPU; half precision on CUDA, full on CPU."""
    _require_diffusers()
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    try:
        device = torch.device(name)
    except RuntimeError:
        raise SpecError(f"Unknown device '{name}'; use auto, cpu, cuda or cuda:N.") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise PreflightError(
            f"Device '{name}' was asked for but CUDA is not available; set backend.device to auto or cpu."
        )
    return device, (torch.float16 if device.type == "cuda" else torch.float32)


def _safetensors_shapes(path: Path) -> dict[str, tuple[int, ...]]:
    """Tensor names and shapes from a .safetensors header, without reading the weights."""
    from safetensors import safe_open

    try:
        with safe_open(str(path), framework="pt") as handle:
            return {key: tuple(handle.get_slice(key).get_shape()) for key in handle.keys()}
    except Exception as exc:  # safetensors raises its own error types for damaged files
        raise ModelNotFoundError(f"{path} is not a readable .safetensors file ({exc}); download it again.") from None


def pipeline_family(source: ModelSource) -> str:
    """The PIPELINES entry a checkpoint loads with: 'sdxl', else 'sd15' (SD2 runs with the SD1.5
    classes; a checkpoint the names do not tell is tried as SD1.5, whose loader then says what is wrong)."""
    try:
        family = checkpoint_family(source.path)
    except MediaError as exc:  # a damaged or truncated download: its header says so in one sentence
        raise ModelNotFoundError(str(exc)) from None
    return "sdxl" if family == "sdxl" else "sd15"


def _declared_config_dir(path: Path) -> Path | None:
    """The tiny model's config folder when the file's metadata names it (the tiny single file does).

    File metadata is untrusted: it can select the built-in tiny configs, never a folder of its choosing.
    """
    from safetensors import safe_open

    from ..tiny_models import CONFIG_METADATA_KEY, CONFIG_METADATA_VALUE, tiny_pipeline_dir

    with safe_open(str(path), framework="pt") as handle:
        metadata = handle.metadata() or {}
    return tiny_pipeline_dir() if metadata.get(CONFIG_METADATA_KEY) == CONFIG_METADATA_VALUE else None


def _cached_hub_configs(repo_id: str) -> Path | None:
    """The Hugging Face cache snapshot holding a repo's config files, if it is on this machine."""
    from huggingface_hub import snapshot_download

    try:
        folder = snapshot_download(repo_id, local_files_only=True, allow_patterns=["*.json", "*.txt"])
    except Exception:  # LocalEntryNotFoundError and friends: not cached
        return None
    return Path(folder)


def _meta_state_dict(shapes: dict[str, tuple[int, ...]]) -> dict[str, torch.Tensor]:
    """Shape-only tensors, enough for diffusers' model-type detection without loading GBs."""
    return {key: torch.empty(shape, device="meta") for key, shape in shapes.items()}


def single_file_config_dir(path: Path) -> Path:
    """The local diffusers config folder that matches a single-file checkpoint or ControlNet.

    Raises ModelNotFoundError with the one command that fetches the configs when they are
    not on this machine (we never download at render time).
    """
    from diffusers.loaders.single_file_utils import fetch_diffusers_config

    shapes = _safetensors_shapes(path) if path.suffix.lower() == ".safetensors" else {}
    declared = _declared_config_dir(path) if shapes else None
    if declared is not None:
        return declared
    if not shapes:
        raise ModelNotFoundError(
            f"{path} is not a .safetensors file, so its model type cannot be read without loading it; "
            "convert it to .safetensors or put its WebUI .yaml config next to it."
        )
    repo_id = fetch_diffusers_config(_meta_state_dict(shapes))["pretrained_model_name_or_path"]
    folder = _cached_hub_configs(repo_id)
    if folder is None:
        raise ModelNotFoundError(
            f"Loading {path.name} needs the diffusers config files of {repo_id} (a few KB, no weights), which are not "
            f'on this machine; fetch them once online with: hf download {repo_id} --include "*.json" --include "*.txt"'
        )
    return folder


def _soft_injection_hook(backend: DiffusersBackend) -> Callable[[Any, Any, Any], Any]:
    """Forward hook scaling ControlNet residuals like sd-webui-controlnet's soft injection."""

    def hook(module: Any, args: Any, output: Any) -> Any:
        if not backend._soft_injection or not isinstance(output, tuple):
            return output
        down, mid = output[0], output[1]
        count = len(down) + 1
        scales = [SOFT_INJECTION_BASE ** float(count - 1 - i) for i in range(count)]
        scaled_down = [residual * scale for residual, scale in zip(down, scales, strict=False)]
        return (scaled_down, mid * scales[-1]) + tuple(output[2:])

    return hook


class DiffusersBackend:
    """The Backend protocol on diffusers: one pipeline per (checkpoint, ControlNet), reused."""

    name = "diffusers"
    # One frame at a time: the pipeline holds per-call state (scheduler, adapters, hooks).
    concurrency = 1

    def __init__(
        self, spec: JobSpec, on_status: StatusCallback | None = None, free_memory: FreeMemory | None = None
    ) -> None:
        _quiet_library_output()
        self.spec = spec
        self._on_status = on_status
        # Injectable so the choice of memory mode can be tested without a GPU.
        self._free_memory: FreeMemory = free_memory or cuda_free_memory
        self.memory_plan: MemoryPlan | None = None
        self.attention: str | None = None
        self.compile_seconds: float | None = None
        self._placed_pipe: Any = None
        self._lock = threading.Lock()
        self._interrupted = threading.Event()
        self._soft_injection = False
        self._checkpoint: str | None = None
        self._controlnet_name: str | None = None
        self._base: Any = None
        self._control_pipe: Any = None
        self._family = "sd15"
        self._base_scheduler_config: dict[str, Any] = {}
        self._adapters: dict[Path, str] = {}
        self._adapter_counter = 0
        self._active_loras: list[tuple[str, float]] | None = None
        self._device: Any = None
        self._dtype: Any = None
        self._warned_prompts: set[str] = set()

    # ----- protocol -------------------------------------------------------------------

    def preflight(self) -> None:
        """Check sampler, files and LoRAs, then load everything, so frame 1 cannot fail on them."""
        _require_diffusers()
        sampling = self.spec.sampling
        check_sampler(sampling.sampler, sampling.scheduler)
        _check_steps(sampling.steps, sampling.denoise)
        resolve_checkpoint(self.spec.model.checkpoint)
        if self.spec.controlnet.enabled:
            resolve_controlnet(self.spec.controlnet.model)
        for ref in self.spec.model.loras:
            resolve_lora(ref.name)
        _check_memory_options(self.spec)
        with self._lock:
            self._device, self._dtype = resolve_device(self.spec.backend.device)
            pipe = self._ensure_pipeline(self.spec.model.checkpoint, self.spec.controlnet)
            self._apply_loras(self.spec.model.loras)
            self._place(
                pipe,
                Frame(
                    self.spec.size.width,
                    self.spec.size.height,
                    self.spec.controlnet.enabled,
                    _guidance_batch(self.spec.sampling.cfg_scale),
                    self.spec.backend.vae_tiling,
                ),
            )

    def img2img(self, request: Img2ImgRequest) -> Img2ImgResult:
        """Render one frame; an `interrupt()` from then on ends it with Cancelled at the next step."""
        _require_diffusers()
        self._interrupted.clear()
        check_sampler(request.sampler, request.scheduler)
        _check_steps(request.steps, request.denoise)
        self._check_images(request)
        with self._lock:
            if self._device is None:
                self._device, self._dtype = resolve_device(self.spec.backend.device)
            pipe = self._ensure_pipeline(request.checkpoint, request.controlnet)
            self._apply_loras(request.loras)
            self._place(
                pipe,
                Frame(
                    request.width,
                    request.height,
                    request.controlnet.enabled,
                    _guidance_batch(request.cfg_scale),
                    self.spec.backend.vae_tiling,
                ),
            )
            pipe.scheduler = build_scheduler(self._base_scheduler_config, request.sampler, request.scheduler)
            truncated = self._check_prompt_length(request.prompt)
            image = self._run(pipe, request)
        info: dict[str, Any] = {
            "backend": self.name,
            "checkpoint": request.checkpoint,
            "sampler": request.sampler,
            "scheduler": request.scheduler,
            "seed": request.seed,
            "device": str(self._device),
            "memory_mode": self.memory_plan.mode if self.memory_plan else "none",
            "attention": self.attention,
        }
        if request.controlnet.enabled:
            info["controlnet"] = request.controlnet.model
        if truncated:
            info["prompt_truncated"] = True
        return Img2ImgResult(image=image, info=info)

    def interrupt(self) -> None:
        self._interrupted.set()

    def close(self) -> None:
        with self._lock:
            self._drop_pipelines()
        if torch is not None and torch.cuda.is_available():
            torch.cuda.empty_cache()

    # ----- loading --------------------------------------------------------------------

    def _status(self, message: str) -> None:
        log.info(message)
        if self._on_status is not None:
            self._on_status(message)

    def _ensure_pipeline(self, checkpoint: str, unit: ControlNetSpec) -> Any:
        """The pipeline for this checkpoint and ControlNet unit, loading only what changed."""
        if self._checkpoint != checkpoint:
            self._drop_pipelines()
            source = resolve_checkpoint(checkpoint)
            self._family = pipeline_family(source)
            self._status(f"Loading checkpoint {source.label} ({self._family}) on {self._device}")
            self._base = self._load_base(source)
            self._base_scheduler_config = dict(self._base.scheduler.config)
            self._checkpoint = checkpoint
        if not unit.enabled:
            return self._base
        if self._controlnet_name != unit.model:
            cn_source = resolve_controlnet(unit.model)
            self._status(f"Loading ControlNet {cn_source.label}")
            self._control_pipe = self._with_controlnet(self._base, self._load_controlnet(cn_source), cn_source)
            self._controlnet_name = unit.model
        return self._control_pipe

    def _drop_pipelines(self) -> None:
        self._base = self._control_pipe = self._placed_pipe = None
        self.memory_plan = None
        self._checkpoint = self._controlnet_name = None
        self._adapters.clear()
        self._active_loras = None

    def _pipeline_class(self, controlled: bool) -> Any:
        return getattr(diffusers, PIPELINES[self._family][1 if controlled else 0])

    def _load_base(self, source: ModelSource) -> Any:
        cls = self._pipeline_class(controlled=False)
        # The WebUI runs no safety checker and adds no invisible watermark; neither do we.
        extra: dict[str, Any] = {"add_watermarker": False}
        if self._family == "sd15":
            extra = {"safety_checker": None, "feature_extractor": None, "requires_safety_checker": False}
        dtype = {_dtype_keyword(): self._dtype}
        try:
            if source.kind == "folder":
                pipe = cls.from_pretrained(str(source.path), local_files_only=True, **dtype, **extra)
            else:
                config_dir = single_file_config_dir(source.path)
                pipe = cls.from_single_file(
                    str(source.path), config=str(config_dir), local_files_only=True, **dtype, **extra
                )
        except (ModelNotFoundError, PreflightError):
            raise
        except Exception as exc:  # diffusers/transformers raise many types for bad or mismatched files
            raise PreflightError(
                f"Checkpoint {source.path} could not be loaded ({_first_line(exc)}); check the file."
            ) from None
        pipe.set_progress_bar_config(disable=True)
        # Loaded on the CPU; `_place` moves it (or installs offload hooks) once the plan is known.
        for module in (pipe.unet, pipe.vae):
            self._fast_layout(module)
        return pipe

    def _fast_layout(self, module: Any) -> None:
        """Channels-last convolutions on CPU: about 25% faster there (benchmarks/bench_tiny_model.py)."""
        if self._device.type == "cpu":
            module.to(memory_format=torch.channels_last)

    def _load_controlnet(self, source: ModelSource) -> Any:
        dtype = {_dtype_keyword(): self._dtype}
        try:
            if source.kind == "folder":
                model = ControlNetModel.from_pretrained(str(source.path), local_files_only=True, **dtype)
            else:
                yaml = source.path.with_suffix(".yaml")
                if yaml.is_file():  # sd-webui-controlnet keeps the original config next to each model
                    options: dict[str, Any] = {"original_config": str(yaml)}
                else:
                    options = {"config": str(_controlnet_config_dir(source.path))}
                model = ControlNetModel.from_single_file(str(source.path), local_files_only=True, **dtype, **options)
        except (ModelNotFoundError, PreflightError):
            raise
        except Exception as exc:
            raise PreflightError(
                f"ControlNet {source.path} could not be loaded ({_first_line(exc)}); check the file."
            ) from None
        self._fast_layout(model)
        return model

    def _with_controlnet(self, base: Any, controlnet: Any, source: ModelSource) -> Any:
        wanted = base.unet.config.cross_attention_dim
        if controlnet.config.cross_attention_dim != wanted:
            raise PreflightError(
                f"ControlNet {source.label} does not fit checkpoint {self._checkpoint} (cross-attention "
                f"{controlnet.config.cross_attention_dim} vs {wanted}); choose a ControlNet made for its base model."
            )
        controlnet.register_forward_hook(_soft_injection_hook(self))
        cls = self._pipeline_class(controlled=True)
        accepted = inspect.signature(cls.__init__).parameters
        # Share the loaded modules (no copies); `from_pipe` would also re-cast them all.
        parts = {name: module for name, module in base.components.items() if name in accepted}
        flags = {key: base.config[key] for key in _PIPELINE_FLAGS if key in accepted and key in base.config}
        if "add_watermarker" in accepted:
            flags["add_watermarker"] = False
        pipe = cls(**parts, **flags, controlnet=controlnet)
        pipe.set_progress_bar_config(disable=True)
        return pipe

    # ----- memory modes, attention, compile --------------------------------------------

    def _place(self, pipe: Any, frame: Frame) -> None:
        """Put `pipe` on the device as the memory plan says (whole, or behind offload hooks), once."""
        if pipe is self._placed_pipe:
            return
        options = self.spec.backend
        if self.memory_plan is None:
            self.memory_plan = self._plan_memory(pipe, frame)
        mode = self.memory_plan.mode
        note = ""
        if mode == "model_offload":
            pipe.enable_model_cpu_offload(device=self._device)
        elif mode == "sequential_offload" and self._device.type != "cpu":
            pipe.enable_sequential_cpu_offload(device=self._device)
        else:
            # On the CPU, accelerate's layer-by-layer hooks break (weights' home and execution
            # device are the same) and would save nothing: everything stays where it is.
            pipe.to(self._device)
            if mode != "none":
                note = " (nothing to offload to on the CPU: all models stay in memory)"
        # Called on the VAE itself: the pipeline-level enable_vae_* are deprecated in diffusers.
        pipe.vae.use_slicing = options.vae_slicing
        if options.vae_tiling:
            pipe.vae.enable_tiling()
            pipe.vae.tile_sample_min_size = VAE_TILE_PX
            pipe.vae.tile_latent_min_size = VAE_TILE_PX // 8
            pipe.vae.tile_overlap_factor = VAE_TILE_OVERLAP
        self.attention = self._set_attention(pipe)
        self._placed_pipe = pipe
        if options.compile:
            self._compile(pipe, frame)
        if mode == "model_offload" and self._device.type == "cpu":
            note = " (on the CPU there is nothing to offload to; the hooks only run)"
        self._status(
            f"Memory mode {mode}{note}, {self.attention} attention, about "
            f"{gib(self.memory_plan.estimate.with_headroom)} needed on {self._device}"
        )

    def _unplace(self) -> None:
        """Take offload hooks off (they wrap the modules LoRA loading changes); `_place` re-applies them."""
        if self._placed_pipe is not None and self.memory_plan is not None and self.memory_plan.mode != "none":
            self._placed_pipe.remove_all_hooks()
            self._placed_pipe = None

    def _plan_memory(self, pipe: Any, frame: Frame) -> MemoryPlan:
        names = ("unet", "vae", "text_encoder", "text_encoder_2", "controlnet")
        modules = {name: getattr(pipe, name, None) for name in names}
        if not frame.controlnet:
            modules["controlnet"] = None
        profile = profile_modules(modules, torch.finfo(self._dtype).bits // 8)
        plan = plan_memory(
            profile, frame, self.spec.backend.memory_mode, self._free_memory(self._device), str(self._device)
        )
        if not plan.fits:
            raise PreflightError(f"The job will not fit in GPU memory: {plan.advice}")
        return plan

    def _set_attention(self, pipe: Any) -> str:
        """xformers when asked for (or installed, for 'auto' on CUDA), else PyTorch's SDPA; returns which."""
        from diffusers.models.attention_processor import AttnProcessor2_0

        wanted = self.spec.backend.attention
        use_xformers = wanted == "xformers" or (
            wanted == "auto" and self._device.type == "cuda" and importlib.util.find_spec("xformers") is not None
        )
        if use_xformers:
            try:
                pipe.enable_xformers_memory_efficient_attention()
                return "xformers"
            except Exception as exc:  # an xformers build that does not match this torch/GPU
                if wanted == "xformers":
                    raise PreflightError(
                        f"xformers attention could not be enabled ({_first_line(exc)}); reinstall xformers for this "
                        "torch version or set backend.attention to sdpa."
                    ) from None
                log.warning("xformers is installed but unusable (%s); using PyTorch's SDPA.", _first_line(exc))
        for name in ("unet", "vae", "controlnet"):
            module = getattr(pipe, name, None)
            if module is not None:
                module.set_attn_processor(AttnProcessor2_0())
        return "sdpa"

    def _compile(self, pipe: Any, frame: Frame) -> None:
        """torch.compile the UNet and ControlNet in place, and compile now with one warm-up step, timed.

        Compiling happens on the first call; doing it here keeps it out of frame 1's time and
        reports it on its own (`compile_seconds`).
        """
        modules = [pipe.unet] + ([pipe.controlnet] if getattr(pipe, "controlnet", None) is not None else [])
        fresh = [module for module in modules if getattr(module, "_compiled_call_impl", None) is None]
        if not fresh:  # re-placed after a LoRA load: already compiled
            return
        for module in fresh:
            module.compile(backend=COMPILE_BACKEND)
        self._status("Compiling the UNet and ControlNet with torch.compile (one warm-up step)")
        spec = self.spec
        blank = Image.new("RGB", (frame.width, frame.height), (127, 127, 127))
        warm_up = Img2ImgRequest(
            frame_index=-1,
            init_image=blank,
            control_image=Image.new("RGB", blank.size),
            prompt=spec.prompt,
            negative_prompt=spec.negative_prompt,
            checkpoint=spec.model.checkpoint,
            loras=list(spec.model.loras),
            controlnet=spec.controlnet,
            width=frame.width,
            height=frame.height,
            denoise=1.0,
            steps=1,
            cfg_scale=spec.sampling.cfg_scale,
            sampler=spec.sampling.sampler,
            scheduler=spec.sampling.scheduler,
            seed=0,
        )
        pipe.scheduler = build_scheduler(self._base_scheduler_config, warm_up.sampler, warm_up.scheduler)
        started = time.perf_counter()
        try:
            self._run(pipe, warm_up)
        except BackendError as exc:
            log.error("torch.compile warm-up failed: %s", exc)
            raise PreflightError(
                "torch.compile of the UNet and ControlNet failed on its warm-up step (the log has the compiler's "
                "error); set backend.compile to false."
            ) from None
        self.compile_seconds = time.perf_counter() - started
        self._status(f"Compiled in {self.compile_seconds:.1f} s")

    # ----- LoRAs ----------------------------------------------------------------------

    def _apply_loras(self, loras: list[LoraRef]) -> None:
        """Load new LoRA files as PEFT adapters and activate exactly this request's, with its weights.

        Adapters a request does not name stay loaded but inactive; PEFT then runs the base
        layer alone, so the pixels equal those of a backend that never loaded them.
        """
        weights: dict[Path, float] = {}
        for ref in loras:  # the same file twice adds up, as two <lora:...> tags do in the WebUI
            path = resolve_lora(ref.name)
            weights[path] = weights.get(path, 0.0) + ref.weight
        wanted = [(str(path), weight) for path, weight in weights.items()]
        if wanted == self._active_loras:
            return
        for path in weights:
            if path not in self._adapters:
                self._unplace()  # diffusers cannot re-create our offload hooks itself (it assumes cuda:0)
                self._load_lora(path)
        if weights:
            self._base.enable_lora()
            self._base.set_adapters([self._adapters[p] for p in weights], [float(w) for w in weights.values()])
        elif self._adapters:
            self._base.disable_lora()
        self._active_loras = wanted

    def _load_lora(self, path: Path) -> None:
        self._adapter_counter += 1
        # PEFT adapter names must be plain identifiers; the file name is kept in the log.
        adapter = f"lora{self._adapter_counter}"
        self._status(f"Loading LoRA {path.name}")
        try:
            # Folder + weight_name: a bare file path makes diffusers guess the name, which it
            # refuses to do when HF_HUB_OFFLINE is set.
            self._base.load_lora_weights(
                str(path.parent), weight_name=path.name, adapter_name=adapter, local_files_only=True
            )
        except ValueError as exc:
            if "PEFT backend is required" in str(exc):
                raise PreflightError(
                    "LoRAs in the diffusers backend need the peft package; install it with: pip install peft."
                ) from None
            raise PreflightError(
                f"LoRA {path} does not fit checkpoint {self._checkpoint} ({_first_line(exc)}); "
                "use a LoRA trained for this base model."
            ) from None
        except Exception as exc:
            raise PreflightError(f"LoRA {path} could not be loaded ({_first_line(exc)}); check the file.") from None
        self._adapters[path] = adapter

    # ----- rendering ------------------------------------------------------------------

    @staticmethod
    def _check_images(request: Img2ImgRequest) -> None:
        size = (request.width, request.height)
        for what, image in (("init", request.init_image), ("control", request.control_image)):
            if image.size != size:
                raise BackendError(
                    f"Frame {request.frame_index}: the {what} image is {image.size[0]}x{image.size[1]}, "
                    f"not the requested {size[0]}x{size[1]}."
                )

    def _check_prompt_length(self, prompt: str) -> bool:
        """CLIP sees 75 tokens; longer prompts are cut (diffusers truncates) and we say so once."""
        tokenizer = self._base.tokenizer
        limit = tokenizer.model_max_length
        if len(tokenizer(prompt, verbose=False).input_ids) <= limit:
            return False
        if prompt not in self._warned_prompts:
            self._warned_prompts.add(prompt)
            log.warning("The prompt is longer than %d CLIP tokens; the diffusers backend ignores the rest.", limit - 2)
        return True

    def _call_arguments(self, pipe: Any, request: Img2ImgRequest) -> dict[str, Any]:
        generator = torch.Generator(device=self._device).manual_seed(request.seed)
        arguments: dict[str, Any] = {
            "prompt": request.prompt,
            "negative_prompt": request.negative_prompt or None,
            "image": request.init_image.convert("RGB"),
            "strength": request.denoise,
            "num_inference_steps": request.steps,
            "guidance_scale": request.cfg_scale,
            "generator": generator,
            "output_type": "pil",
            "callback_on_step_end": self._on_step_end,
        }
        unit = request.controlnet
        if pipe is self._control_pipe and unit.enabled:
            # Balanced: plain weight. "ControlNet is more important" = sd-webui-controlnet's
            # soft + cfg injection, which is exactly diffusers' guess_mode (control on the
            # conditional half only, residuals scaled ~0.1..1 from shallow to deep). "My prompt
            # is more important" = soft injection alone: the same per-block decay on both
            # halves, done by the forward hook registered on the ControlNet.
            arguments.update(
                control_image=request.control_image.convert("RGB"),
                controlnet_conditioning_scale=unit.weight,
                control_guidance_start=unit.guidance_start,
                control_guidance_end=unit.guidance_end,
                guess_mode=unit.control_mode == "ControlNet is more important",
            )
        return arguments

    def _run(self, pipe: Any, request: Img2ImgRequest) -> Any:
        arguments = self._call_arguments(pipe, request)
        self._soft_injection = request.controlnet.control_mode == "My prompt is more important"
        try:
            with torch.inference_mode():
                return pipe(**arguments).images[0]
        except Cancelled:
            raise
        except Exception as exc:
            raise BackendError(_describe_failure(exc, request)) from None
        finally:
            self._soft_injection = False

    def _on_step_end(self, pipe: Any, step: int, timestep: Any, callback_kwargs: dict[str, Any]) -> dict[str, Any]:
        if self._interrupted.is_set():
            raise Cancelled("Rendering was cancelled; resume the job to continue from the last finished frame.")
        return callback_kwargs


def cuda_free_memory(device: torch.device) -> int | None:
    """Free bytes on a CUDA device (what other programs and this process leave), None on CPU."""
    if device.type != "cuda":
        return None
    free, _total = torch.cuda.mem_get_info(device)
    return int(free)


def _guidance_batch(cfg_scale: float) -> int:
    """diffusers runs the UNet on conditional + unconditional latents at once when CFG is on."""
    return 2 if cfg_scale > 1.0 else 1


def _check_memory_options(spec: JobSpec) -> None:
    """Combinations of memory options that cannot work, named before any model loads."""
    options = spec.backend
    if options.compile and options.memory_mode == "sequential_offload":
        raise SpecError(
            "backend.compile cannot be combined with sequential_offload (weights move in and out layer by layer); "
            "set backend.memory_mode to model_offload or none, or turn compile off."
        )
    if options.attention == "xformers":
        if importlib.util.find_spec("xformers") is None:
            raise PreflightError(
                "backend.attention is xformers but the xformers package is not installed; install it "
                "(pip install xformers) or set backend.attention to auto or sdpa."
            )
        if resolve_device(options.device)[0].type != "cuda":
            raise PreflightError(
                "xformers attention runs on CUDA only; set backend.attention to auto or sdpa on the CPU."
            )


def _check_steps(steps: int, denoise: float) -> None:
    """img2img runs int(steps * denoise) steps (in diffusers as in the WebUI); zero cannot render."""
    if int(steps * denoise) < 1:
        raise SpecError(
            f"Denoise {denoise} with {steps} steps runs no sampling step; raise denoise to at least "
            f"{1.0 / steps:.2f} or add steps."
        )


def _controlnet_config_dir(path: Path) -> Path:
    """Config folder for a single-file ControlNet (no .yaml next to it)."""
    config_dir = single_file_config_dir(path)
    return config_dir / "controlnet" if (config_dir / "controlnet" / "config.json").is_file() else config_dir


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0][:300] if text else type(exc).__name__


def _describe_failure(exc: BaseException, request: Img2ImgRequest) -> str:
    if torch is not None and isinstance(exc, torch.cuda.OutOfMemoryError):
        return (
            f"Frame {request.frame_index}: the GPU ran out of memory at {request.width}x{request.height}; "
            "lower the size, set backend.memory_mode to model_offload or sequential_offload, or turn on "
            "backend.vae_tiling, then resume."
        )
    return f"Frame {request.frame_index} failed in diffusers ({_first_line(exc)}); check the settings and resume."
