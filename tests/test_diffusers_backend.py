"""DiffusersBackend on the tiny random-weight model: ControlNet img2img + kohya LoRA, on CPU."""

from __future__ import annotations

import dataclasses
import threading
from pathlib import Path
from typing import Any

import numpy as np
import pytest

torch = pytest.importorskip("torch", reason="the diffusers backend needs torch")
pytest.importorskip("diffusers", reason="the diffusers backend needs diffusers")
pytest.importorskip("peft", reason="LoRAs in diffusers need peft")

from PIL import Image  # noqa: E402
from tiny_builders import (  # noqa: E402  # tests/tiny_builders.py
    build_tiny_sdxl,
    make_tiny_kohya_lora,
    tiny_components,
    write_tiny_single_file,
)

from vidstyle.backends import create_backend  # noqa: E402
from vidstyle.backends.base import Backend, Img2ImgRequest  # noqa: E402
from vidstyle.backends.diffusers import DiffusersBackend  # noqa: E402
from vidstyle.errors import (  # noqa: E402
    BackendError,
    Cancelled,
    ModelNotFoundError,
    PreflightError,
    SpecError,
)
from vidstyle.samplers import SAMPLERS  # noqa: E402
from vidstyle.spec import JobSpec, LoraRef, build_spec  # noqa: E402

SIZE = 64


def _spec(**sections: dict[str, Any]) -> JobSpec:
    data: dict[str, Any] = {
        "model": {"checkpoint": "tiny"},
        "controlnet": {"model": "tiny"},
        "sampling": {"seed": 5, "steps": 4, "denoise": 0.75},
        "backend": {"device": "cpu"},
        "size": {"width": SIZE, "height": SIZE},
    }
    for name, values in sections.items():
        data[name] = {**data.get(name, {}), **values}
    return build_spec(data)


@pytest.fixture(scope="module")
def frame() -> dict[str, Image.Image]:
    rng = np.random.default_rng(0)
    gradient = np.linspace(0, 255, SIZE, dtype=np.float32)
    init = np.stack(
        [np.add.outer(gradient, gradient) / 2, np.tile(gradient, (SIZE, 1)), rng.uniform(0, 255, (SIZE, SIZE))], axis=-1
    )
    edges = np.zeros((SIZE, SIZE), np.uint8)
    edges[16:48:4, 8:56] = 255
    edges[8:56, 20] = 255
    return {"init": Image.fromarray(init.astype(np.uint8)), "control": Image.fromarray(edges).convert("RGB")}


@pytest.fixture(scope="module")
def lora_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    parts = tiny_components()
    path = tmp_path_factory.mktemp("loras") / "character.safetensors"
    make_tiny_kohya_lora(path, parts["unet"], parts["text_encoder"], rank=4, seed=1)
    return path


@pytest.fixture(scope="module")
def backend(lora_path: Path) -> DiffusersBackend:
    engine = DiffusersBackend(_spec(model={"loras": [{"name": str(lora_path), "weight": 1.0}]}))
    engine.preflight()
    yield engine
    engine.close()


def _request(frame: dict[str, Image.Image], spec: JobSpec, **changes: Any) -> Img2ImgRequest:
    request = Img2ImgRequest.for_spec(spec, 0, frame["init"], frame["control"], spec.sampling.seed)
    # The specs carry no prompt; the request brings its own (a test may replace it too).
    return dataclasses.replace(request, **{"prompt": "1girl, anime style", "negative_prompt": "lowres", **changes})


def _pixels(engine: DiffusersBackend, request: Img2ImgRequest) -> np.ndarray:
    result = engine.img2img(request)
    assert result.image.size == (SIZE, SIZE) and result.image.mode == "RGB"
    return np.asarray(result.image).astype(np.int16)


def _differs(a: np.ndarray, b: np.ndarray) -> bool:
    return float(np.abs(a - b).mean()) > 1.0


def test_is_a_backend(backend: DiffusersBackend) -> None:
    assert isinstance(backend, Backend)
    assert backend.concurrency == 1 and backend.name == "diffusers"
    assert isinstance(create_backend(_spec()), DiffusersBackend)


def test_same_request_gives_identical_pixels(backend: DiffusersBackend, frame: dict[str, Image.Image]) -> None:
    spec = backend.spec
    first = _pixels(backend, _request(frame, spec))
    second = _pixels(backend, _request(frame, spec))
    assert np.array_equal(first, second)
    assert _differs(first, np.asarray(frame["init"]).astype(np.int16))  # it did render something


def test_a_fresh_backend_reproduces_the_pixels(backend: DiffusersBackend, frame: dict[str, Image.Image]) -> None:
    """Resume in a new process rebuilds the backend: state left by earlier requests must not matter."""
    spec = backend.spec
    _pixels(backend, _request(frame, spec, sampler="DDIM", loras=[], seed=9))  # disturb LoRA + scheduler state
    used = _pixels(backend, _request(frame, spec))
    fresh = DiffusersBackend(spec)
    assert np.array_equal(_pixels(fresh, _request(frame, spec)), used)
    fresh.close()


def test_seed_changes_output(backend: DiffusersBackend, frame: dict[str, Image.Image]) -> None:
    spec = backend.spec
    assert _differs(_pixels(backend, _request(frame, spec, seed=1)), _pixels(backend, _request(frame, spec, seed=2)))


def test_lora_weight_changes_output(backend: DiffusersBackend, frame: dict[str, Image.Image], lora_path: Path) -> None:
    spec = backend.spec
    off = _pixels(backend, _request(frame, spec, loras=[LoraRef(name=str(lora_path), weight=0.0)]))
    on = _pixels(backend, _request(frame, spec, loras=[LoraRef(name=str(lora_path), weight=1.0)]))
    without = _pixels(backend, _request(frame, spec, loras=[]))
    assert _differs(off, on)
    assert np.array_equal(off, without)  # weight 0 is the same as no LoRA


def test_controlnet_weight_changes_output(backend: DiffusersBackend, frame: dict[str, Image.Image]) -> None:
    spec = backend.spec
    zero = spec.controlnet.copy(update={"weight": 0.0})
    full = spec.controlnet.copy(update={"weight": 1.0})
    assert _differs(
        _pixels(backend, _request(frame, spec, controlnet=zero)),
        _pixels(backend, _request(frame, spec, controlnet=full)),
    )


def test_control_image_changes_output(backend: DiffusersBackend, frame: dict[str, Image.Image]) -> None:
    spec = backend.spec
    blank = Image.new("RGB", (SIZE, SIZE))
    assert _differs(
        _pixels(backend, _request(frame, spec)), _pixels(backend, _request(frame, spec, control_image=blank))
    )


def test_control_modes_are_distinct(backend: DiffusersBackend, frame: dict[str, Image.Image]) -> None:
    spec = backend.spec
    outputs = [
        _pixels(backend, _request(frame, spec, controlnet=spec.controlnet.copy(update={"control_mode": mode})))
        for mode in ("Balanced", "My prompt is more important", "ControlNet is more important")
    ]
    assert _differs(outputs[0], outputs[1]) and _differs(outputs[0], outputs[2]) and _differs(outputs[1], outputs[2])
    # the soft-injection hook is only active during its own request
    assert np.array_equal(outputs[0], _pixels(backend, _request(frame, spec)))


def test_guidance_window_changes_output(backend: DiffusersBackend, frame: dict[str, Image.Image]) -> None:
    spec = backend.spec
    late = spec.controlnet.copy(update={"guidance_start": 0.5, "guidance_end": 1.0})
    assert _differs(_pixels(backend, _request(frame, spec)), _pixels(backend, _request(frame, spec, controlnet=late)))


def test_controlnet_disabled_renders_plain_img2img(frame: dict[str, Image.Image]) -> None:
    spec = _spec(controlnet={"enabled": False, "model": "nowhere/never.safetensors"})
    engine = DiffusersBackend(spec)
    engine.preflight()  # a disabled unit's model is not looked up
    plain = _pixels(engine, _request(frame, spec))
    controlled = _spec()
    engine_cn = DiffusersBackend(controlled)
    assert _differs(plain, _pixels(engine_cn, _request(frame, controlled)))


@pytest.mark.parametrize("sampler", SAMPLERS)
def test_every_sampler_renders(backend: DiffusersBackend, frame: dict[str, Image.Image], sampler: str) -> None:
    spec = backend.spec
    first = _pixels(backend, _request(frame, spec, sampler=sampler))
    assert np.array_equal(first, _pixels(backend, _request(frame, spec, sampler=sampler)))
    assert type(backend._control_pipe.scheduler).__name__ in {
        "EulerAncestralDiscreteScheduler",
        "EulerDiscreteScheduler",
        "DPMSolverMultistepScheduler",
        "DPMSolverSinglestepScheduler",
        "DDIMScheduler",
        "UniPCMultistepScheduler",
    }


def test_samplers_give_different_images(backend: DiffusersBackend, frame: dict[str, Image.Image]) -> None:
    spec = backend.spec
    euler_a = _pixels(backend, _request(frame, spec, sampler="Euler a"))
    assert _differs(euler_a, _pixels(backend, _request(frame, spec, sampler="DPM++ 2M Karras")))
    assert _differs(
        _pixels(backend, _request(frame, spec, sampler="DPM++ 2M")),
        _pixels(backend, _request(frame, spec, sampler="DPM++ 2M", scheduler="Karras")),
    )


def test_result_info(backend: DiffusersBackend, frame: dict[str, Image.Image]) -> None:
    spec = backend.spec
    info = backend.img2img(_request(frame, spec, seed=123)).info
    assert info["backend"] == "diffusers" and info["checkpoint"] == "tiny"
    assert info["sampler"] == spec.sampling.sampler and info["seed"] == 123
    assert "prompt_truncated" not in info


def test_long_prompt_is_truncated_and_flagged(
    backend: DiffusersBackend, frame: dict[str, Image.Image], caplog: pytest.LogCaptureFixture
) -> None:
    long_prompt = ", ".join(f"tag{i}" for i in range(120))
    with caplog.at_level("WARNING", logger="vidstyle.diffusers"):
        info = backend.img2img(_request(frame, backend.spec, prompt=long_prompt)).info
    assert info["prompt_truncated"] is True
    assert "75 CLIP tokens" in caplog.text


def test_wrong_image_size_is_a_backend_error(backend: DiffusersBackend, frame: dict[str, Image.Image]) -> None:
    with pytest.raises(BackendError, match="not the requested 64x64"):
        backend.img2img(_request(frame, backend.spec, init_image=frame["init"].resize((32, 32))))


def test_interrupt_raises_cancelled(frame: dict[str, Image.Image]) -> None:
    spec = _spec(sampling={"steps": 20, "denoise": 1.0})
    engine = DiffusersBackend(spec)
    engine.preflight()
    started, interrupted = threading.Event(), threading.Event()
    step_end = engine._on_step_end

    def first_step_waits(*args: Any) -> Any:
        started.set()
        interrupted.wait(timeout=30)  # make the interrupt land mid-render, deterministically
        return step_end(*args)

    engine._on_step_end = first_step_waits  # type: ignore[method-assign]
    outcome: dict[str, BaseException] = {}

    def render() -> None:
        try:
            engine.img2img(_request(frame, spec))
        except BaseException as exc:  # noqa: BLE001 - handed to the test thread
            outcome["error"] = exc

    worker = threading.Thread(target=render)
    worker.start()
    assert started.wait(timeout=60)
    engine.interrupt()
    interrupted.set()
    worker.join(timeout=60)
    assert isinstance(outcome.get("error"), Cancelled)
    # the next frame renders normally
    engine._on_step_end = step_end  # type: ignore[method-assign]
    assert engine.img2img(_request(frame, spec)).image.size == (SIZE, SIZE)


# ----- preflight: one clear sentence for each thing a user can get wrong -----


def test_unknown_sampler_from_preflight() -> None:
    with pytest.raises(SpecError) as info:
        DiffusersBackend(_spec(sampling={"sampler": "Heun++ Magic"})).preflight()
    assert "Heun++ Magic" in str(info.value) and "DPM++ 2M Karras" in str(info.value)


def test_denoise_too_low_to_run_a_step() -> None:
    with pytest.raises(SpecError, match="no sampling step"):
        DiffusersBackend(_spec(sampling={"denoise": 0.1, "steps": 4})).preflight()


def test_impossible_schedule_from_preflight() -> None:
    with pytest.raises(SpecError, match="Euler a"):
        DiffusersBackend(_spec(sampling={"sampler": "Euler a", "scheduler": "Karras"})).preflight()


@pytest.mark.parametrize(
    "sections, needle",
    [
        ({"model": {"checkpoint": "{tmp}/models/missing.safetensors"}}, "missing.safetensors"),
        ({"controlnet": {"model": "{tmp}/cn/control_v11p_sd15_canny.pth"}}, "control_v11p_sd15_canny.pth"),
        ({"model": {"loras": [{"name": "{tmp}/loras/zhongli.safetensors", "weight": 0.8}]}}, "zhongli.safetensors"),
    ],
)
def test_missing_files_raise_model_not_found(tmp_path: Path, sections: dict[str, Any], needle: str) -> None:
    filled = {k: _fill(v, tmp_path) for k, v in sections.items()}
    with pytest.raises(ModelNotFoundError) as info:
        DiffusersBackend(_spec(**filled)).preflight()
    message = str(info.value)
    assert needle in message
    assert message.count(".") >= 1 and "\n" not in message


def _fill(value: Any, tmp: Path) -> Any:
    if isinstance(value, str):
        return value.replace("{tmp}", str(tmp))
    if isinstance(value, dict):
        return {k: _fill(v, tmp) for k, v in value.items()}
    if isinstance(value, list):
        return [_fill(v, tmp) for v in value]
    return value


def test_checkpoint_folder_without_model_index(tmp_path: Path) -> None:
    with pytest.raises(ModelNotFoundError, match="model_index.json"):
        DiffusersBackend(_spec(model={"checkpoint": str(tmp_path)})).preflight()


def test_lora_for_another_model_is_a_preflight_error(tmp_path: Path) -> None:
    from safetensors.torch import save_file

    foreign = tmp_path / "sdxl_style.safetensors"
    name = "lora_unet_down_blocks_0_attentions_0_transformer_blocks_0_attn1_to_q"
    save_file(
        {
            f"{name}.lora_down.weight": torch.ones(4, 320),
            f"{name}.lora_up.weight": torch.ones(320, 4),
            f"{name}.alpha": torch.tensor(4.0),
        },
        str(foreign),
    )
    with pytest.raises(PreflightError) as info:
        DiffusersBackend(_spec(model={"loras": [{"name": str(foreign), "weight": 1.0}]})).preflight()
    assert "sdxl_style.safetensors" in str(info.value)


@pytest.fixture(scope="module")
def sdxl_folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_tiny_sdxl(tmp_path_factory.mktemp("sdxl") / "tiny-sdxl")


def test_sdxl_checkpoint_uses_the_sdxl_pipelines(sdxl_folder: Path, frame: dict[str, Image.Image]) -> None:
    spec = _spec(
        model={"checkpoint": str(sdxl_folder)},
        controlnet={"model": str(sdxl_folder / "controlnet")},
        sampling={"sampler": "DPM++ 2M Karras"},
    )
    engine = DiffusersBackend(spec)
    engine.preflight()
    assert type(engine._control_pipe).__name__ == "StableDiffusionXLControlNetImg2ImgPipeline"
    first = _pixels(engine, _request(frame, spec))
    assert np.array_equal(first, _pixels(engine, _request(frame, spec)))
    zero = spec.controlnet.copy(update={"weight": 0.0})
    assert _differs(first, _pixels(engine, _request(frame, spec, controlnet=zero)))
    plain = spec.controlnet.copy(update={"enabled": False})
    assert _differs(first, _pixels(engine, _request(frame, spec, controlnet=plain)))
    assert type(engine._base).__name__ == "StableDiffusionXLImg2ImgPipeline"


def test_controlnet_for_another_base_model_is_a_preflight_error(sdxl_folder: Path) -> None:
    """An SD1.5 ControlNet with an SDXL checkpoint: named before frame 1, not a shape error mid-job."""
    with pytest.raises(PreflightError, match="does not fit"):
        DiffusersBackend(_spec(model={"checkpoint": str(sdxl_folder)}, controlnet={"model": "tiny"})).preflight()


def test_cuda_requested_without_cuda_is_a_preflight_error() -> None:
    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    with pytest.raises(PreflightError, match="CUDA is not available"):
        DiffusersBackend(_spec(backend={"device": "cuda"})).preflight()


# ----- single-file checkpoints, as the WebUI keeps them -----


def test_single_file_checkpoint_renders_like_the_folder(tmp_path: Path, frame: dict[str, Image.Image]) -> None:
    checkpoint = write_tiny_single_file(tmp_path / "tiny-anime.safetensors")
    spec = _spec(model={"checkpoint": str(checkpoint)})
    engine = DiffusersBackend(spec)
    engine.preflight()
    from_file = _pixels(engine, _request(frame, spec))
    folder_spec = _spec()
    assert np.array_equal(from_file, _pixels(DiffusersBackend(folder_spec), _request(frame, folder_spec)))


def test_single_file_without_local_configs_says_how_to_fetch_them(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A real SD1.5 file needs diffusers' SD1.5 configs; offline and uncached, we name the one command."""
    from safetensors.torch import save_file

    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "empty-hf-cache"))
    sd15_like = tmp_path / "anything-v5.safetensors"
    # Just the keys diffusers uses to tell an SD1.x checkpoint, with SD1.5's conv_in shape.
    save_file(
        {
            "model.diffusion_model.input_blocks.0.0.weight": torch.zeros(320, 4, 3, 3),
            "model.diffusion_model.output_blocks.11.0.skip_connection.weight": torch.zeros(1),
            "cond_stage_model.transformer.text_model.embeddings.token_embedding.weight": torch.zeros(1, 1),
        },
        str(sd15_like),
    )
    with pytest.raises(ModelNotFoundError) as info:
        DiffusersBackend(_spec(model={"checkpoint": str(sd15_like)})).preflight()
    message = str(info.value)
    assert "anything-v5.safetensors" in message and "stable-diffusion-v1-5" in message and "hf download" in message


def test_non_safetensors_checkpoint_is_refused_with_advice(tmp_path: Path) -> None:
    pickle_file = tmp_path / "old.ckpt"
    pickle_file.write_bytes(b"not really a checkpoint")
    with pytest.raises(ModelNotFoundError, match=r"\.safetensors"):
        DiffusersBackend(_spec(model={"checkpoint": str(pickle_file)})).preflight()
