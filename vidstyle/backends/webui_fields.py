"""What both WebUI backends tell the WebUI for one frame: the names it wants, the img2img
fields and the ControlNet unit.

The HTTP backend (webui_api) sends these as the /sdapi/v1/img2img body; the in-process
backend (webui_local) passes the same values to StableDiffusionProcessingImg2Img and the
ControlNet extension's unit class. Keeping them here means a change to a field reaches both.
"""

from __future__ import annotations

from typing import Any

from ..prompt_text import prompt_with_loras
from ..spec import ControlNetSpec, JobSpec, LoraRef
from .base import Img2ImgRequest
from .webui_preflight import ServerPlan, Wanted

# Preprocessor resolution sent with every unit (the WebUI's own default for canny).
PROCESSOR_RES = 512


def wanted_from_spec(spec: JobSpec) -> Wanted:
    return _wanted(
        spec.model.checkpoint, spec.model.loras, spec.sampling.sampler, spec.sampling.scheduler, spec.controlnet
    )


def wanted_from_request(request: Img2ImgRequest) -> Wanted:
    return _wanted(request.checkpoint, request.loras, request.sampler, request.scheduler, request.controlnet)


def _wanted(checkpoint: str, loras: list[LoraRef], sampler: str, scheduler: str, cn: ControlNetSpec) -> Wanted:
    controlnet = (cn.model, cn.preprocessor, cn.low_threshold, cn.high_threshold) if cn.enabled else None
    return Wanted(checkpoint, tuple((lora.name, float(lora.weight)) for lora in loras), sampler, scheduler, controlnet)


def img2img_fields(plan: ServerPlan, request: Img2ImgRequest) -> dict[str, Any]:
    """The img2img settings of one frame, in the names both the API body and the processing class use.

    The images and what only one side knows (sending, saving, task ids, output folders) are
    added by each backend.
    """
    fields: dict[str, Any] = {
        "prompt": prompt_with_loras(request.prompt, plan.lora_tags),
        "negative_prompt": request.negative_prompt,
        "seed": int(request.seed),
        "steps": int(request.steps),
        "cfg_scale": float(request.cfg_scale),
        "sampler_name": plan.sampler_name,
        "width": int(request.width),
        "height": int(request.height),
        "resize_mode": 0,
        "denoising_strength": float(request.denoise),
        "batch_size": 1,
        "n_iter": 1,
        # The WebUI silently ignores an override it cannot resolve; preflight checked the title.
        "override_settings": {"sd_model_checkpoint": plan.checkpoint_title},
        "override_settings_restore_afterwards": True,
    }
    if plan.scheduler is not None:  # None: the WebUI predates schedule types (before 1.9)
        fields["scheduler"] = plan.scheduler
    return fields


def controlnet_unit(plan: ServerPlan, cn: ControlNetSpec, image: Any) -> dict[str, Any]:
    """One unit with the fields both sd-webui-controlnet's ControlNetUnit and Forge's accept.

    With preprocessor 'ours' the image is our canny map (request.control_image), sent through
    the identity preprocessor; with 'server' it is the source frame (request.source), which
    the server's canny module turns into edges with our thresholds. `image` is base64 for
    the HTTP API, an RGB array in-process.
    """
    unit: dict[str, Any] = {
        "enabled": True,
        "module": plan.controlnet_module,
        "model": plan.controlnet_model,
        "weight": float(cn.weight),
        "image": image,
        "resize_mode": "Just Resize",
        "processor_res": PROCESSOR_RES,
        "guidance_start": float(cn.guidance_start),
        "guidance_end": float(cn.guidance_end),
        "pixel_perfect": bool(cn.pixel_perfect),
        "control_mode": cn.control_mode,
        # Otherwise the detected map comes back as a second image we would download and drop.
        "save_detected_map": False,
    }
    if cn.preprocessor == "server":
        unit["threshold_a"] = float(cn.low_threshold)
        unit["threshold_b"] = float(cn.high_threshold)
    return unit
