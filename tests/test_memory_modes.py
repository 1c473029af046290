"""Memory modes, attention choice, VAE slicing/tiling and torch.compile in the diffusers backend.

On CPU there is no accelerator memory: what can be checked honestly here is that each option
is validated, that its hooks/processors are installed, that the tiny model renders the same
pixels as the default mode, that `auto` follows an injected free-memory figure, and that the
estimate for the real SD1.5/SDXL shapes matches a meta-device trace of those architectures.
The spec and estimate tests need no torch, so they run in the WebUI pins venv too.
"""

from __future__ import annotations

import dataclasses
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from vidstyle.backends.diffusers_memory import (
    GIB,
    ComponentSize,
    Frame,
    ModelProfile,
    estimate,
    plan_memory,
)
from vidstyle.cli import build_parser, collect_overrides
from vidstyle.errors import SpecError
from vidstyle.spec import build_spec, field_info

ROOT = Path(__file__).resolve().parent.parent
SIZE = 64


# ----- spec fields and CLI (no torch) ---------------------------------------------------


def test_memory_fields_validate_with_bounds_declared_once() -> None:
    spec = build_spec({})
    assert (spec.backend.memory_mode, spec.backend.attention) == ("auto", "auto")
    assert spec.backend.vae_slicing is spec.backend.vae_tiling is spec.backend.compile is False
    assert field_info("backend.memory_mode")["choices"] == ["auto", "none", "model_offload", "sequential_offload"]
    assert field_info("backend.attention")["choices"] == ["auto", "xformers", "sdpa"]
    for bad in ({"memory_mode": "cpu"}, {"attention": "flash"}, {"compile": "sometimes"}):
        with pytest.raises(SpecError) as caught:
            build_spec({"backend": bad})
        assert next(iter(bad)) in str(caught.value)


def test_cli_flags_reach_the_spec() -> None:
    args = build_parser().parse_args(
        [
            "stylize",
            "clip.mp4",
            "-o",
            "job",
            "--memory-mode",
            "model_offload",
            "--attention",
            "sdpa",
            "--vae-tiling",
            "true",
            "--compile",
            "false",
        ]
    )
    overrides = collect_overrides(args)
    spec = build_spec({}).with_overrides(overrides)
    assert (spec.backend.memory_mode, spec.backend.attention, spec.backend.vae_tiling, spec.backend.compile) == (
        "model_offload",
        "sdpa",
        True,
        False,
    )
    with pytest.raises(SystemExit):
        build_parser().parse_args(["stylize", "clip.mp4", "-o", "job", "--memory-mode", "lots"])


MEMORY_FIELDS = (
    "backend.memory_mode",
    "backend.attention",
    "backend.vae_slicing",
    "backend.vae_tiling",
    "backend.compile",
)


def test_tab_shows_the_memory_options_from_their_declarations(tmp_path: Path) -> None:
    gr = pytest.importorskip("gradio", reason="the tab needs gradio")
    from vidstyle.manager import JobManager
    from vidstyle.ui import UiChoices, build_tab_parts, values_to_spec

    manager = JobManager(tmp_path / "jobs")
    try:
        listing = UiChoices(
            checkpoints=lambda: ["tiny"],
            loras=lambda: [],
            controlnet_models=lambda: ["tiny"],
            samplers=lambda: ["Euler a"],
        )
        parts = build_tab_parts(manager, listing)[1]
        mode = parts.widgets["backend.memory_mode"]
        assert isinstance(mode, gr.Dropdown) and mode.info == field_info("backend.memory_mode")["help"]
        assert isinstance(parts.widgets["backend.vae_tiling"], gr.Checkbox)
        values = {key: widget.value for key, widget in parts.widgets.items()}
        values.update({"backend.memory_mode": "model_offload", "backend.compile": True})
        spec = values_to_spec(values)
        assert (spec.backend.memory_mode, spec.backend.compile) == ("model_offload", True)
        # inside the WebUI frames render with webui_local: diffusers' memory options do not apply
        hosted = build_tab_parts(manager, dataclasses.replace(listing, backend_kind="webui_local"))[1]
        assert not set(MEMORY_FIELDS) & set(hosted.keys)
    finally:
        manager.close()


# ----- the plan, from an injected free-memory figure (no torch) --------------------------


def _sd15_like_profile() -> ModelProfile:
    """SD1.5's parameter counts in fp16 (as the real-shape test below counts them)."""
    sizes = {"unet": 859_520_964, "vae": 83_653_863, "text_encoder": 123_060_480, "controlnet": 361_278_480}
    return ModelProfile(
        components={name: ComponentSize(params, 38_000_000, 2) for name, params in sizes.items()},
        unet_channels=(320, 640, 1280, 1280),
        unet_layers_per_block=2,
        unet_top_attention=True,
        vae_channels=(128, 256, 512, 512),
        vae_upcast=False,
        dtype_bytes=2,
    )


def test_auto_picks_the_fastest_mode_that_fits() -> None:
    profile, frame = _sd15_like_profile(), Frame(1024, 1024)
    need = {
        mode: estimate(profile, frame, mode).with_headroom for mode in ("none", "model_offload", "sequential_offload")
    }
    assert need["none"] > need["model_offload"] > need["sequential_offload"]
    assert plan_memory(profile, frame, "auto", 24 * GIB, "cuda:0").mode == "none"
    assert plan_memory(profile, frame, "auto", need["model_offload"], "cuda:0").mode == "model_offload"
    assert plan_memory(profile, frame, "auto", need["sequential_offload"], "cuda:0").mode == "sequential_offload"
    assert plan_memory(profile, frame, "auto", None, "cpu").mode == "none"  # nothing to offload to


def test_a_mode_that_does_not_fit_names_one_that_does() -> None:
    profile, frame = _sd15_like_profile(), Frame(1024, 1024)
    free = estimate(profile, frame, "model_offload").with_headroom
    plan = plan_memory(profile, frame, "none", free, "cuda:0")
    assert not plan.fits
    assert "set backend.memory_mode to model_offload" in plan.advice and plan.advice.endswith(".")
    assert "\n" not in plan.advice and plan.advice.count(". ") == 0  # one sentence
    hopeless = plan_memory(profile, frame, "auto", GIB // 4, "cuda:0")
    assert not hopeless.fits and "backend.vae_tiling" in hopeless.advice


def test_vae_tiling_bounds_the_decode_by_the_tile() -> None:
    profile = _sd15_like_profile()
    whole = estimate(profile, Frame(2048, 2048), "sequential_offload")
    tiled = estimate(profile, Frame(2048, 2048, vae_tiling=True), "sequential_offload")
    assert tiled.phases["decode"] * 16 == whole.phases["decode"]


# ----- the estimate against the real architectures (torch; meta device, no memory) -------


@pytest.mark.parametrize("arch", ["sd15", "sdxl"])
def test_estimate_matches_a_trace_of_the_real_architecture(arch: str) -> None:
    torch = pytest.importorskip("torch", reason="tracing the real architectures needs torch")
    pytest.importorskip("diffusers", reason="the real architectures are diffusers models")
    from memory_trace import traced_phases

    from vidstyle.backends.diffusers_memory import activation_phases, profile_modules
    from vidstyle.sd_architectures import build_modules

    with torch.device("meta"):
        modules = {name: module.to(torch.float16) for name, module in build_modules(arch).items()}
    params = {name: sum(p.numel() for p in module.parameters()) for name, module in modules.items()}
    assert params["unet"] == {"sd15": 859_520_964, "sdxl": 2_567_463_684}[arch]  # the published sizes
    for controlnet in (True, False):
        used = {name: module for name, module in modules.items() if controlnet or name != "controlnet"}
        profile = profile_modules(used, dtype_bytes=2)
        for size in (512, 1024):
            traced = traced_phases(used, size, size, torch.float16)
            frame = Frame(size, size, controlnet=controlnet)
            estimated = activation_phases(profile, frame)
            for phase, value in traced.items():
                assert abs(estimated[phase] - value) <= 0.2 * value, (arch, size, controlnet, phase)
            vae_bytes = 4 if modules["vae"].config.force_upcast else 2
            weights = sum(count * (vae_bytes if name == "vae" else 2) for name, count in params.items() if name in used)
            calculated = weights + max(traced.values())
            assert abs(estimate(profile, frame, "none").total_bytes - calculated) <= 0.2 * calculated


# ----- the backend on the tiny model (torch + diffusers) ---------------------------------


@pytest.fixture(scope="module")
def tiny_frame() -> dict[str, Any]:
    pytest.importorskip("torch", reason="the diffusers backend needs torch")
    pytest.importorskip("diffusers", reason="the diffusers backend needs diffusers")
    pytest.importorskip("accelerate", reason="offload modes need accelerate")
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(3)
    edges = np.zeros((SIZE, SIZE), np.uint8)
    edges[16:48:4, 8:56] = 255
    return {
        "init": Image.fromarray(rng.integers(0, 255, (SIZE, SIZE, 3), dtype=np.uint8)),
        "control": Image.fromarray(edges).convert("RGB"),
    }


def _spec(**backend: Any) -> Any:
    return build_spec(
        {
            "model": {"checkpoint": "tiny"},
            "controlnet": {"model": "tiny"},
            "sampling": {"seed": 5, "steps": 4, "denoise": 0.75},
            "backend": {"device": "cpu", **backend},
            "size": {"width": SIZE, "height": SIZE},
        }
    )


def _render(frame: dict[str, Any], free_memory: Any = None, loras: Any = (), **backend: Any) -> Any:
    import numpy as np

    from vidstyle.backends.base import Img2ImgRequest
    from vidstyle.backends.diffusers import DiffusersBackend

    spec = _spec(**backend)
    engine = DiffusersBackend(spec, free_memory=free_memory)
    engine.preflight()
    request = Img2ImgRequest(
        frame_index=0,
        init_image=frame["init"],
        control_image=frame["control"],
        prompt="1girl, anime style",
        negative_prompt="lowres",
        checkpoint="tiny",
        loras=list(loras),
        controlnet=spec.controlnet,
        width=SIZE,
        height=SIZE,
        denoise=0.75,
        steps=4,
        cfg_scale=7.0,
        sampler="Euler a",
        scheduler="Automatic",
        seed=5,
    )
    result = engine.img2img(request)
    pixels = np.asarray(result.image).astype(np.int16)
    return pixels, engine, result.info


@pytest.fixture(scope="module")
def default_pixels(tiny_frame: dict[str, Any]) -> Any:
    pixels, engine, info = _render(tiny_frame)
    assert info["memory_mode"] == "none" and info["attention"] == "sdpa"
    engine.close()
    return pixels


def _close_to(a: Any, b: Any) -> bool:
    """Float noise: at most one 8-bit level on a few pixels."""
    diff = abs(a - b)
    return float(diff.mean()) < 0.05 and int(diff.max()) <= 1


def test_model_offload_installs_hooks_and_keeps_pixels(tiny_frame: dict[str, Any], default_pixels: Any) -> None:
    from accelerate.hooks import CpuOffload

    pixels, engine, info = _render(tiny_frame, memory_mode="model_offload")
    pipe = engine._placed_pipe
    assert info["memory_mode"] == "model_offload"
    for name in ("text_encoder", "unet", "vae", "controlnet"):
        assert isinstance(getattr(pipe, name)._hf_hook, CpuOffload), name
    assert _close_to(pixels, default_pixels)
    engine.close()


def test_model_offload_survives_loading_a_lora(tiny_frame: dict[str, Any], tmp_path: Path) -> None:
    """LoRA loading takes the hooks off and `_place` puts ours back (diffusers' own re-offload assumes CUDA)."""
    pytest.importorskip("peft", reason="LoRAs in diffusers need peft")
    from accelerate.hooks import CpuOffload
    from tiny_builders import make_tiny_kohya_lora, tiny_components  # tests/tiny_builders.py

    from vidstyle.spec import LoraRef

    parts = tiny_components()
    lora = tmp_path / "character.safetensors"
    make_tiny_kohya_lora(lora, parts["unet"], parts["text_encoder"], rank=4, seed=1)
    with_lora = [LoraRef(name=str(lora), weight=1.0)]
    offloaded, engine, _ = _render(tiny_frame, loras=with_lora, memory_mode="model_offload")
    assert isinstance(engine._placed_pipe.unet._hf_hook, CpuOffload)
    engine.close()
    plain, engine, _ = _render(tiny_frame, loras=with_lora, memory_mode="none")
    engine.close()
    assert _close_to(offloaded, plain)


def test_sequential_offload_on_cpu_keeps_everything_in_memory(tiny_frame: dict[str, Any], default_pixels: Any) -> None:
    pixels, engine, info = _render(tiny_frame, memory_mode="sequential_offload")
    assert info["memory_mode"] == "sequential_offload"
    assert not hasattr(engine._placed_pipe.unet, "_hf_hook")  # accelerate's per-layer hooks need an accelerator
    assert _close_to(pixels, default_pixels)
    engine.close()


def test_auto_follows_the_free_memory_figure(tiny_frame: dict[str, Any], default_pixels: Any) -> None:
    from accelerate.hooks import CpuOffload

    from vidstyle.errors import PreflightError

    # a figure from the injected probe makes the CPU look like a card of that size
    plenty, engine, info = _render(tiny_frame, free_memory=lambda device: 24 * GIB)
    assert info["memory_mode"] == "none"
    engine.close()
    needs = {}
    for mode in ("none", "model_offload"):
        _, engine, _ = _render(tiny_frame, memory_mode=mode)
        needs[mode] = engine.memory_plan.estimate.with_headroom
        engine.close()
    tight, engine, info = _render(tiny_frame, free_memory=lambda device: needs["model_offload"])
    assert info["memory_mode"] == "model_offload" and isinstance(engine._placed_pipe.unet._hf_hook, CpuOffload)
    assert _close_to(tight, default_pixels)
    engine.close()
    with pytest.raises(PreflightError) as caught:
        _render(tiny_frame, free_memory=lambda device: needs["model_offload"], memory_mode="none")
    assert "set backend.memory_mode to model_offload" in str(caught.value)


def test_vae_slicing_and_tiling_stay_close(
    tiny_frame: dict[str, Any], default_pixels: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    import vidstyle.backends.diffusers as backend_module

    sliced, engine, _ = _render(tiny_frame, vae_slicing=True)
    assert engine._placed_pipe.vae.use_slicing and _close_to(sliced, default_pixels)  # batch 1: slicing is exact
    engine.close()
    # tiles smaller than the frame, so the tiled path really runs on a 64 px test frame
    monkeypatch.setattr(backend_module, "VAE_TILE_PX", 32)
    tiled_calls = []
    from diffusers import AutoencoderKL

    real_tiled_decode = AutoencoderKL.tiled_decode
    monkeypatch.setattr(
        AutoencoderKL, "tiled_decode", lambda self, *a, **k: tiled_calls.append(1) or real_tiled_decode(self, *a, **k)
    )
    tiled, engine, _ = _render(tiny_frame, vae_tiling=True)
    vae = engine._placed_pipe.vae
    assert vae.use_tiling and vae.tile_sample_min_size == 32 and tiled_calls
    engine.close()
    # Tiles are encoded/decoded apart (GroupNorm statistics per tile) and blended at their
    # seams, so tiling is not float noise, which is why `auto` never turns it on. On 32 px
    # tiles of the random tiny VAE the change is large; only the tiled path itself is checked.
    assert tiled.shape == default_pixels.shape and tiled.std() > 1


def test_sdpa_is_used_and_xformers_needs_its_package(tiny_frame: dict[str, Any], default_pixels: Any) -> None:
    import importlib.util

    from diffusers.models.attention_processor import AttnProcessor2_0

    from vidstyle.errors import PreflightError

    pixels, engine, info = _render(tiny_frame, attention="sdpa")
    assert info["attention"] == "sdpa"
    assert all(isinstance(p, AttnProcessor2_0) for p in engine._placed_pipe.unet.attn_processors.values())
    assert _close_to(pixels, default_pixels)
    engine.close()
    if importlib.util.find_spec("xformers") is not None:
        pytest.skip("xformers is installed here; its CPU refusal is what this environment can check")
    with pytest.raises(PreflightError) as caught:
        _render(tiny_frame, attention="xformers")
    assert "pip install xformers" in str(caught.value) and "sdpa" in str(caught.value)


def test_compile_reports_its_time_and_keeps_pixels(
    tiny_frame: dict[str, Any], default_pixels: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    import vidstyle.backends.diffusers as backend_module

    # inductor needs a C++ toolchain and minutes on 2 cores; dynamo's own tracing runs with "eager"
    monkeypatch.setattr(backend_module, "COMPILE_BACKEND", "eager")
    pixels, engine, _ = _render(tiny_frame, compile=True)
    pipe = engine._placed_pipe
    assert pipe.unet._compiled_call_impl is not None and pipe.controlnet._compiled_call_impl is not None
    assert engine.compile_seconds is not None and engine.compile_seconds > 0
    assert _close_to(pixels, default_pixels)
    engine.close()
    with pytest.raises(SpecError, match="sequential_offload"):
        _render(tiny_frame, compile=True, memory_mode="sequential_offload")


# ----- the GPU benchmark, in its CPU smoke form -----------------------------------------


def test_bench_gpu_runs_in_its_cpu_smoke_form(tmp_path: Path) -> None:
    pytest.importorskip("diffusers", reason="the benchmark runs the diffusers backend")
    pytest.importorskip("accelerate", reason="offload modes need accelerate")
    done = subprocess.run(
        [
            sys.executable,
            str(ROOT / "benchmarks" / "bench_gpu.py"),
            "--arch",
            "tiny",
            "--device",
            "cpu",
            "--steps",
            "1",
            "--size",
            "64",
            "--frames",
            "2",
            "--work-dir",
            str(tmp_path),
        ],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=ROOT,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    rows = [line for line in done.stdout.splitlines() if line.startswith("| tiny")]
    modes = {row.split("|")[3].strip() for row in rows}
    assert modes == {"none", "model_offload", "sequential_offload"}
    assert all(row.split("|")[4].strip() == "sdpa" for row in rows)  # no xformers here
    header = next(line for line in done.stdout.splitlines() if line.startswith("| arch"))
    for column in ("s/frame", "peak VRAM", "engine overhead", "frames/s x2"):
        assert column in header
