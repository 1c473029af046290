"""The img2img fields and ControlNet unit both WebUI backends send (vidstyle.backends.webui_fields)."""

from __future__ import annotations

import subprocess
import sys
from typing import Any

from PIL import Image

from vidstyle.backends.base import Img2ImgRequest
from vidstyle.backends.webui_api import build_payload
from vidstyle.backends.webui_fields import PROCESSOR_RES, controlnet_unit, img2img_fields, wanted_from_request
from vidstyle.backends.webui_preflight import ServerPlan
from vidstyle.spec import JobSpec


def make_spec(**overrides: Any) -> JobSpec:
    spec = JobSpec.parse_obj(
        {
            "prompt": "1girl",
            "negative_prompt": "lowres",
            "size": {"width": 64, "height": 64},
            "model": {"checkpoint": "anything-v5", "loras": [{"name": "charA", "weight": 0.75}]},
            "sampling": {"seed": 42, "steps": 6, "denoise": 0.4, "cfg_scale": 5.5},
        }
    )
    return spec.with_overrides(overrides) if overrides else spec


def make_request(spec: JobSpec) -> Img2ImgRequest:
    image = Image.new("RGB", (64, 64))
    return Img2ImgRequest.for_spec(spec, 3, image, image, spec.sampling.seed)


def make_plan(scheduler: str | None = "Automatic") -> ServerPlan:
    return ServerPlan(
        "http://127.0.0.1:7860",
        "anything-v5.safetensors [6ce0161689]",
        (("charA_v2", 0.75),),
        "DPM++ 2M",
        scheduler,
        "sd-webui-controlnet",
        "control_v11p_sd15_canny [d14c016b]",
        "none",
    )


def test_fields_use_the_servers_names() -> None:
    fields = img2img_fields(make_plan(), make_request(make_spec()))
    assert fields["prompt"] == "1girl <lora:charA_v2:0.75>"  # the LoRA name the server lists
    assert fields["sampler_name"] == "DPM++ 2M" and fields["scheduler"] == "Automatic"
    assert fields["override_settings"] == {"sd_model_checkpoint": "anything-v5.safetensors [6ce0161689]"}
    assert fields["override_settings_restore_afterwards"] is True
    assert (fields["seed"], fields["steps"], fields["cfg_scale"], fields["denoising_strength"]) == (42, 6, 5.5, 0.4)
    assert (fields["width"], fields["height"], fields["batch_size"], fields["n_iter"]) == (64, 64, 1, 1)


def test_an_empty_prompt_sends_only_the_tags() -> None:
    fields = img2img_fields(make_plan(), make_request(make_spec(prompt="")))
    assert fields["prompt"] == "<lora:charA_v2:0.75>"


def test_a_webui_without_schedule_types_gets_no_scheduler_field() -> None:
    assert "scheduler" not in img2img_fields(make_plan(scheduler=None), make_request(make_spec()))


def test_the_http_body_is_the_shared_fields_plus_its_own() -> None:
    plan, request = make_plan(), make_request(make_spec())
    body = build_payload(plan, request, "INIT", "CONTROL", task_id="task(abc)")
    shared = img2img_fields(plan, request)
    assert {key: body[key] for key in shared} == shared
    assert body["init_images"] == ["INIT"] and body["force_task_id"] == "task(abc)"
    assert body["alwayson_scripts"]["controlnet"]["args"][0]["image"] == "CONTROL"


def test_unit_for_our_map_has_no_thresholds() -> None:
    spec = make_spec(**{"controlnet.weight": 1.2, "controlnet.guidance_end": 0.7})
    unit = controlnet_unit(make_plan(), spec.controlnet, "IMG")
    assert unit["module"] == "none" and unit["model"] == "control_v11p_sd15_canny [d14c016b]"
    assert (unit["weight"], unit["guidance_end"], unit["processor_res"]) == (1.2, 0.7, PROCESSOR_RES)
    assert unit["image"] == "IMG" and unit["save_detected_map"] is False
    assert "threshold_a" not in unit and "threshold_b" not in unit


def test_unit_for_the_servers_canny_carries_our_thresholds() -> None:
    spec = make_spec(
        **{"controlnet.preprocessor": "server", "controlnet.low_threshold": 40, "controlnet.high_threshold": 160}
    )
    unit = controlnet_unit(make_plan(), spec.controlnet, "IMG")
    assert (unit["threshold_a"], unit["threshold_b"]) == (40.0, 160.0)


def test_wanted_names_are_the_users_names() -> None:
    wanted = wanted_from_request(make_request(make_spec(**{"controlnet.enabled": False})))
    assert wanted.checkpoint == "anything-v5" and wanted.loras == (("charA", 0.75),) and wanted.controlnet is None


def test_neither_webui_backend_imports_the_other() -> None:
    for module, other in (("webui_local", "webui_api"), ("webui_api", "webui_local")):
        check = f"import sys, vidstyle.backends.{module}; print('vidstyle.backends.{other}' in sys.modules)"
        out = subprocess.run([sys.executable, "-c", check], capture_output=True, text=True, check=True).stdout
        assert out.strip() == "False", f"{module} imports {other}"
