"""A test double of the AUTOMATIC1111 WebUI HTTP API, with sd-webui-controlnet or Forge's ControlNet.

This is NOT the WebUI and runs no model: it answers the routes Vidstyle uses with the
request and response shapes of the upstream code it copies the contract of —
AUTOMATIC1111 `modules/api/api.py` + `models.py` (v1.10), the Lora extension's
/sdapi/v1/loras, Mikubill/sd-webui-controlnet `scripts/api.py` + `internal_controlnet/args.py`
(ControlNetUnit), and Forge's `lib_controlnet` (`api.py`, `external_code.py` ControlNetUnit
dataclass) — and renders a deterministic stand-in image (the init image tinted by a hash
of prompt, seed and model, with the control edges drawn in), so a test can check which
inputs reached the "model".

Deliberate differences, all stricter than upstream so a passing test proves our requests:
* unknown fields are rejected with 422 (the WebUI's pydantic v1 models and Forge's
  `from_dict` silently drop them), in the img2img body and in each ControlNet unit;
* the ControlNet model must be named exactly as /controlnet/model_list lists it.
Behaviour kept from upstream because Vidstyle must guard against it: an unknown
checkpoint override is silently ignored, an unknown LoRA tag is silently skipped,
WebUI 1.9+ silently replaces an unknown sampler by its default, sd-webui-controlnet
silently replaces out-of-range thresholds, interrupt only stops a running job, and
/sdapi/v1/loras and /controlnet/* exist without --api and without --api-auth.
With `lora_dir`, LoRAs are also the files in that folder, as the Lora extension lists them
(extensions-builtin/Lora networks.list_available_networks: name = file stem, alias = the
file's ss_output_name metadata): read at start and again on POST /sdapi/v1/refresh-loras only.
Like the WebUI (modules/call_queue.py queue_lock, a FIFOLock), img2img requests render
one at a time in arrival order; a request waiting for the lock decodes its images only
once it holds it, and shared.state.begin() clears an interrupt sent while it waited, so
a queued request renders in full after an interrupt.

Task ids, as modules/progress.py and api.py img2imgapi (v1.10.1; the same in Forge main) keep
them: a request's id is its `force_task_id`, else `create_task_id("img2img")`; it is queued
(add_task_to_queue) before the queue lock, becomes the current task right after
shared.state.begin() (start_task) and is finished (finish_task: the last 16 are kept) before
shared.state.end(), also when interrupted, but not when the job fails. POST /internal/progress
({"id_task", "id_live_preview", "live_preview"}) answers active / queued / completed with
progress, eta, live_preview (always null here), id_live_preview and textinfo ("In queue: i/n",
"Waiting..."); GET /internal/pending-tasks lists the queue. Both are routes of the UI's app:
not behind --api-auth, and absent with `internal_progress=False` (a WebUI started with
--nowebui). Nothing in /sdapi/v1/progress names the task. Another client's job is just another
img2img request (tests post one with their own HTTP client, with or without a task id).

/sdapi/v1/interrogate (api.py interrogateapi) takes models "clip" and "deepdanbooru" under the
same queue lock, answers 404 "Model not found" for others, and stands in for DeepBooru with
fixed tags in its output format (_DEEPBOORU_TAGS); `deepbooru_available = False` answers as a
WebUI whose DeepBooru model cannot be downloaded.

Pydantic: validation uses the pydantic v1 API (through `vidstyle.compat`), which both the
WebUI's pydantic 1.10 and pydantic 2.x provide, so the double runs under either FastAPI.
"""

from __future__ import annotations

import asyncio
import base64
import copy
import hashlib
import io
import json
import secrets
import socket
import threading
import time
from collections.abc import Sequence
from datetime import datetime
from pathlib import Path
from typing import Any, Literal

import cv2
import numpy as np
import uvicorn
from fastapi import Body, Depends, FastAPI, HTTPException, Request
from fastapi.encoders import jsonable_encoder
from fastapi.responses import JSONResponse
from fastapi.security import HTTPBasic, HTTPBasicCredentials
from PIL import Image

from vidstyle.compat import BaseModel, Extra, Field, ValidationError, root_validator

try:  # the same v1 API the models below use, on pydantic 1.10 and 2.x
    from pydantic.v1 import create_model
except ImportError:  # pragma: no cover - pydantic 1.10 before .17
    from pydantic import create_model  # type: ignore[no-redef]

WEBUI_VERSION = "v1.10.1"

# /sdapi/v1/samplers of A1111 1.10 (name, aliases, options).
DEFAULT_SAMPLERS: list[dict[str, Any]] = [
    {"name": "DPM++ 2M", "aliases": ["k_dpmpp_2m"], "options": {"scheduler": "karras"}},
    {
        "name": "DPM++ SDE",
        "aliases": ["k_dpmpp_sde"],
        "options": {"scheduler": "karras", "second_order": "True", "brownian_noise": "True"},
    },
    {
        "name": "DPM++ 2M SDE",
        "aliases": ["k_dpmpp_2m_sde"],
        "options": {"scheduler": "exponential", "brownian_noise": "True"},
    },
    {"name": "Euler a", "aliases": ["k_euler_a", "k_euler_ancestral"], "options": {"uses_ensd": "True"}},
    {"name": "Euler", "aliases": ["k_euler"], "options": {}},
    {"name": "LMS", "aliases": ["k_lms"], "options": {}},
    {"name": "Heun", "aliases": ["k_heun"], "options": {"second_order": "True"}},
    {"name": "DPM2", "aliases": ["k_dpm_2"], "options": {"discard_next_to_last_sigma": "True", "second_order": "True"}},
    {"name": "DPM++ 2S a", "aliases": ["k_dpmpp_2s_a"], "options": {"uses_ensd": "True", "second_order": "True"}},
    {"name": "Restart", "aliases": ["restart"], "options": {"scheduler": "karras", "second_order": "True"}},
    {"name": "DDIM", "aliases": ["ddim"], "options": {}},
    {"name": "PLMS", "aliases": ["plms"], "options": {}},
    {"name": "UniPC", "aliases": ["unipc"], "options": {}},
    {"name": "LCM", "aliases": ["k_lcm"], "options": {}},
]

# /sdapi/v1/schedulers of A1111 1.10 (name, label, aliases).
DEFAULT_SCHEDULERS: list[tuple[str, str, list[str] | None]] = [
    ("automatic", "Automatic", None),
    ("uniform", "Uniform", None),
    ("karras", "Karras", None),
    ("exponential", "Exponential", None),
    ("polyexponential", "Polyexponential", None),
    ("sgm_uniform", "SGM Uniform", ["SGMUniform"]),
    ("kl_optimal", "KL Optimal", None),
    ("align_your_steps", "Align Your Steps", None),
    ("simple", "Simple", None),
    ("normal", "Normal", None),
    ("ddim", "DDIM", None),
    ("beta", "Beta", None),
]

# Preprocessors: sd-webui-controlnet names the identity one "none", Forge "None".
_A1111_MODULES = ["none", "canny", "depth_midas", "lineart_anime", "openpose", "softedge_pidinet", "tile_resample"]
_FORGE_MODULES = ["None", "canny", "depth_midas", "lineart_anime", "openpose_full", "softedge_pidinet", "tile_resample"]
# module_detail sliders of sd-webui-controlnet (Preprocessor.slider_* api_json, visible ones only).
_RESOLUTION_SLIDER = {"name": "Resolution", "value": 512, "min": 64, "max": 2048, "step": 8}
_CANNY_SLIDERS = [
    _RESOLUTION_SLIDER,
    {"name": "Low Threshold", "value": 100, "min": 1, "max": 255, "step": 1},
    {"name": "High Threshold", "value": 200, "min": 1, "max": 255, "step": 1},
]

RESIZE_MODES = ("Just Resize", "Crop and Resize", "Resize and Fill")
RESIZE_MODE_ALIASES = {
    "Inner Fit (Scale to Fit)": "Crop and Resize",
    "Outer Fit (Shrink to Fit)": "Resize and Fill",
    "Scale to Fit (Inner Fit)": "Crop and Resize",
    "Envelope (Outer Fit)": "Resize and Fill",
}
CONTROL_MODES = ("Balanced", "My prompt is more important", "ControlNet is more important")


# --- request models ----------------------------------------------------------------------


class _Strict(BaseModel):
    class Config:
        extra = Extra.forbid


# Fields of StableDiffusionProcessingImg2Img as the A1111 1.10 API model generates them
# (every field Optional, default from the constructor) plus the API's additional fields.
_IMG2IMG_FIELDS: dict[str, tuple[Any, Any]] = {
    "prompt": (str | None, ""),
    "negative_prompt": (str | None, ""),
    "styles": (list[str] | None, None),
    "seed": (int | None, -1),
    "subseed": (int | None, -1),
    "subseed_strength": (float | None, 0),
    "seed_resize_from_h": (int | None, -1),
    "seed_resize_from_w": (int | None, -1),
    "sampler_name": (str | None, None),
    "scheduler": (str | None, None),
    "batch_size": (int | None, 1),
    "n_iter": (int | None, 1),
    "steps": (int | None, 50),
    "cfg_scale": (float | None, 7.0),
    "width": (int | None, 512),
    "height": (int | None, 512),
    "restore_faces": (bool | None, None),
    "tiling": (bool | None, None),
    "do_not_save_samples": (bool | None, False),
    "do_not_save_grid": (bool | None, False),
    "eta": (float | None, None),
    "denoising_strength": (float | None, 0.75),
    "s_min_uncond": (float | None, None),
    "s_churn": (float | None, None),
    "s_tmax": (float | None, None),
    "s_tmin": (float | None, None),
    "s_noise": (float | None, None),
    "override_settings": (dict[str, Any] | None, None),
    "override_settings_restore_afterwards": (bool | None, True),
    "refiner_checkpoint": (str | None, None),
    "refiner_switch_at": (float | None, None),
    "disable_extra_networks": (bool | None, False),
    "firstpass_image": (str | None, None),
    "comments": (dict | None, None),
    "init_images": (list | None, None),
    "resize_mode": (int | None, 0),
    "image_cfg_scale": (float | None, None),
    "mask": (str | None, None),
    "mask_blur_x": (int | None, 4),
    "mask_blur_y": (int | None, 4),
    "mask_blur": (int | None, None),
    "mask_round": (bool | None, True),
    "inpainting_fill": (int | None, 0),
    "inpaint_full_res": (bool | None, True),
    "inpaint_full_res_padding": (int | None, 0),
    "inpainting_mask_invert": (int | None, 0),
    "initial_noise_multiplier": (float | None, None),
    "latent_mask": (str | None, None),
    "force_task_id": (str | None, None),
    "sampler_index": (str | None, "Euler"),
    "include_init_images": (bool | None, False),
    "script_name": (str | None, None),
    "script_args": (list | None, []),
    "send_images": (bool | None, True),
    "save_images": (bool | None, False),
    "alwayson_scripts": (dict | None, {}),
    "infotext": (str | None, None),
}


def _img2img_model(with_scheduler: bool, with_task_id: bool = True) -> type:
    fields = {
        k: v
        for k, v in _IMG2IMG_FIELDS.items()
        if (with_scheduler or k != "scheduler") and (with_task_id or k != "force_task_id")
    }
    return create_model("StableDiffusionProcessingImg2Img", __base__=_Strict, **fields)


class SdWebuiControlNetUnit(_Strict):
    """sd-webui-controlnet's ControlNetUnit (internal_controlnet/args.py): names, types, bounds."""

    is_ui: bool = False
    input_mode: Literal["simple", "batch", "merge"] = "simple"
    batch_images: Any | None = None
    output_dir: str = ""
    loopback: bool = False
    enabled: bool = False
    module: str = "none"
    model: str = "None"
    weight: float = Field(1.0, ge=0.0, le=2.0)
    image: Any | None = None
    resize_mode: Literal["Just Resize", "Crop and Resize", "Resize and Fill"] = "Crop and Resize"
    low_vram: bool = False
    processor_res: int = -1
    threshold_a: float = -1
    threshold_b: float = -1
    guidance_start: float = Field(0.0, ge=0.0, le=1.0)
    guidance_end: float = Field(1.0, ge=0.0, le=1.0)
    pixel_perfect: bool = False
    control_mode: Literal["Balanced", "My prompt is more important", "ControlNet is more important"] = "Balanced"
    inpaint_crop_input_image: bool = True
    hr_option: Literal["Both", "Low res only", "High res only"] = "Both"
    save_detected_map: bool = True
    advanced_weighting: list[float] | None = None
    effective_region_mask: str | None = None
    pulid_mode: Literal["Fidelity", "Extremely style"] = "Fidelity"
    union_control_type: Literal[
        "OpenPose", "Depth", "Soft Edge", "Hard Edge", "Normal Map", "Segmentation", "Tile", "Inpaint", "Unknown"
    ] = "Unknown"
    ipadapter_input: Any | None = None
    mask: Any | None = None
    batch_mask_dir: str | None = None
    animatediff_batch: bool = False
    batch_modifiers: list = Field(default_factory=list)
    batch_image_files: list = Field(default_factory=list)
    batch_keyframe_idx: str | list | None = None

    @root_validator(pre=True)
    def _aliases(cls, values: dict[str, Any]) -> dict[str, Any]:
        # ControlNetUnit.from_dict: legacy names and Forge's mask_image are accepted as aliases.
        for alias, key in (
            ("guidance", "guidance_end"),
            ("lowvram", "low_vram"),
            ("input_image", "image"),
            ("mask_image", "mask"),
        ):
            if alias in values:
                if key in values:
                    raise ValueError(f"Conflict of field '{alias}' and '{key}'")
                values[key] = values.pop(alias)
        mode = values.get("resize_mode")
        if isinstance(mode, str):
            values["resize_mode"] = RESIZE_MODE_ALIASES.get(mode, mode)
        return values

    @root_validator(skip_on_failure=True)
    def _guidance(cls, values: dict[str, Any]) -> dict[str, Any]:
        if values["guidance_start"] > values["guidance_end"]:
            raise ValueError(f"guidance_start({values['guidance_start']}) > guidance_end({values['guidance_end']})")
        return values


class ForgeControlNetUnit(_Strict):
    """Forge's ControlNetUnit dataclass (lib_controlnet/external_code.py): its field set and types."""

    input_mode: Literal["simple", "batch", "merge"] = "simple"
    use_preview_as_input: bool = False
    batch_image_dir: str = ""
    batch_mask_dir: str = ""
    batch_input_gallery: list[str] | None = None
    batch_mask_gallery: list[str] | None = None
    generated_image: str | None = None
    mask_image: str | None = None
    mask_image_fg: str | None = None
    hr_option: int | str = "Both"
    enabled: bool = True
    module: str = "None"
    model: str = "None"
    weight: float = 1.0
    image: str | None = None  # a dict-shaped image was broken before Aug 2024
    image_fg: str | None = None
    resize_mode: int | str = "Crop and Resize"
    processor_res: int = -1
    threshold_a: float = -1
    threshold_b: float = -1
    guidance_start: float = 0.0
    guidance_end: float = 1.0
    pixel_perfect: bool = False
    control_mode: int | str = "Balanced"
    save_detected_map: bool = True

    @root_validator(skip_on_failure=True)
    def _enums(cls, values: dict[str, Any]) -> dict[str, Any]:
        # resize_mode_from_value / control_mode_from_value: Enum(value) raises on unknown text.
        mode = values["resize_mode"]
        if isinstance(mode, str) and RESIZE_MODE_ALIASES.get(mode, mode) not in RESIZE_MODES:
            raise ValueError(f"'{mode}' is not a valid ResizeMode")
        control = values["control_mode"]
        if isinstance(control, str) and control not in CONTROL_MODES:
            raise ValueError(f"'{control}' is not a valid ControlMode")
        if isinstance(control, int) and not 0 <= control < len(CONTROL_MODES):
            raise ValueError("list index out of range")
        return values


# --- state -------------------------------------------------------------------------------


def _hash(text: str, length: int) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:length]


def checkpoint_entry(name: str) -> dict[str, Any]:
    """One /sdapi/v1/sd-models item for a file `name` under models/Stable-diffusion."""
    sha = hashlib.sha256(name.encode("utf-8")).hexdigest()
    stem = name.rsplit(".", 1)[0]
    return {
        "title": f"{name} [{sha[:10]}]",
        "model_name": stem.replace("/", "_").replace("\\", "_"),
        "hash": sha[:10],
        "sha256": sha,
        "filename": f"/webui/models/Stable-diffusion/{name}",
        "config": None,
    }


def controlnet_model_name(name: str) -> str:
    """How both ControlNet extensions list a model file: 'stem [8-hex hash]'."""
    return f"{name} [{_hash(name, 8)}]"


class _Progress:
    """shared.state of the WebUI: what /sdapi/v1/progress reports."""

    def __init__(self) -> None:
        self.job = ""
        self.job_count = 0
        self.job_no = 0
        self.sampling_step = 0
        self.sampling_steps = 0
        self.time_start = 0.0
        self.interrupted = False
        self.skipped = False
        self.job_timestamp = "0"

    def begin(self, steps: int) -> None:
        self.job, self.job_count, self.job_no = "scripts_img2img", 1, 0
        self.sampling_step, self.sampling_steps = 0, steps
        self.time_start = time.time()
        self.interrupted = self.skipped = False
        self.job_timestamp = datetime.now().strftime("%Y%m%d%H%M%S")

    def end(self) -> None:
        self.job, self.job_count, self.job_no = "", 0, 0
        self.sampling_step = self.sampling_steps = 0

    def snapshot(self) -> dict[str, Any]:
        state = {
            "skipped": self.skipped,
            "interrupted": self.interrupted,
            "stopping_generation": False,
            "job": self.job,
            "job_count": self.job_count,
            "job_timestamp": self.job_timestamp,
            "job_no": self.job_no,
            "sampling_step": self.sampling_step,
            "sampling_steps": self.sampling_steps,
        }
        if self.job_count == 0:
            return {"progress": 0, "eta_relative": 0, "state": state, "current_image": None, "textinfo": None}
        progress = 0.01 + self.job_no / self.job_count
        if self.sampling_steps > 0:
            progress += 1 / self.job_count * self.sampling_step / self.sampling_steps
        elapsed = time.time() - self.time_start
        eta_relative = elapsed / progress - elapsed
        return {
            "progress": min(progress, 1),
            "eta_relative": eta_relative,
            "state": state,
            "current_image": None,
            "textinfo": None,
        }


class FifoLock:
    """modules.fifo_lock.FIFOLock (A1111 1.7+): a non-reentrant lock granted in the order it was asked for."""

    def __init__(self) -> None:
        self._cond = threading.Condition(threading.Lock())
        self._next_ticket = 0
        self._serving = 0

    def acquire(self) -> bool:
        with self._cond:
            ticket = self._next_ticket
            self._next_ticket += 1
            while self._serving != ticket:
                self._cond.wait()
        return True

    def release(self) -> None:
        with self._cond:
            self._serving += 1
            self._cond.notify_all()

    def waiting(self) -> int:
        """Requests holding or waiting for the lock (a test hook; upstream has no such count)."""
        with self._cond:
            return self._next_ticket - self._serving

    def __enter__(self) -> bool:
        return self.acquire()

    def __exit__(self, *exc_info: Any) -> None:
        self.release()


class WebUIDoubleState:
    """Everything the double knows and records; tests read `img2img_requests` and `calls`."""

    def __init__(
        self,
        flavor: str,
        models: Sequence[str],
        loras: Sequence[str | dict[str, str]],
        controlnet_models: Sequence[str],
        samplers: Sequence[str] | None,
        schedulers: Sequence[str] | None,
        delay: float,
        fail_every: int | None,
        loaded_model: str | None,
    ) -> None:
        self.flavor = flavor
        self.controlnet_installed = True
        self.checkpoints = [checkpoint_entry(name) for name in models]
        self.loras = [_lora_entry(item) for item in loras]
        self.controlnet_models = ["None"] + [controlnet_model_name(name) for name in controlnet_models]
        self.modules = list(_FORGE_MODULES if flavor == "forge" else _A1111_MODULES)
        self.samplers = _sampler_entries(samplers)
        self.schedulers = _scheduler_entries(schedulers)
        self.delay = delay
        self.fail_every = fail_every
        first = self.checkpoints[0]["title"] if self.checkpoints else ""
        self.options: dict[str, Any] = {
            "sd_model_checkpoint": self._title(loaded_model) or first,
            "samples_format": "png",
        }
        self.loaded_title = self.options["sd_model_checkpoint"]
        self.progress = _Progress()
        # modules.call_queue.queue_lock: one GPU job at a time, waiting requests served first come first served.
        self.queue_lock = FifoLock()
        self.busy_seconds = 0.0  # time img2img held queue_lock: the "GPU" time, for benchmarks
        self.lock = threading.Lock()
        self.generation = 0  # bumped when the server is killed: renders of the old process stop
        self.img2img_requests: list[dict[str, Any]] = []
        self.calls: list[tuple[str, str]] = []
        self.renders_completed = 0
        self.rendered: list[tuple[int, float]] = []  # (seed, fraction of its steps done) per finished render
        self.interrupts = 0
        self._img2img_count = 0
        self.lora_dir: Path | None = None
        self.scanned_loras: list[dict[str, Any]] = []
        # /sdapi/v1/interrogate: False is a WebUI whose DeepBooru cannot load (upstream downloads
        # model-resnet_custom_v3.pt on first use, which fails offline)
        self.deepbooru_available = True
        self.interrogate_requests: list[dict[str, Any]] = []
        # modules/progress.py: the task ids /internal/progress reports on (guarded by `lock`).
        self.current_task: str | None = None
        self.pending_tasks: dict[str, float] = {}  # id -> time queued, in queueing order
        self.finished_tasks: list[str] = []

    # --- modules/progress.py (v1.10.1): add_task_to_queue, start_task, finish_task, progressapi ---

    def add_task_to_queue(self, id_task: str) -> None:
        with self.lock:
            self.pending_tasks[id_task] = time.time()

    def start_task(self, id_task: str) -> None:
        with self.lock:
            self.current_task = id_task
            self.pending_tasks.pop(id_task, None)

    def finish_task(self, id_task: str) -> None:
        with self.lock:
            if self.current_task == id_task:
                self.current_task = None
            self.finished_tasks.append(id_task)
            if len(self.finished_tasks) > 16:
                self.finished_tasks.pop(0)

    def task_progress(self, id_task: str | None, id_live_preview: int) -> dict[str, Any]:
        """progressapi's answer (ProgressResponse); the double keeps no live preview image."""
        with self.lock:
            active = id_task == self.current_task
            queued = id_task in self.pending_tasks
            completed = id_task in self.finished_tasks
            answer: dict[str, Any] = {
                "active": active,
                "queued": queued,
                "completed": completed,
                "progress": None,
                "eta": None,
                "live_preview": None,
                "id_live_preview": -1,
                "textinfo": "Waiting...",
            }
            if not active:
                if queued:
                    order = sorted(self.pending_tasks, key=lambda key: self.pending_tasks[key])
                    answer["textinfo"] = f"In queue: {order.index(id_task) + 1}/{len(order)}"
                return answer
            state = self.progress
            progress = 0.0
            if state.job_count > 0:
                progress += state.job_no / state.job_count
            if state.sampling_steps > 0 and state.job_count > 0:
                progress += 1 / state.job_count * state.sampling_step / state.sampling_steps
            progress = min(progress, 1)
            elapsed = time.time() - state.time_start
            answer.update(
                progress=progress,
                eta=(elapsed / progress - elapsed) if progress > 0 else None,
                id_live_preview=id_live_preview,
                textinfo=None,  # shared.state.textinfo: nothing sets it in the double
            )
            return answer

    def forget_tasks(self) -> None:
        """A killed WebUI process takes its task lists with it (called under `lock`)."""
        self.current_task = None
        self.pending_tasks.clear()

    def all_loras(self) -> list[dict[str, Any]]:
        return self.loras + self.scanned_loras

    def scan_lora_dir(self) -> None:
        """What networks.list_available_networks() finds in the Lora folder (recursively)."""
        found = []
        if self.lora_dir is not None:
            for path in sorted(self.lora_dir.rglob("*")):
                if path.suffix.lower() in (".safetensors", ".pt", ".ckpt") and path.is_file():
                    alias = _safetensors_metadata(path).get("ss_output_name") or path.stem
                    found.append({"name": path.stem, "alias": alias, "path": str(path), "metadata": {}})
        self.scanned_loras = found

    def _title(self, name: str | None) -> str | None:
        if not name:
            return None
        entry = self.checkpoint_by_alias(name)
        return entry["title"] if entry else None

    def checkpoint_by_alias(self, name: str | None) -> dict[str, Any] | None:
        """sd_models.checkpoint_aliases: title, name, model_name, stem, short hash, sha256."""
        for entry in self.checkpoints:
            name_only = entry["title"].rsplit(" [", 1)[0]
            aliases = {
                entry["title"],
                name_only,
                entry["model_name"],
                name_only.rsplit(".", 1)[0],
                entry["hash"],
                entry["sha256"],
            }
            if name in aliases:
                return entry
        return None

    def next_img2img_fails(self) -> bool:
        with self.lock:
            self._img2img_count += 1
            return bool(self.fail_every) and self._img2img_count % int(self.fail_every) == 0


def _safetensors_metadata(path: Path) -> dict[str, str]:
    try:
        with open(path, "rb") as handle:
            size = int.from_bytes(handle.read(8), "little")
            if size > path.stat().st_size:  # not a .safetensors file: the WebUI lists it without metadata
                return {}
            header = json.loads(handle.read(size).decode("utf-8"))
        return dict(header.get("__metadata__") or {})
    except (OSError, ValueError):
        return {}


def _lora_entry(item: str | dict[str, str]) -> dict[str, Any]:
    name = item if isinstance(item, str) else item["name"]
    alias = name if isinstance(item, str) else item.get("alias", name)
    return {"name": name, "alias": alias, "path": f"/webui/models/Lora/{name}.safetensors", "metadata": {}}


def _sampler_entries(names: Sequence[str] | None) -> list[dict[str, Any]]:
    if names is None:
        return copy.deepcopy(DEFAULT_SAMPLERS)
    known = {entry["name"]: entry for entry in DEFAULT_SAMPLERS}
    return [copy.deepcopy(known.get(name, {"name": name, "aliases": [], "options": {}})) for name in names]


def _scheduler_entries(labels: Sequence[str] | None) -> list[dict[str, Any]] | None:
    if labels is None:
        return None
    known = {label: (name, aliases) for name, label, aliases in DEFAULT_SCHEDULERS}
    entries = []
    for label in labels:
        name, aliases = known.get(label, (label.lower().replace(" ", "_"), None))
        entries.append({"name": name, "label": label, "aliases": aliases, "default_rho": -1, "need_inner_model": False})
    return entries


# --- rendering ---------------------------------------------------------------------------


def create_task_id(task_type: str) -> str:
    """modules.progress.create_task_id: 'task(<type>-<7 upper-case letters or digits>)'."""
    alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789"
    return f"task({task_type}-{''.join(secrets.choice(alphabet) for _ in range(7))})"


def decode_image(data: str) -> Image.Image:
    """modules.api.api.decode_base64_to_image (data: URLs too); 500 'Invalid encoded image' otherwise."""
    if data.startswith("data:image/"):
        data = data.split(";")[1].split(",")[1]
    try:
        return Image.open(io.BytesIO(base64.b64decode(data)))
    except Exception as exc:
        raise HTTPException(status_code=500, detail="Invalid encoded image") from exc


def encode_png(image: Image.Image) -> str:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return base64.b64encode(buffer.getvalue()).decode("ascii")


def _edges(unit: dict[str, Any] | None, init_b64: str, flavor: str, size: tuple[int, int]) -> np.ndarray | None:
    """The control map the unit's preprocessor makes, as a bool mask of edge pixels."""
    if unit is None:
        return None
    source = decode_image(unit.get("image") or init_b64).convert("RGB").resize(size, Image.BILINEAR)
    gray = np.asarray(source.convert("L"))
    if unit["module"].lower() != "canny":
        return gray > 127
    low, high = unit.get("threshold_a", -1), unit.get("threshold_b", -1)
    if flavor != "forge":  # sd-webui-controlnet swaps out-of-range thresholds for its defaults
        low = low if 1 <= low <= 255 else 100
        high = high if 1 <= high <= 255 else 200
    return cv2.Canny(gray, int(low), int(high)) > 0


def render_image(
    init: Image.Image, edges: np.ndarray | None, weight: float, key: str, denoise: float, done: float
) -> Image.Image:
    """Stand-in for diffusion: init tinted toward a colour hashed from `key`, edges drawn in."""
    tint = np.frombuffer(hashlib.sha256(key.encode("utf-8")).digest()[:3], dtype=np.uint8).astype(np.float32)
    pixels = np.asarray(init.convert("RGB"), dtype=np.float32)
    amount = 0.6 * denoise * done
    out = pixels * (1 - amount) + tint * amount
    if edges is not None:
        strength = 0.5 * weight * done
        out[edges] = out[edges] * (1 - strength) + 255.0 * strength
    return Image.fromarray(np.clip(out + 0.5, 0, 255).astype(np.uint8), "RGB")


def _unit_text(unit: dict[str, Any]) -> str:
    fields = (
        "module",
        "model",
        "weight",
        "resize_mode",
        "processor_res",
        "threshold_a",
        "threshold_b",
        "guidance_start",
        "guidance_end",
        "pixel_perfect",
        "control_mode",
    )
    return ", ".join(f"{' '.join(w.capitalize() for w in f.split('_'))}: {unit.get(f)}" for f in fields)


def _infotext(
    req: dict[str, Any],
    sampler: str,
    scheduler: str,
    model: dict[str, Any],
    units: list[dict[str, Any]],
    lora_hashes: list[str],
) -> str:
    params = [
        f"Steps: {req['steps']}",
        f"Sampler: {sampler}",
        f"Schedule type: {scheduler}",
        f"CFG scale: {req['cfg_scale']:g}",
        f"Seed: {req['seed']}",
        f"Size: {req['width']}x{req['height']}",
        f"Model hash: {model['hash']}",
        f"Model: {model['model_name']}",
        f"Denoising strength: {req['denoising_strength']:g}",
    ]
    params += [f'ControlNet {i}: "{_unit_text(unit)}"' for i, unit in enumerate(units)]
    if lora_hashes:
        params.append(f'Lora hashes: "{", ".join(lora_hashes)}"')
    params.append(f"Version: {WEBUI_VERSION}")
    negative = f"\nNegative prompt: {req['negative_prompt']}" if req["negative_prompt"] else ""
    return f"{req['prompt']}{negative}\n" + ", ".join(params)


# --- the app -----------------------------------------------------------------------------


def _validation_response(err: ValidationError, prefix: Sequence[Any]) -> JSONResponse:
    """FastAPI's 422 body for pydantic v1 errors (what the WebUI's FastAPI 0.94 sends)."""
    errors = [{"loc": ["body", *prefix, *e["loc"]], "msg": e["msg"], "type": e["type"]} for e in err.errors()]
    return JSONResponse(status_code=422, content=jsonable_encoder({"detail": errors}))


def _webui_error(status: int, error: str, errors: str) -> JSONResponse:
    """The WebUI API middleware's error body for an exception raised while handling a request."""
    return JSONResponse(status_code=status, content={"error": error, "detail": "", "body": "", "errors": errors})


def make_webui_double(
    flavor: str = "a1111",
    models: Sequence[str] = ("v1-5-pruned-emaonly.safetensors",),
    loras: Sequence[str | dict[str, str]] = (),
    controlnet_models: Sequence[str] = ("control_v11p_sd15_canny",),
    samplers: Sequence[str] | None = None,
    schedulers: Sequence[str] | None = tuple(label for _, label, _ in DEFAULT_SCHEDULERS),
    delay: float = 0.0,
    fail_every: int | None = None,
    auth: str | None = None,
    api_enabled: bool = True,
    controlnet_installed: bool = True,
    loaded_model: str | None = None,
    lora_dir: Path | None = None,
    internal_progress: bool = True,
    task_ids: bool = True,
) -> FastAPI:
    """A FastAPI app answering like a WebUI (see the module docstring); `app.state.double` is its state.

    flavor: "a1111" (A1111 + sd-webui-controlnet) or "forge" (Forge's built-in ControlNet).
    schedulers: labels for /sdapi/v1/schedulers, or None for a WebUI before 1.9 (no route, no field).
    delay: seconds one img2img takes (spread over its steps, so progress and interrupt work).
    fail_every: every Nth img2img answers HTTP 500 (1: always).
    auth: "user:pass" as given to --api-auth; api_enabled False is a WebUI without --api.
    lora_dir: the WebUI's Lora folder (--lora-dir); its files are listed after start and after refresh-loras.
    internal_progress: False is a WebUI started with --nowebui: webui.py api_only() sets up no
        /internal/progress (nor /internal/pending-tasks); img2img still takes force_task_id.
    task_ids: False is a WebUI from before force_task_id (1.6): its pydantic model silently
        drops the field (the one unknown field this double does not refuse), so the request
        runs under a create_task_id id and the answer's `parameters` have no force_task_id.
    """
    if flavor not in ("a1111", "forge"):
        raise ValueError("flavor must be 'a1111' or 'forge'")
    state = WebUIDoubleState(
        flavor, models, loras, controlnet_models, samplers, schedulers, delay, fail_every, loaded_model
    )
    state.controlnet_installed = controlnet_installed
    state.lora_dir = Path(lora_dir) if lora_dir is not None else None
    state.scan_lora_dir()
    app = FastAPI(title="WebUI API double")
    app.state.double = state
    request_model = _img2img_model(with_scheduler=schedulers is not None, with_task_id=task_ids)

    @app.middleware("http")
    async def record(request: Request, call_next: Any) -> Any:
        with state.lock:
            state.calls.append((request.method, request.url.path))
        return await call_next(request)

    @app.get("/double/stats")  # the double's own diagnostics (no WebUI has this route), for benchmarks
    def stats() -> dict[str, Any]:
        with state.lock:
            return {"busy_seconds": state.busy_seconds, "renders_completed": state.renders_completed}

    api_dependencies = [Depends(_basic_auth(auth))] if auth else []
    if api_enabled:
        _add_api_routes(app, state, request_model, api_dependencies)
    if internal_progress:
        _add_progress_routes(app, state)
    _add_extension_routes(app, state, controlnet_installed)
    return app


def _basic_auth(auth: str) -> Any:
    user, _, password = auth.partition(":")

    def check(credentials: HTTPBasicCredentials = Depends(HTTPBasic())) -> bool:
        if secrets.compare_digest(credentials.username, user) and secrets.compare_digest(
            credentials.password, password
        ):
            return True
        raise HTTPException(
            status_code=401, detail="Incorrect username or password", headers={"WWW-Authenticate": "Basic"}
        )

    return check


def _add_api_routes(app: FastAPI, state: WebUIDoubleState, request_model: type, deps: list[Any]) -> None:
    @app.get("/sdapi/v1/sd-models", dependencies=deps)
    def sd_models() -> list[dict[str, Any]]:
        return state.checkpoints

    @app.get("/sdapi/v1/samplers", dependencies=deps)
    def samplers() -> list[dict[str, Any]]:
        return state.samplers

    if state.schedulers is not None:

        @app.get("/sdapi/v1/schedulers", dependencies=deps)
        def schedulers() -> list[dict[str, Any]]:
            return state.schedulers or []

    @app.get("/sdapi/v1/options", dependencies=deps)
    def get_options() -> dict[str, Any]:
        return dict(state.options)

    @app.post("/sdapi/v1/options", dependencies=deps)
    def set_options(req: dict[str, Any] = Body(...)) -> Any:
        checkpoint = req.get("sd_model_checkpoint")
        if checkpoint is not None and state.checkpoint_by_alias(checkpoint) is None:
            return _webui_error(500, "RuntimeError", f"model {checkpoint!r} not found")
        state.options.update(req)
        if checkpoint is not None:
            state.loaded_title = state.checkpoint_by_alias(checkpoint)["title"]  # type: ignore[index]
        return None

    @app.get("/sdapi/v1/progress", dependencies=deps)
    def progress(skip_current_image: bool = False) -> dict[str, Any]:
        with state.lock:
            return state.progress.snapshot()

    @app.post("/sdapi/v1/interrupt", dependencies=deps)
    def interrupt() -> dict[str, Any]:
        with state.lock:
            state.progress.interrupted = True
            state.interrupts += 1
        return {}

    @app.post("/sdapi/v1/skip", dependencies=deps)
    def skip() -> None:
        with state.lock:
            state.progress.skipped = True

    @app.post("/sdapi/v1/img2img", dependencies=deps)
    def img2img(payload: dict[str, Any] = Body(...)) -> Any:
        return _img2img(state, request_model, payload)

    @app.post("/sdapi/v1/interrogate", dependencies=deps)
    def interrogate(payload: dict[str, Any] = Body(...)) -> Any:
        return _interrogate(state, payload)


class ProgressRequest(_Strict):
    """modules/progress.py ProgressRequest (v1.10.1)."""

    id_task: str | None = Field(None, title="Task ID", description="id of the task to get progress for")
    id_live_preview: int = Field(
        -1, title="Live preview image ID", description="id of last received last preview image"
    )
    live_preview: bool = Field(
        True,
        title="Include live preview",
        description="boolean flag indicating whether to include the live preview image",
    )


def _add_progress_routes(app: FastAPI, state: WebUIDoubleState) -> None:
    """progress.setup_progress_api: on the UI's app, so present without --api and not behind --api-auth."""

    @app.post("/internal/progress")
    def internal_progress(payload: dict[str, Any] = Body(...)) -> Any:
        try:
            request = ProgressRequest.parse_obj(payload)
        except ValidationError as err:
            return _validation_response(err, [])
        return state.task_progress(request.id_task, request.id_live_preview)

    @app.get("/internal/pending-tasks")
    def pending_tasks() -> dict[str, Any]:
        with state.lock:
            tasks = list(state.pending_tasks)
        return {"size": len(tasks), "tasks": tasks}


class InterrogateRequest(_Strict):
    """modules/api/models.py InterrogateRequest (v1.10.1)."""

    image: str = Field(
        "", title="Image", description="Image to work on, must be a Base64 string containing the image's data."
    )
    model: str = Field("clip", title="Model", description="The interrogate model used.")


# What the stand-in DeepBooru "sees": tags by falling probability, as DeepDanbooru.tag_multi
# returns them with the WebUI's defaults (spaces for underscores, parentheses escaped, no
# ranks, no rating: tags). The third tag names the image's dominant colour, so a test can
# tell which image was tagged; star_(symbol) is a real tag that shows the escaping.
_DEEPBOORU_TAGS = ("1girl", "solo", "{colour} theme", "smile", "star_(symbol)", "simple background")
_COLOURS = {
    "red": (220, 40, 40),
    "green": (40, 200, 60),
    "blue": (40, 60, 220),
    "white": (245, 245, 245),
    "black": (15, 15, 15),
}


def _deepbooru_caption(image: Image.Image) -> str:
    mean = np.asarray(image.convert("RGB"), dtype=np.float32).reshape(-1, 3).mean(axis=0)
    colour = min(_COLOURS, key=lambda name: float(np.sum((mean - np.array(_COLOURS[name])) ** 2)))
    tags = [t.format(colour=colour).replace("_", " ") for t in _DEEPBOORU_TAGS]
    return ", ".join(t.replace("(", "\\(").replace(")", "\\)") for t in tags)


def _api_http_error(status: int, detail: str) -> JSONResponse:
    """An HTTPException as the WebUI's api_middleware answers it (handle_exception)."""
    return JSONResponse(
        status_code=status,
        content={"error": "HTTPException", "detail": detail, "body": "", "errors": f"{status}: {detail}"},
    )


def _interrogate(state: WebUIDoubleState, payload: dict[str, Any]) -> Any:
    """modules/api/api.py interrogateapi: decode (500 'Invalid encoded image'), then under the
    queue lock clip / deepdanbooru, any other model 404 'Model not found'."""
    try:
        request = InterrogateRequest.parse_obj(payload)
    except ValidationError as err:
        return _validation_response(err, [])
    with state.lock:
        state.interrogate_requests.append({"model": request.model, "image_chars": len(request.image)})
    try:
        image = decode_image(request.image)
        image.load()
    except (HTTPException, OSError):
        return _api_http_error(500, "Invalid encoded image")
    with state.queue_lock:
        if request.model == "clip":
            return {"caption": "a picture of a person with a smile"}
        if request.model == "deepdanbooru":
            if not state.deepbooru_available:
                # modelloader.load_file_from_url failing offline, reported by handle_exception
                return _webui_error(500, "URLError", "<urlopen error [Errno -3] Temporary failure in name resolution>")
            return {"caption": _deepbooru_caption(image)}
        return _api_http_error(404, "Model not found")


def _add_extension_routes(app: FastAPI, state: WebUIDoubleState, controlnet_installed: bool) -> None:
    # Registered by on_app_started callbacks: present without --api and not behind --api-auth.
    @app.get("/sdapi/v1/loras")
    def loras() -> list[dict[str, Any]]:
        return state.all_loras()

    @app.post("/sdapi/v1/refresh-loras")
    def refresh_loras() -> None:
        state.scan_lora_dir()

    if not controlnet_installed:
        return

    @app.get("/controlnet/model_list")
    def model_list() -> dict[str, Any]:
        return {"model_list": state.controlnet_models}

    @app.get("/controlnet/module_list")
    def module_list() -> dict[str, Any]:
        if state.flavor == "forge":
            return {"module_list": state.modules}
        detail = {
            m: {"model_free": m == "none", "sliders": _CANNY_SLIDERS if m == "canny" else [_RESOLUTION_SLIDER]}
            for m in state.modules
        }
        return {"module_list": state.modules, "module_detail": detail}

    @app.get("/controlnet/control_types")  # in Forge too since Aug 2024 (#912)
    def control_types() -> dict[str, Any]:
        canny = [m for m in state.controlnet_models if "canny" in m.lower()]
        return {
            "control_types": {
                "Canny": {
                    "module_list": [state.modules[0], "canny"],
                    "model_list": ["None", *canny],
                    "default_option": "canny",
                    "default_model": canny[0] if canny else "None",
                }
            }
        }

    if state.flavor == "forge":
        return

    @app.get("/controlnet/version")
    def version() -> dict[str, Any]:
        return {"version": 3}

    @app.get("/controlnet/settings")
    def settings() -> dict[str, Any]:
        return {"control_net_unit_count": 3}


def _controlnet_units(
    state: WebUIDoubleState, scripts: dict[str, Any]
) -> tuple[list[dict[str, Any]], JSONResponse | None]:
    """Validate alwayson_scripts; the enabled ControlNet units as dicts, or an error response."""
    units: list[dict[str, Any]] = []
    for key, value in scripts.items():
        if key.lower() != "controlnet" or not state.controlnet_installed:
            return [], JSONResponse(status_code=422, content={"detail": f"always on script {key} not found"})
        args = value.get("args", []) if isinstance(value, dict) else []
        for index, raw in enumerate(args):
            unit, error = _validate_unit(state, raw, ["alwayson_scripts", key, "args", index])
            if error is not None:
                return [], error
            if unit["enabled"]:
                units.append(unit)
    return units, None


def _validate_unit(state: WebUIDoubleState, raw: Any, loc: list[Any]) -> tuple[dict[str, Any], JSONResponse | None]:
    model = ForgeControlNetUnit if state.flavor == "forge" else SdWebuiControlNetUnit
    if not isinstance(raw, dict):
        return {}, JSONResponse(
            status_code=422,
            content={
                "detail": [{"loc": ["body", *loc], "msg": "value is not a valid dict", "type": "type_error.dict"}]
            },
        )
    try:
        unit = model.parse_obj(raw).dict()
    except ValidationError as err:
        return {}, _validation_response(err, loc)
    if not unit["enabled"]:
        return unit, None
    if unit["module"] not in state.modules:
        if state.flavor == "forge":  # global_state.get_preprocessor() -> None, then called
            return {}, _webui_error(500, "TypeError", "'NoneType' object is not callable")
        msg = f"module({unit['module']}) not found in supported modules."
        return {}, JSONResponse(
            status_code=422, content={"detail": [{"loc": ["body", *loc, "module"], "msg": msg, "type": "value_error"}]}
        )
    if unit["model"] not in state.controlnet_models[1:]:
        return {}, _webui_error(500, "KeyError", repr(unit["model"]))
    return unit, None


def _resolve_sampler(state: WebUIDoubleState, name: str | None, scheduler: str | None) -> tuple[str | None, str]:
    """sd_samplers.get_sampler_and_scheduler (1.9+): split a schedule suffix; unknown -> the default sampler."""
    names = [s["name"] for s in state.samplers]
    if state.schedulers is None:  # before 1.9: validate_sampler_name
        return (name if name in names else None), "Automatic"
    by_any = {opt: s for s in state.schedulers for opt in [s["label"], s["name"], *(s["aliases"] or [])]}
    found = by_any.get(scheduler or "", state.schedulers[0])
    sampler = name or names[0]
    for entry in state.schedulers:
        for option in [entry["label"], entry["name"], *(entry["aliases"] or [])]:
            if sampler.endswith(" " + option):
                found, sampler = entry, sampler[: -len(option) - 1]
                break
    chosen = sampler if sampler in names else names[0]
    return chosen, found["label"]


def _img2img(state: WebUIDoubleState, request_model: type, payload: dict[str, Any]) -> Any:
    with state.lock:
        state.img2img_requests.append(copy.deepcopy(payload))
        generation = state.generation  # a request queued in a process that then "dies" dies with it
    if "force_task_id" not in request_model.__fields__:  # a WebUI before force_task_id drops it
        payload = {key: value for key, value in payload.items() if key != "force_task_id"}
    try:
        req = request_model.parse_obj(payload).dict()
    except ValidationError as err:
        return _validation_response(err, [])
    units, error = _controlnet_units(state, req["alwayson_scripts"] or {})
    if error is not None:
        return error
    if not req["init_images"]:
        raise HTTPException(status_code=404, detail="Init image not found")
    sampler, scheduler = _resolve_sampler(state, req["sampler_name"] or req["sampler_index"], req.get("scheduler"))
    if sampler is None:
        raise HTTPException(status_code=404, detail="Sampler not found")
    if state.next_img2img_fails():
        return _webui_error(500, "RuntimeError", "double: simulated failure (fail_every)")
    size = (int(req["width"]), int(req["height"]))
    # img2imgapi: `force_task_id or create_task_id("img2img")`, queued before the queue lock.
    task_id = req.get("force_task_id") or create_task_id("img2img")
    state.add_task_to_queue(task_id)
    # Upstream img2imgapi decodes the init images inside queue_lock, and the ControlNet script
    # reads its unit images inside process_images: a queued request does this after the lock.
    with state.queue_lock:
        held_from = time.perf_counter()
        init = decode_image(req["init_images"][0]).convert("RGB").resize(size, Image.BILINEAR)
        edges = [_edges(unit, req["init_images"][0], state.flavor, size) for unit in units]
        model, done = _run_job(state, req, generation, task_id)
        with state.lock:
            state.busy_seconds += time.perf_counter() - held_from
    if done is None:  # the server "died" mid-render; the connection is already gone
        return _webui_error(500, "RuntimeError", "double: process killed")
    return _answer(state, req, model, units, edges, init, sampler, scheduler, done)


def _run_job(
    state: WebUIDoubleState, req: dict[str, Any], generation: int, task_id: str
) -> tuple[dict[str, Any], float | None]:
    """process_images: apply the checkpoint override, step through `delay`, honour interrupt.

    `progress.begin` clears `interrupted` as shared.state.begin does, so an interrupt sent
    while this request waited in the queue does not stop it. As in img2imgapi, the task
    starts after begin() and finishes (an interrupted one too) before end(); a job that fails
    never calls finish_task, so its id stays the current task until the next one starts.
    """
    override = dict(req["override_settings"] or {})
    stored = dict(state.options)
    wanted = state.checkpoint_by_alias(override.get("sd_model_checkpoint"))
    if wanted is None:  # unknown override: silently dropped, the selected model is used
        override.pop("sd_model_checkpoint", None)
    state.options.update(override)
    state.loaded_title = state.options["sd_model_checkpoint"]
    model = state.checkpoint_by_alias(state.loaded_title) or {"hash": "", "model_name": "", "title": ""}
    steps = max(int(req["steps"]), 1)
    with state.lock:
        state.progress.begin(steps)
    if state.generation == generation:  # a request of a "killed" process starts nothing
        state.start_task(task_id)
    done_steps = 0
    try:
        for _ in range(steps):
            if state.progress.interrupted or state.generation != generation:
                break
            time.sleep(state.delay / steps)
            done_steps += 1
            with state.lock:
                state.progress.sampling_step = done_steps
        if state.generation == generation:
            state.finish_task(task_id)
    finally:
        with state.lock:
            state.progress.end()
        if req["override_settings_restore_afterwards"]:
            state.options = stored
    if state.generation != generation:
        return model, None
    with state.lock:
        state.renders_completed += 1
        state.rendered.append((int(req["seed"]), done_steps / steps))
    return model, done_steps / steps


def _answer(
    state: WebUIDoubleState,
    req: dict[str, Any],
    model: dict[str, Any],
    units: list[dict[str, Any]],
    edges: list[np.ndarray | None],
    init: Image.Image,
    sampler: str,
    scheduler: str,
    done: float,
) -> dict[str, Any]:
    listed = state.all_loras()
    known_loras = {entry["name"]: entry for entry in listed} | {entry["alias"]: entry for entry in listed}
    tags = [tag.split(":") for tag in _lora_tags(req["prompt"])]
    applied = [f"{known_loras[t[0]]['name']}: {_hash(t[0], 12)}" for t in tags if t and t[0] in known_loras]
    key = "|".join(
        str(x)
        for x in (
            model["title"],
            req["prompt"],
            req["negative_prompt"],
            req["seed"],
            sampler,
            scheduler,
            req["steps"],
            req["cfg_scale"],
            ";".join(applied),
        )
    )
    image = init
    for unit, unit_edges in zip(units, edges, strict=False):
        image = render_image(image, unit_edges, float(unit["weight"]), key, 0.0, done)
    image = render_image(image, None, 0.0, key, float(req["denoising_strength"]), done)
    infotext = _infotext(req, sampler, scheduler, model, units, applied)
    images = [encode_png(image)]
    if req["send_images"] is False:
        images = []
    images += [
        encode_png(Image.fromarray((e * 255).astype(np.uint8)).convert("RGB"))
        for u, e in zip(units, edges, strict=False)
        if u["save_detected_map"] and e is not None and req["send_images"]
    ]
    info = {
        "prompt": req["prompt"],
        "all_prompts": [req["prompt"]],
        "negative_prompt": req["negative_prompt"],
        "all_negative_prompts": [req["negative_prompt"]],
        "seed": req["seed"],
        "all_seeds": [req["seed"]],
        "subseed": req["subseed"],
        "all_subseeds": [req["subseed"]],
        "subseed_strength": req["subseed_strength"],
        "width": req["width"],
        "height": req["height"],
        "sampler_name": sampler,
        "cfg_scale": req["cfg_scale"],
        "steps": req["steps"],
        "batch_size": 1,
        "restore_faces": False,
        "face_restoration_model": None,
        "sd_model_name": model["model_name"],
        "sd_model_hash": model["hash"],
        "sd_vae_name": None,
        "sd_vae_hash": None,
        "seed_resize_from_w": -1,
        "seed_resize_from_h": -1,
        "denoising_strength": req["denoising_strength"],
        "extra_generation_params": {"Schedule type": scheduler},
        "index_of_first_image": 0,
        "infotexts": [infotext],
        "styles": [],
        "job_timestamp": state.progress.job_timestamp,
        "clip_skip": 1,
        "is_using_inpainting_conditioning": False,
        "version": WEBUI_VERSION,
    }
    parameters = dict(req)
    if not req["include_init_images"]:
        parameters["init_images"] = None
        parameters["mask"] = None
    return {"images": images, "parameters": parameters, "info": json.dumps(info)}


def _lora_tags(prompt: str) -> list[str]:
    """'<lora:NAME:WEIGHT>' -> 'NAME:WEIGHT' (extra networks syntax)."""
    tags = []
    rest = prompt
    while "<lora:" in rest:
        start = rest.index("<lora:") + len("<lora:")
        end = rest.find(">", start)
        if end < 0:
            break
        tags.append(rest[start:end])
        rest = rest[end + 1 :]
    return tags


# --- serving it in a thread --------------------------------------------------------------


class DoubleServer:
    """Serve a double (or any FastAPI app) with uvicorn on 127.0.0.1 in a thread.

    stop() kills it like a crash (open connections dropped mid-request); start() again
    serves on the same port, with the same state.
    """

    def __init__(self, app: FastAPI, port: int = 0) -> None:
        self.app = app
        self.port = port
        self._server: uvicorn.Server | None = None
        self._thread: threading.Thread | None = None
        self._loop: asyncio.AbstractEventLoop | None = None

    @property
    def state(self) -> WebUIDoubleState:
        return self.app.state.double

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, timeout: float = 10.0) -> DoubleServer:
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(("127.0.0.1", self.port))
        self.port = sock.getsockname()[1]
        config = uvicorn.Config(self.app, log_level="warning", access_log=False, lifespan="off")
        self._server = uvicorn.Server(config)
        self._thread = threading.Thread(
            target=self._run, args=(self._server, sock), daemon=True, name=f"webui-double-{self.port}"
        )
        self._thread.start()
        deadline = time.monotonic() + timeout
        while not self._server.started:
            if time.monotonic() > deadline or not self._thread.is_alive():
                raise RuntimeError(f"the WebUI double did not start on port {self.port}")
            time.sleep(0.01)
        return self

    def _run(self, server: uvicorn.Server, sock: socket.socket) -> None:
        self._loop = asyncio.new_event_loop()
        asyncio.set_event_loop(self._loop)
        try:
            self._loop.run_until_complete(server.serve(sockets=[sock]))
        finally:
            self._loop.close()

    def stop(self, abort_in_flight: bool = True, timeout: float = 10.0) -> None:
        """Stop serving; with abort_in_flight, drop open connections at once, as a crashed WebUI would."""
        server, thread, loop = self._server, self._thread, self._loop
        if server is None or thread is None:
            return
        if abort_in_flight:
            state = getattr(self.app.state, "double", None)  # any FastAPI app can be served
            if state is not None:
                with state.lock:
                    state.generation += 1
                    state.forget_tasks()
            if loop is not None and not loop.is_closed():
                loop.call_soon_threadsafe(self._abort_connections, server)
            server.force_exit = True
        server.should_exit = True
        thread.join(timeout)
        self._server = self._thread = self._loop = None

    @staticmethod
    def _abort_connections(server: uvicorn.Server) -> None:
        for connection in list(server.server_state.connections):
            transport = getattr(connection, "transport", None)
            if transport is not None:
                transport.abort()

    def restart(self) -> DoubleServer:
        self.stop()
        return self.start()

    def __enter__(self) -> DoubleServer:
        return self.start()

    def __exit__(self, *exc_info: Any) -> None:
        self.stop()


def main(argv: Sequence[str] | None = None) -> None:
    """Serve a double by hand or for benchmarks: python -m tests.doubles.webui_double --port 7860."""
    import argparse

    parser = argparse.ArgumentParser(description="Serve the WebUI API test double (not a real WebUI) on 127.0.0.1.")
    parser.add_argument("--port", type=int, default=7860)
    parser.add_argument("--flavor", choices=["a1111", "forge"], default="a1111")
    parser.add_argument("--delay", type=float, default=0.0, help="seconds per img2img")
    parser.add_argument("--fail-every", type=int, default=None)
    parser.add_argument("--auth", default=None, help="user:pass, like --api-auth")
    parser.add_argument("--lora", action="append", default=[], help="a LoRA name to list (repeatable)")
    args = parser.parse_args(argv)
    app = make_webui_double(
        flavor=args.flavor, delay=args.delay, fail_every=args.fail_every, auth=args.auth, loras=args.lora
    )
    server = DoubleServer(app, port=args.port).start()
    print(f"WebUI double ({args.flavor}) serving {server.url}", flush=True)
    try:
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        server.stop()


if __name__ == "__main__":
    main()
