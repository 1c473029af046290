"""Standalone backend: diffusers' ControlNet img2img pipeline (SD1.5 and SDXL), on CUDA or CPU.

Models come from local files only, never from the network:
* checkpoint: a diffusers folder (model_index.json), a WebUI-style single `.safetensors` file,
  or 'tiny' (the built-in random-weight test model, see `vidstyle.tiny_models`);
* ControlNet: a diffusers folder (config.json), a single `.safetensors`/`.pth` file, or 'tiny';
* LoRAs: kohya-format `.safetensors` files (what sd-scripts and the WebUI use), applied
  through diffusers' PEFT integration with their weights.

A single-file checkpoint holds weights but no configs. diffusers needs the matching
diffusers configs (tens of KB, no weights); we pass them as a local folder: the tiny
model's own folder, or the Hugging Face cache (filled once online with
`hf download <repo> --include "*.json" --include "*.txt"`). A single-file ControlNet with
its WebUI `.yaml` next to it (sd-webui-controlnet ships them) needs nothing else.

A frame is a pure function of its request: the seed feeds a `torch.Generator`, and LoRA
weights, sampler and ControlNet settings are set from the request before every call.
"""

from __future__ import annotations

import inspect
import json
import logging
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, List, Optional, Set, Tuple

from ..errors import (
    BackendError,
    Cancelled,
    ModelNotFoundError,
    PreflightError,
    SpecError,
)
from ..samplers import build_scheduler, check_sampler
from ..spec import ControlNetSpec, JobSpec, LoraRef
from .base import Img2ImgRequest, Img2ImgResult, StatusCallback

try:  # the WebUI and a slim install have no diffusers; say how to get it instead of a traceback
    import diffusers
    import torch
    from diffusers import ControlNetModel
except ImportError as _exc:  # pragma: no cover - depends on the environment
    torch = None  # type: ignore[assignment]
    diffusers = None  # type: ignore[assignment]
    _IMPORT_ERROR: Optional[ImportError] = _exc
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
# Families of pipeline classes: (plain img2img, ControlNet img2img).
PIPELINES = {
    "sd15": ("StableDiffusionImg2ImgPipeline", "StableDiffusionControlNetImg2ImgPipeline"),
    "sdxl": ("StableDiffusionXLImg2ImgPipeline", "StableDiffusionXLControlNetImg2ImgPipeline"),
}


def _dtype_keyword() -> str:
    """diffusers renamed `torch_dtype` to `dtype` (0.42 warns on the old name; 0.30 lacks the new)."""
    try:
        from diffusers.utils.deprecation_utils import _resolve_dtype  # noqa: F401  (feature probe only)
    except ImportError:
        return "torch_dtype"
    return "dtype"


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
                f"Checkpoint folder {path} has no model_index.json; give a diffusers model folder or a .safetensors file."
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


def resolve_device(name: str) -> Tuple["torch.device", "torch.dtype"]:
    """'auto' -> CUDA when present, else CPU; half precision on CUDA, full on CPU."""
    _require_diffusers()
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    try:
        device = torch.device(name)
    except RuntimeError:
        raise SpecError(f"Unknown device '{name}'; use auto, cpu, cuda or cuda:N.") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise PreflightError(f"Device '{name}' was asked for but CUDA is not available; set backend.device to auto or cpu.")
    return device, (torch.float16 if device.type == "cuda" else torch.float32)


def _safetensors_shapes(path: Path) -> Dict[str, Tuple[int, ...]]:
    """Tensor names and shapes from a .safetensors header, without reading the weights."""
    from safetensors import safe_open

    try:
        with safe_open(str(path), framework="pt") as handle:
            return {key: tuple(handle.get_slice(key).get_shape()) for key in handle.keys()}
    except Exception as exc:  # safetensors raises its own error types for damaged files
        raise ModelNotFoundError(f"{path} is not a readable .safetensors file ({exc}); download it again.") from None


def checkpoint_family(source: ModelSource) -> str:
    """'sd15' or 'sdxl' (SD2-style folders run with the sd15 pipeline classes)."""
    if source.kind == "folder":
        index = json.loads((source.path / "model_index.json").read_text(encoding="utf-8"))
        return "sdxl" if "text_encoder_2" in index or "XL" in index.get("_class_name", "") else "sd15"
    shapes = _safetensors_shapes(source.path)
    return "sdxl" if any(key.startswith("conditioner.embedders.1.") for key in shapes) else "sd15"


def _is_tiny_single_file(shapes: Dict[str, Tuple[int, ...]]) -> bool:
    from ..tiny_models import UNET_CHANNELS

    conv_in = shapes.get("model.diffusion_model.input_blocks.0.0.weight")
    return conv_in is not None and conv_in[0] == UNET_CHANNELS[0]


def _cached_hub_configs(repo_id: str) -> Optional[Path]:
    """The Hugging Face cache snapshot holding a repo's config files, if it is on this machine."""
    from huggingface_hub import snapshot_download

    try:
        folder = snapshot_download(repo_id, local_files_only=True, allow_patterns=["*.json", "*.txt"])
    except Exception:  # LocalEntryNotFoundError and friends: not cached
        return None
    return Path(folder)


def _meta_state_dict(shapes: Dict[str, Tuple[int, ...]]) -> Dict[str, "torch.Tensor"]:
    """Shape-only tensors, enough for diffusers' model-type detection without loading GBs."""
    return {key: torch.empty(shape, device="meta") for key, shape in shapes.items()}


def single_file_config_dir(path: Path) -> Path:
    """The local diffusers config folder that matches a single-file checkpoint or ControlNet.

    Raises ModelNotFoundError with the one command that fetches the configs when they are
    not on this machine (we never download at render time).
    """
    from diffusers.loaders.single_file_utils import fetch_diffusers_config

    shapes = _safetensors_shapes(path) if path.suffix.lower() == ".safetensors" else {}
    if _is_tiny_single_file(shapes):
        from ..tiny_models import tiny_pipeline_dir

        return tiny_pipeline_dir()
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


def _soft_injection_hook(backend: "DiffusersBackend"):
    """Forward hook scaling ControlNet residuals like sd-webui-controlnet's soft injection."""

    def hook(module: Any, args: Any, output: Any) -> Any:
        if not backend._soft_injection or not isinstance(output, tuple):
            return output
        down, mid = output[0], output[1]
        count = len(down) + 1
        scales = [SOFT_INJECTION_BASE ** float(count - 1 - i) for i in range(count)]
        scaled_down = [residual * scale for residual, scale in zip(down, scales)]
        return (scaled_down, mid * scales[-1]) + tuple(output[2:])

    return hook


class DiffusersBackend:
    """The Backend protocol on diffusers: one pipeline per (checkpoint, ControlNet), reused."""

    name = "diffusers"
    # One frame at a time: the pipeline holds per-call state (scheduler, adapters, hooks).
    concurrency = 1

    def __init__(self, spec: JobSpec, on_status: Optional[StatusCallback] = None) -> None:
        _quiet_library_output()
        self.spec = spec
        self._on_status = on_status
        self._lock = threading.Lock()
        self._interrupted = threading.Event()
        self._soft_injection = False
        self._checkpoint: Optional[str] = None
        self._controlnet_name: Optional[str] = None
        self._base: Any = None
        self._control_pipe: Any = None
        self._family = "sd15"
        self._base_scheduler_config: Dict[str, Any] = {}
        self._adapters: Dict[Path, str] = {}
        self._adapter_counter = 0
        self._active_loras: Optional[List[Tuple[str, float]]] = None
        self._device: Any = None
        self._dtype: Any = None
        self._warned_prompts: Set[str] = set()

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
        with self._lock:
            self._device, self._dtype = resolve_device(self.spec.backend.device)
            self._ensure_pipeline(self.spec.model.checkpoint, self.spec.controlnet)
            self._apply_loras(self.spec.model.loras)

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
            pipe.scheduler = build_scheduler(self._base_scheduler_config, request.sampler, request.scheduler)
            truncated = self._check_prompt_length(request.prompt)
            image = self._run(pipe, request)
        info: Dict[str, Any] = {
            "backend": self.name,
            "checkpoint": request.checkpoint,
            "sampler": request.sampler,
            "scheduler": request.scheduler,
            "seed": request.seed,
            "device": str(self._device),
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
            self._family = checkpoint_family(source)
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
        self._base = self._control_pipe = None
        self._checkpoint = self._controlnet_name = None
        self._adapters.clear()
        self._active_loras = None

    def _pipeline_class(self, controlled: bool) -> Any:
        return getattr(diffusers, PIPELINES[self._family][1 if controlled else 0])

    def _load_base(self, source: ModelSource) -> Any:
        cls = self._pipeline_class(controlled=False)
        # The WebUI runs no safety checker and adds no invisible watermark; neither do we.
        extra: Dict[str, Any] = {"add_watermarker": False}
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
            raise PreflightError(f"Checkpoint {source.path} could not be loaded ({_first_line(exc)}); check the file.") from None
        pipe.set_progress_bar_config(disable=True)
        pipe = pipe.to(self._device)
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
                    options: Dict[str, Any] = {"original_config": str(yaml)}
                else:
                    options = {"config": str(_controlnet_config_dir(source.path))}
                model = ControlNetModel.from_single_file(str(source.path), local_files_only=True, **dtype, **options)
        except (ModelNotFoundError, PreflightError):
            raise
        except Exception as exc:
            raise PreflightError(f"ControlNet {source.path} could not be loaded ({_first_line(exc)}); check the file.") from None
        model = model.to(self._device)
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

    # ----- LoRAs ----------------------------------------------------------------------

    def _apply_loras(self, loras: List[LoraRef]) -> None:
        """Load new LoRA files as PEFT adapters and activate exactly this request's, with its weights.

        Adapters a request does not name stay loaded but inactive; PEFT then runs the base
        layer alone, so the pixels equal those of a backend that never loaded them.
        """
        weights: Dict[Path, float] = {}
        for ref in loras:  # the same file twice adds up, as two <lora:...> tags do in the WebUI
            path = resolve_lora(ref.name)
            weights[path] = weights.get(path, 0.0) + ref.weight
        wanted = [(str(path), weight) for path, weight in weights.items()]
        if wanted == self._active_loras:
            return
        for path in weights:
            if path not in self._adapters:
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
                raise PreflightError("LoRAs in the diffusers backend need the peft package; install it with: pip install peft.") from None
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

    def _call_arguments(self, pipe: Any, request: Img2ImgRequest) -> Dict[str, Any]:
        generator = torch.Generator(device=self._device).manual_seed(request.seed)
        arguments: Dict[str, Any] = {
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

    def _on_step_end(self, pipe: Any, step: int, timestep: Any, callback_kwargs: Dict[str, Any]) -> Dict[str, Any]:
        if self._interrupted.is_set():
            raise Cancelled("Rendering was cancelled; resume the job to continue from the last finished frame.")
        return callback_kwargs


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
            "lower the size or close other GPU programs, then resume."
        )
    return f"Frame {request.frame_index} failed in diffusers ({_first_line(exc)}); check the settings and resume."
