"""WebUI sampler and schedule-type names -> diffusers schedulers, kept as plain data.

The table follows diffusers' own "A1111/k-diffusion -> diffusers" mapping. Importing this
module needs neither torch nor diffusers (the CLI and spec checks use it for validation);
`build_scheduler` imports diffusers only when a scheduler is really built.

How the two spec fields combine:
* `sampling.sampler` picks the solver and its default sigma schedule ("... Karras" names
  turn Karras sigmas on, as they did in the WebUI before 1.9).
* `sampling.scheduler` ("schedule type" in WebUI 1.9+) overrides the sigma schedule when it
  is not "Automatic". A schedule the chosen diffusers solver cannot do is a SpecError, not
  a silent fallback (e.g. "Euler a" has no Karras variant in diffusers).
"""

from __future__ import annotations

import inspect
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from .errors import SpecError


@dataclass(frozen=True)
class SamplerRecipe:
    """A diffusers scheduler class name plus the config options that make it the WebUI sampler."""

    scheduler_class: str
    options: Mapping[str, Any] = field(default_factory=dict)


# The one sampler table: its keys, in this order, are the names the spec, the CLI and the
# tab offer (the WebUI backends pass them through after checking /sdapi/v1/samplers).
SAMPLER_RECIPES: dict[str, SamplerRecipe] = {
    "Euler a": SamplerRecipe("EulerAncestralDiscreteScheduler"),
    "Euler": SamplerRecipe("EulerDiscreteScheduler", {"use_karras_sigmas": False}),
    "DPM++ 2M Karras": SamplerRecipe(
        "DPMSolverMultistepScheduler",
        {"algorithm_type": "dpmsolver++", "solver_order": 2, "use_karras_sigmas": True},
    ),
    "DPM++ 2M": SamplerRecipe(
        "DPMSolverMultistepScheduler",
        {"algorithm_type": "dpmsolver++", "solver_order": 2, "use_karras_sigmas": False},
    ),
    # k-diffusion's DPM++ SDE is a stochastic two-stage single-step solver; diffusers' table maps
    # it to the single-step DPM-Solver++ (deterministic, and it needs no torchsde).
    "DPM++ SDE Karras": SamplerRecipe(
        "DPMSolverSinglestepScheduler",
        # lower_order_final: finish with a first-order step, as diffusers needs for a zero final sigma.
        {"algorithm_type": "dpmsolver++", "solver_order": 2, "use_karras_sigmas": True, "lower_order_final": True},
    ),
    "DDIM": SamplerRecipe("DDIMScheduler", {"set_alpha_to_one": False, "clip_sample": False}),
    "UniPC": SamplerRecipe("UniPCMultistepScheduler", {"use_karras_sigmas": False}),
}
SAMPLERS: tuple[str, ...] = tuple(SAMPLER_RECIPES)

# Schedule type -> config options; an option the sampler's class lacks makes the pair invalid.
# "Automatic" keeps the sampler's own schedule; "Uniform"/"Normal" are plain spacing.
_SIGMA_FLAGS = ("use_karras_sigmas", "use_exponential_sigmas", "use_beta_sigmas")
SCHEDULE_TYPES: dict[str, Mapping[str, Any]] = {
    "Automatic": {},
    "Uniform": {"use_karras_sigmas": False},
    "Normal": {"use_karras_sigmas": False},
    "Karras": {"use_karras_sigmas": True},
    "Exponential": {"use_exponential_sigmas": True},
    "Beta": {"use_beta_sigmas": True},
    "SGM Uniform": {"timestep_spacing": "trailing"},
}

# Which options each diffusers class accepts (checked against diffusers 0.39 and 0.42), so
# an impossible sampler/schedule pair is reported without importing diffusers.
_CLASS_OPTIONS: dict[str, tuple[str, ...]] = {
    "EulerAncestralDiscreteScheduler": ("timestep_spacing",),
    "EulerDiscreteScheduler": _SIGMA_FLAGS + ("timestep_spacing",),
    "DPMSolverMultistepScheduler": _SIGMA_FLAGS + ("timestep_spacing", "algorithm_type", "solver_order"),
    "DPMSolverSinglestepScheduler": _SIGMA_FLAGS + ("algorithm_type", "solver_order", "lower_order_final"),
    "DDIMScheduler": ("timestep_spacing", "set_alpha_to_one", "clip_sample"),
    "UniPCMultistepScheduler": _SIGMA_FLAGS + ("timestep_spacing",),
}


def _schedule_ok(recipe: SamplerRecipe, schedule: str) -> bool:
    accepted = _CLASS_OPTIONS[recipe.scheduler_class]
    return all(key in accepted for key in SCHEDULE_TYPES[schedule])


def scheduler_options(sampler: str, schedule: str = "Automatic") -> tuple[str, dict[str, Any]]:
    """(diffusers class name, config overrides) for a WebUI sampler + schedule type.

    Raises SpecError naming the valid choices for an unknown sampler or schedule, or a pair
    diffusers cannot do.
    """
    recipe = SAMPLER_RECIPES.get(sampler)
    if recipe is None:
        raise SpecError(
            f"Unknown sampler '{sampler}' for the diffusers backend; choose one of: {', '.join(SAMPLER_RECIPES)}."
        )
    if schedule not in SCHEDULE_TYPES:
        raise SpecError(f"Unknown scheduler '{schedule}'; choose one of: {', '.join(SCHEDULE_TYPES)}.")
    if not _schedule_ok(recipe, schedule):
        usable = [name for name in SCHEDULE_TYPES if _schedule_ok(recipe, name)]
        raise SpecError(
            f"Sampler '{sampler}' has no '{schedule}' schedule in diffusers; use scheduler {', '.join(usable)}, "
            "or another sampler."
        )
    options = dict(recipe.options)
    overrides = SCHEDULE_TYPES[schedule]
    if any(key in _SIGMA_FLAGS for key in overrides):
        # One sigma schedule at a time: the chosen type replaces the sampler's own.
        options.update({key: False for key in _SIGMA_FLAGS if key in _CLASS_OPTIONS[recipe.scheduler_class]})
    options.update(overrides)
    return recipe.scheduler_class, options


def check_sampler(sampler: str, schedule: str = "Automatic") -> None:
    """Raise SpecError unless the diffusers backend can run this sampler + schedule."""
    scheduler_options(sampler, schedule)


def build_scheduler(base_config: Mapping[str, Any], sampler: str, schedule: str = "Automatic") -> Any:
    """A diffusers scheduler for the sampler, keeping the checkpoint's training schedule.

    `base_config` is the checkpoint's own scheduler config (betas, timesteps, prediction
    type); only the solver and the sigma spacing change.
    """
    import diffusers

    class_name, options = scheduler_options(sampler, schedule)
    scheduler_class = getattr(diffusers, class_name)
    accepted = inspect.signature(scheduler_class.__init__).parameters
    missing = [key for key in options if key not in accepted]
    if missing:  # an older diffusers than the table was checked against (0.39 and 0.42)
        raise SpecError(
            f"This diffusers ({diffusers.__version__}) cannot do sampler '{sampler}' with scheduler '{schedule}' "
            f"(no {', '.join(missing)}); upgrade diffusers or choose another scheduler."
        )
    # Keep only the training-schedule keys this class knows (the checkpoint's own scheduler,
    # often PNDM, has others), and drop solver flags so none leak from the original class.
    config = {
        key: value
        for key, value in dict(base_config).items()
        if key in accepted and key not in _SIGMA_FLAGS + ("algorithm_type", "solver_order", "lower_order_final")
    }
    config.update(options)
    return scheduler_class.from_config(config)
