"""WebUI sampler / schedule-type names -> diffusers schedulers (vidstyle.samplers)."""

from __future__ import annotations

import subprocess
import sys

import pytest

from vidstyle.errors import SpecError
from vidstyle.samplers import (
    SAMPLER_RECIPES,
    SAMPLERS,
    SCHEDULE_TYPES,
    build_scheduler,
    check_sampler,
    scheduler_options,
)
from vidstyle.spec import field_info

# SD1.5's own scheduler config (PNDM), as a checkpoint folder or single file brings it.
SD15_SCHEDULER = {
    "_class_name": "PNDMScheduler",
    "beta_end": 0.012,
    "beta_schedule": "scaled_linear",
    "beta_start": 0.00085,
    "num_train_timesteps": 1000,
    "set_alpha_to_one": False,
    "skip_prk_steps": True,
    "steps_offset": 1,
    "trained_betas": None,
}


def test_the_spec_offers_the_tables_samplers_in_order() -> None:
    info = field_info("sampling.sampler")
    assert info["help"] == "Sampler, by its WebUI name: " + ", ".join(SAMPLERS) + "."
    assert SAMPLERS[:4] == ("Euler a", "Euler", "DPM++ 2M Karras", "DPM++ 2M")  # the order the tab's dropdown shows
    assert info["default"] in SAMPLER_RECIPES


def test_import_needs_no_torch() -> None:
    code = "import sys, vidstyle.samplers; print('torch' in sys.modules, 'diffusers' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.split() == ["False", "False"]


@pytest.mark.parametrize(
    "sampler, schedule, cls, expected",
    [
        ("Euler a", "Automatic", "EulerAncestralDiscreteScheduler", {}),
        ("Euler", "Automatic", "EulerDiscreteScheduler", {"use_karras_sigmas": False}),
        (
            "DPM++ 2M",
            "Automatic",
            "DPMSolverMultistepScheduler",
            {"algorithm_type": "dpmsolver++", "use_karras_sigmas": False},
        ),
        ("DPM++ 2M Karras", "Automatic", "DPMSolverMultistepScheduler", {"use_karras_sigmas": True, "solver_order": 2}),
        ("DPM++ SDE Karras", "Automatic", "DPMSolverSinglestepScheduler", {"use_karras_sigmas": True}),
        ("DDIM", "Automatic", "DDIMScheduler", {"set_alpha_to_one": False}),
        ("UniPC", "Automatic", "UniPCMultistepScheduler", {"use_karras_sigmas": False}),
        # The schedule type overrides the sampler's own sigma schedule.
        ("DPM++ 2M", "Karras", "DPMSolverMultistepScheduler", {"use_karras_sigmas": True}),
        ("DPM++ 2M Karras", "Uniform", "DPMSolverMultistepScheduler", {"use_karras_sigmas": False}),
        (
            "Euler",
            "Exponential",
            "EulerDiscreteScheduler",
            {"use_exponential_sigmas": True, "use_karras_sigmas": False},
        ),
        ("DDIM", "SGM Uniform", "DDIMScheduler", {"timestep_spacing": "trailing"}),
    ],
)
def test_scheduler_options(sampler: str, schedule: str, cls: str, expected: dict) -> None:
    name, options = scheduler_options(sampler, schedule)
    assert name == cls
    assert {key: options.get(key) for key in expected} == expected


def test_unknown_sampler_names_the_valid_ones() -> None:
    with pytest.raises(SpecError) as info:
        check_sampler("Heun++ 9000")
    message = str(info.value)
    assert "Heun++ 9000" in message
    assert all(name in message for name in SAMPLERS)


def test_unknown_schedule_names_the_valid_ones() -> None:
    with pytest.raises(SpecError) as info:
        check_sampler("Euler", "Zigzag")
    assert "Zigzag" in str(info.value) and "Karras" in str(info.value)


def test_impossible_pair_is_an_error_not_a_fallback() -> None:
    with pytest.raises(SpecError) as info:
        check_sampler("Euler a", "Karras")
    message = str(info.value)
    assert "Euler a" in message and "Karras" in message and "Automatic" in message


needs_diffusers = pytest.mark.skipif(
    __import__("importlib").util.find_spec("diffusers") is None,
    reason="building schedulers needs diffusers (vidstyle[diffusers])",
)


@needs_diffusers
@pytest.mark.parametrize("sampler", SAMPLERS)
def test_build_scheduler_keeps_the_training_schedule(sampler: str) -> None:
    scheduler = build_scheduler(SD15_SCHEDULER, sampler)
    class_name, options = scheduler_options(sampler)
    assert type(scheduler).__name__ == class_name
    assert scheduler.config.beta_schedule == "scaled_linear"
    assert scheduler.config.beta_end == pytest.approx(0.012)
    assert scheduler.config.num_train_timesteps == 1000
    for key, value in options.items():
        assert scheduler.config[key] == value
    scheduler.set_timesteps(8)
    assert len(scheduler.timesteps) >= 8


@needs_diffusers
def test_flags_do_not_leak_from_a_previous_sampler() -> None:
    karras = build_scheduler(SD15_SCHEDULER, "DPM++ 2M Karras")
    plain = build_scheduler(dict(karras.config), "DPM++ 2M")
    assert plain.config.use_karras_sigmas is False


def test_every_schedule_type_is_usable_with_some_sampler() -> None:
    for schedule in SCHEDULE_TYPES:
        usable = []
        for sampler in SAMPLER_RECIPES:
            try:
                check_sampler(sampler, schedule)
                usable.append(sampler)
            except SpecError:
                pass
        assert usable, schedule
