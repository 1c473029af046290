"""TEST DOUBLE of modules/processing.py (A1111 v1.10.1): img2img processing objects and process_images.

Kept from upstream, because Vidstyle relies on it:
* StableDiffusionProcessing is a dataclass with the same constructor fields (a subset),
  and the `scripts` / `script_args` setters run the scripts' setup() once both are set,
  skipping `setup_for_ui_only` scripts when `p.is_api`;
* process_images applies `override_settings` (silently dropping a checkpoint that
  `sd_models.checkpoint_aliases` does not know), (re)loads the checkpoint, and restores the
  settings afterwards when `override_settings_restore_afterwards`;
* process_images_inner sets `state.job_count` when it is -1, stops before the batch when
  `state.interrupted` / `stopping_generation`, calls `state.nextjob()` after it, and returns
  the partial image when Interrupt or Skip arrives during sampling (k-diffusion's callback
  raises InterruptedException, which the sampler catches);
* LoRA tags `<lora:name:weight>` in the prompt activate known LoRAs (and write "Lora hashes"
  to the infotext); unknown names are silently skipped, as the Lora extension does.
The "model" is a stand-in: the init image tinted by a hash of everything that would change
the pixels (prompt, seed, sampler, schedule, steps, CFG, checkpoint, active LoRAs), with the
edges of every enabled ControlNet unit's image painted white, so tests can see which inputs
reached it.
"""

from __future__ import annotations

import hashlib
import re
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from PIL import Image

from modules import sd_models, shared
from modules.shared import opts, state

_step_hooks: list[Callable[[Any, int], None]] = []  # test hook: run at every sampling step (press buttons here)
_runs: list[Any] = []  # test hook: every p that reached sampling

_LORA_TAG = re.compile(r"<lora:([^:>]+):([^:>]+)>")


@dataclass(repr=False)
class StableDiffusionProcessing:
    sd_model: object = None
    outpath_samples: str = None
    outpath_grids: str = None
    prompt: str = ""
    negative_prompt: str = ""
    styles: list = None
    seed: int = -1
    subseed: int = -1
    subseed_strength: float = 0
    seed_resize_from_h: int = -1
    seed_resize_from_w: int = -1
    sampler_name: str = None
    scheduler: str = None
    batch_size: int = 1
    n_iter: int = 1
    steps: int = 50
    cfg_scale: float = 7.0
    width: int = 512
    height: int = 512
    do_not_save_samples: bool = False
    do_not_save_grid: bool = False
    extra_generation_params: dict = None
    denoising_strength: float = None
    override_settings: dict = None
    override_settings_restore_afterwards: bool = True

    scripts_value: Any = field(default=None, init=False)
    script_args_value: list = field(default=None, init=False)
    scripts_setup_complete: bool = field(default=False, init=False)
    is_api: bool = field(default=False, init=False)

    def __post_init__(self):
        if self.styles is None:
            self.styles = []
        self.extra_generation_params = self.extra_generation_params or {}
        self.override_settings = self.override_settings or {}
        self.script_args = self.script_args or {}

    @property
    def scripts(self):
        return self.scripts_value

    @scripts.setter
    def scripts(self, value):
        self.scripts_value = value
        if self.scripts_value and self.script_args_value and not self.scripts_setup_complete:
            self.setup_scripts()

    @property
    def script_args(self):
        return self.script_args_value

    @script_args.setter
    def script_args(self, value):
        self.script_args_value = value
        if self.scripts_value and self.script_args_value and not self.scripts_setup_complete:
            self.setup_scripts()

    def setup_scripts(self):
        self.scripts_setup_complete = True
        self.scripts.setup_scrips(self, is_ui=not self.is_api)

    def close(self):
        self._closed = True


@dataclass(repr=False)
class StableDiffusionProcessingImg2Img(StableDiffusionProcessing):
    init_images: list = None
    resize_mode: int = 0
    denoising_strength: float = 0.75
    image_cfg_scale: float = None
    mask: Any = None
    initial_noise_multiplier: float = None
    force_task_id: str = None


class Processed:
    def __init__(
        self,
        p: StableDiffusionProcessing,
        images_list,
        seed=-1,
        info="",
        subseed=None,
        all_prompts=None,
        all_negative_prompts=None,
        all_seeds=None,
        all_subseeds=None,
        index_of_first_image=0,
        infotexts=None,
        comments="",
    ):
        self.images = images_list
        self.prompt = p.prompt
        self.negative_prompt = p.negative_prompt
        self.seed = seed
        self.subseed = subseed
        self.info = info
        self.width = p.width
        self.height = p.height
        self.sampler_name = p.sampler_name
        self.steps = p.steps
        self.extra_generation_params = p.extra_generation_params
        self.index_of_first_image = index_of_first_image
        self.infotexts = infotexts or [info] * len(images_list)


def create_infotext(
    p,
    all_prompts,
    all_seeds,
    all_subseeds,
    comments=None,
    iteration=0,
    position_in_batch=0,
    use_main_prompt=False,
    index=None,
    all_negative_prompts=None,
):
    index = position_in_batch + iteration * p.batch_size if index is None else index
    info = shared.sd_model.sd_checkpoint_info
    params = {
        "Steps": p.steps,
        "Sampler": p.sampler_name,
        "Schedule type": p.scheduler,
        "CFG scale": p.cfg_scale,
        "Seed": all_seeds[index],
        "Size": f"{p.width}x{p.height}",
        "Model hash": info.shorthash,
        "Model": info.name_for_extra,
        "Denoising strength": p.denoising_strength,
        **p.extra_generation_params,
        "Version": "v1.10.1",
    }
    text = ", ".join(f"{k}: {v}" for k, v in params.items() if v is not None)
    negative = all_negative_prompts[index] if all_negative_prompts else p.negative_prompt
    return f"{all_prompts[index]}" + (f"\nNegative prompt: {negative}" if negative else "") + f"\n{text}"


def process_images(p: StableDiffusionProcessing) -> Processed:
    if p.scripts is not None:
        p.scripts.before_process(p)

    stored_opts = {
        k: opts.data[k] if k in opts.data else opts.get_default(k) for k in p.override_settings.keys() if k in opts.data
    }

    try:
        if sd_models.checkpoint_aliases.get(p.override_settings.get("sd_model_checkpoint")) is None:
            p.override_settings.pop("sd_model_checkpoint", None)
            sd_models.reload_model_weights()

        for k, v in p.override_settings.items():
            opts.set(k, v, is_api=True, run_callbacks=False)

            if k == "sd_model_checkpoint":
                sd_models.reload_model_weights()

        res = process_images_inner(p)

    finally:
        if p.override_settings_restore_afterwards:
            for k, v in stored_opts.items():
                setattr(opts, k, v)

    return res


def process_images_inner(p: StableDiffusionProcessing) -> Processed:
    seed = p.seed if p.seed != -1 else int(np.random.randint(0, 2**32 - 1))
    p.all_prompts = [p.prompt] * p.n_iter * p.batch_size
    p.all_negative_prompts = [p.negative_prompt] * p.n_iter * p.batch_size
    p.all_seeds = [int(seed) + x for x in range(len(p.all_prompts))]
    p.all_subseeds = [int(p.subseed) + x for x in range(len(p.all_prompts))]

    if p.scripts is not None:
        p.scripts.process(p)

    infotexts = []
    output_images = []

    if state.job_count == -1:
        state.job_count = p.n_iter

    for n in range(p.n_iter):
        p.iteration = n

        if state.skipped:
            state.skipped = False

        if state.interrupted or state.stopping_generation:
            break

        p.prompts = p.all_prompts[n * p.batch_size : (n + 1) * p.batch_size]
        p.seeds = p.all_seeds[n * p.batch_size : (n + 1) * p.batch_size]
        p.subseeds = p.all_subseeds[n * p.batch_size : (n + 1) * p.batch_size]
        loras = _activate_loras(p)

        if p.scripts is not None:
            p.scripts.process_batch(p, batch_number=n, prompts=p.prompts, seeds=p.seeds, subseeds=p.subseeds)

        image = _sample(p, p.seeds[0], loras)
        state.nextjob()

        text = create_infotext(p, p.all_prompts, p.all_seeds, p.all_subseeds, iteration=n)
        infotexts.append(text)
        image.info["parameters"] = text
        output_images.append(image)

    if not infotexts:
        infotexts.append(create_infotext(p, p.all_prompts, p.all_seeds, p.all_subseeds))

    res = Processed(
        p,
        images_list=output_images,
        seed=p.all_seeds[0],
        info=infotexts[0],
        subseed=p.all_subseeds[0],
        infotexts=infotexts,
    )

    if p.scripts is not None:
        p.scripts.postprocess(p, res)

    return res


def _activate_loras(p) -> list[str]:
    """The Lora extension's activate(): known names load, unknown ones are skipped."""
    networks = sys.modules.get("networks")
    known = getattr(networks, "available_networks", {}) if networks is not None else {}
    active = [(name, float(weight)) for name, weight in _LORA_TAG.findall(p.prompts[0]) if name in known]
    if active:
        p.extra_generation_params["Lora hashes"] = ", ".join(f"{name}: {known[name].shorthash}" for name, _ in active)
    return [f"{name}:{weight:g}" for name, weight in active]


def _sample(p, seed: int, loras: list[str]) -> Image.Image:
    _runs.append(p)
    init = p.init_images[0].convert("RGB").resize((p.width, p.height))  # resize_mode 0: just resize
    base = np.asarray(init, dtype=np.float32)
    key = repr(
        (
            _LORA_TAG.sub("", p.prompt),
            p.negative_prompt,
            seed,
            p.sampler_name,
            p.scheduler,
            p.steps,
            p.cfg_scale,
            shared.sd_model.sd_checkpoint_info.title,
            loras,
        )
    )
    tint = np.frombuffer(hashlib.sha256(key.encode()).digest()[:3], dtype=np.uint8).astype(np.float32)

    done = 0
    state.sampling_steps = p.steps
    for step in range(p.steps):
        state.sampling_step = step
        for hook in list(_step_hooks):
            hook(p, step)
        if state.interrupted or state.skipped:
            break  # the partial latent is decoded and returned, as upstream
        done = step + 1

    strength = float(p.denoising_strength) * done / max(p.steps, 1)
    out = base * (1.0 - strength) + tint * strength
    for unit in getattr(p, "_controlnet_units", []):
        image = unit.image["image"] if isinstance(unit.image, dict) else unit.image  # Forge before Aug 2024: a pair
        control = Image.fromarray(np.asarray(image, dtype=np.uint8)).convert("L").resize((p.width, p.height))
        out[np.asarray(control) > 127] = 255.0
    return Image.fromarray(np.clip(out, 0, 255).astype(np.uint8))
