"""The WebUI HTTP backend against the WebUI API double (tests/doubles/webui_double.py).

The double rejects unknown fields and validates every ControlNet unit like the upstream
models, so a frame that renders proves the request's shape for that WebUI flavor.
"""

from __future__ import annotations

import dataclasses
import socket
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import numpy as np
import pytest
from fastapi import FastAPI
from fastapi.responses import HTMLResponse
from PIL import Image, ImageDraw

from vidstyle.backends import create_backend, webui_api
from vidstyle.backends.base import Backend, Img2ImgRequest, Img2ImgResult
from vidstyle.backends.webui_api import ALL_DOWN_MESSAGE, WebUIApiBackend
from vidstyle.errors import BackendError, Cancelled, PreflightError, SpecError
from vidstyle.spec import JobSpec, frame_seed

try:
    from tests.doubles.webui_double import DoubleServer, checkpoint_entry, controlnet_model_name
    from tests.webui_http_fixtures import FAST
except ImportError:  # pytest run with tests/ (not the repo root) on sys.path
    from doubles.webui_double import DoubleServer, checkpoint_entry, controlnet_model_name
    from webui_http_fixtures import FAST

SIZE = 64
CHECKPOINT = "v1-5-pruned-emaonly.safetensors"
CANNY = "control_v11p_sd15_canny"
WAIT = 20.0  # upper bound for any wait on a thread; tests finish far sooner


def make_spec(urls: list[str], **overrides: Any) -> JobSpec:
    data: dict[str, Any] = {
        "size": {"width": SIZE, "height": SIZE},
        "prompt": "1girl, anime style",
        "negative_prompt": "lowres",
        "model": {"checkpoint": "v1-5-pruned-emaonly"},
        "controlnet": {"model": CANNY},
        "sampling": {"seed": 1234, "steps": 4, "sampler": "Euler a"},
        "backend": {"kind": "webui_api", "webui_urls": urls, "timeout": 30.0},
    }
    spec = JobSpec.parse_obj(data)
    return spec.with_overrides(overrides) if overrides else spec


def make_request(spec: JobSpec, index: int) -> Img2ImgRequest:
    """A frame whose pixels depend on its index, with a rectangle as its edge map."""
    shade = (index * 37) % 256
    init = Image.new("RGB", (SIZE, SIZE), (shade, 255 - shade, (index * 11) % 256))
    control = Image.new("RGB", (SIZE, SIZE))
    ImageDraw.Draw(control).rectangle((8 + index % 8, 8, 48, 40), outline=(255, 255, 255))
    return Img2ImgRequest.for_spec(spec, index, init, control, frame_seed(spec, index, 0))


def closed_port_url() -> str:
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    sock.close()
    return f"http://127.0.0.1:{port}"


def preflight_problems(backend: WebUIApiBackend) -> list[str]:
    with pytest.raises(PreflightError) as caught:
        backend.preflight()
    return list(caught.value.problems)


def unit_of(payload: dict[str, Any]) -> dict[str, Any]:
    return payload["alwayson_scripts"]["controlnet"]["args"][0]


def wait_until(condition: Callable[[], bool], what: str) -> None:
    deadline = time.monotonic() + WAIT
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting until {what}"
        time.sleep(0.005)


# --- preflight ----------------------------------------------------------------------------


def test_preflight_reports_an_unreachable_server(http_backends):
    url = closed_port_url()
    problems = preflight_problems(http_backends(make_spec([url])))
    assert problems == [
        f"Cannot reach the WebUI at {url} (connection refused or host not found); start it with --api or fix the URL."
    ]


def test_preflight_reports_a_server_that_never_answers(http_backends):
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(8)  # accepts connections (the kernel does) but never answers
    url = f"http://127.0.0.1:{listener.getsockname()[1]}"
    try:
        policy = dataclasses.replace(FAST, check_timeout=0.3)
        problems = preflight_problems(http_backends(make_spec([url]), policy=policy))
    finally:
        listener.close()
    assert problems == [
        f"The WebUI at {url} did not answer (no answer to GET /sdapi/v1/sd-models within 0.3 s); "
        "check that it is running and not stuck."
    ]


def test_preflight_reports_a_server_that_is_not_a_webui(http_backends):
    app = FastAPI()
    app.get("/sdapi/v1/sd-models", response_class=HTMLResponse)(lambda: "<html>login</html>")
    with DoubleServer(app) as other:
        problems = preflight_problems(http_backends(make_spec([other.url])))
    assert problems == [
        f"The server at {other.url} does not answer like a Stable Diffusion WebUI "
        "(GET /sdapi/v1/sd-models did not return JSON); check the URL and port."
    ]


def test_preflight_reports_a_webui_started_without_api(webui_servers, http_backends):
    server = webui_servers(api_enabled=False)
    problems = preflight_problems(http_backends(make_spec([server.url])))
    assert problems == [
        f"The WebUI at {server.url} does not serve its API (/sdapi/v1 routes answer 404); restart it with the --api "
        "flag."
    ]


def test_preflight_reports_missing_and_wrong_credentials(webui_servers, http_backends):
    server = webui_servers(auth="alice:s3cret:x")
    missing = preflight_problems(http_backends(make_spec([server.url])))
    assert missing == [f"The WebUI at {server.url} requires a login (it runs with --api-auth); give its user:password."]
    wrong = preflight_problems(http_backends(make_spec([server.url]), auth="alice:nope"))
    assert wrong == [
        f"The WebUI at {server.url} rejected the user name or password; give the user:password of its --api-auth."
    ]
    backend = http_backends(make_spec([server.url]), auth="alice:s3cret:x")
    backend.preflight()  # a password may contain ':'
    assert backend.img2img(make_request(backend.spec, 0)).image.size == (SIZE, SIZE)


def test_preflight_reports_a_missing_checkpoint_with_the_available_ones(webui_servers, http_backends):
    server = webui_servers(models=[CHECKPOINT, "sd15/anything-v5.safetensors"])
    problems = preflight_problems(http_backends(make_spec([server.url], **{"model.checkpoint": "counterfeit-v3"})))
    titles = ", ".join(checkpoint_entry(name)["title"] for name in (CHECKPOINT, "sd15/anything-v5.safetensors"))
    assert problems == [
        f"Checkpoint 'counterfeit-v3' is not on the WebUI at {server.url}; put it in models/Stable-diffusion "
        f"or choose one of: {titles}."
    ]


def test_preflight_reports_a_missing_lora(webui_servers, http_backends):
    server = webui_servers(loras=["charA"])
    spec = make_spec([server.url], **{"model.loras": [{"name": "charA"}, {"name": "ghost", "weight": 0.5}]})
    problems = preflight_problems(http_backends(spec))
    assert problems == [
        f"LoRA 'ghost' is not on the WebUI at {server.url}; put it in models/Lora and refresh, or choose one of: charA."
    ]


def test_preflight_reports_controlnet_not_installed(webui_servers, http_backends):
    server = webui_servers(controlnet_installed=False)
    problems = preflight_problems(http_backends(make_spec([server.url])))
    assert problems == [
        f"ControlNet is not installed on the WebUI at {server.url} (no /controlnet/model_list); "
        "install sd-webui-controlnet from its Extensions tab, or turn ControlNet off."
    ]
    # Without ControlNet the same server is fine, and no unit is sent.
    backend = http_backends(make_spec([server.url], **{"controlnet.enabled": False}))
    backend.img2img(make_request(backend.spec, 0))
    assert "alwayson_scripts" not in server.state.img2img_requests[-1]


@pytest.mark.parametrize("flavor", ["a1111", "forge"])
def test_preflight_reports_a_missing_controlnet_model(webui_servers, http_backends, flavor):
    server = webui_servers(flavor=flavor, controlnet_models=[CANNY, "control_v11p_sd15_openpose"])
    problems = preflight_problems(
        http_backends(make_spec([server.url], **{"controlnet.model": "control_v11p_sd15_lineart"}))
    )
    listed = ", ".join(controlnet_model_name(n) for n in (CANNY, "control_v11p_sd15_openpose"))
    assert problems == [
        f"ControlNet model 'control_v11p_sd15_lineart' is not on the WebUI at {server.url}; "
        f"put it in models/ControlNet or choose one of: {listed}."
    ]


def test_preflight_reports_an_unknown_sampler_and_scheduler(webui_servers, http_backends):
    server = webui_servers(samplers=["Euler a", "DPM++ 2M"])
    spec = make_spec([server.url], **{"sampling.sampler": "Bogus Sampler", "sampling.scheduler": "Nope"})
    assert preflight_problems(http_backends(spec)) == [
        f"Sampler 'Bogus Sampler' is not on the WebUI at {server.url}; choose one of: Euler a, DPM++ 2M."
    ]
    spec = make_spec([server.url], **{"sampling.scheduler": "Nope"})
    problems = preflight_problems(http_backends(spec))
    assert len(problems) == 1
    assert problems[0].startswith(
        f"Schedule type 'Nope' is not on the WebUI at {server.url}; choose one of: Automatic, "
    )


def test_preflight_checks_every_server_and_reports_each_problem(webui_servers, http_backends):
    no_lora = webui_servers(loras=[])
    no_model = webui_servers(loras=["charA"], models=["other.safetensors"])
    good = webui_servers(loras=["charA"])
    spec = make_spec([no_lora.url, no_model.url, good.url], **{"model.loras": [{"name": "charA"}]})
    problems = preflight_problems(http_backends(spec))
    assert len(problems) == 2
    assert problems[0].startswith(f"LoRA 'charA' is not on the WebUI at {no_lora.url};")
    assert problems[1].startswith(f"Checkpoint 'v1-5-pruned-emaonly' is not on the WebUI at {no_model.url};")


def test_old_webui_without_schedulers_gets_no_scheduler_field(webui_servers, http_backends):
    server = webui_servers(schedulers=None, samplers=["Euler a", "DPM++ 2M Karras"])
    problems = preflight_problems(http_backends(make_spec([server.url], **{"sampling.scheduler": "Karras"})))
    assert problems == [
        f"The WebUI at {server.url} is older than 1.9 and has no schedule types; set the scheduler to Automatic "
        "(or use a sampler name that includes it, e.g. 'DPM++ 2M Karras')."
    ]
    backend = http_backends(make_spec([server.url], **{"sampling.sampler": "DPM++ 2M Karras"}))
    backend.img2img(make_request(backend.spec, 0))  # the double rejects a 'scheduler' field here
    sent = server.state.img2img_requests[-1]
    assert "scheduler" not in sent and sent["sampler_name"] == "DPM++ 2M Karras"


# --- names as each server lists them -----------------------------------------------------


@pytest.mark.parametrize(
    "checkpoint",
    [
        "v1-5-pruned-emaonly",
        CHECKPOINT,
        checkpoint_entry(CHECKPOINT)["title"],
        "/models/" + CHECKPOINT,
        "V1-5-PRUNED-EMAONLY",
    ],
)
@pytest.mark.parametrize("controlnet_model", [CANNY, controlnet_model_name(CANNY), CANNY + " [0000abcd]"])
def test_names_with_or_without_hash_resolve_to_the_listed_names(
    webui_servers, http_backends, checkpoint, controlnet_model
):
    server = webui_servers()
    spec = make_spec([server.url], **{"model.checkpoint": checkpoint, "controlnet.model": controlnet_model})
    backend = http_backends(spec)
    backend.img2img(make_request(spec, 0))
    sent = server.state.img2img_requests[-1]
    assert sent["override_settings"] == {"sd_model_checkpoint": checkpoint_entry(CHECKPOINT)["title"]}
    assert sent["override_settings_restore_afterwards"] is True
    assert unit_of(sent)["model"] == controlnet_model_name(CANNY)


def test_sampler_alias_and_scheduler_suffix_are_resolved(webui_servers, http_backends):
    server = webui_servers()
    backend = http_backends(make_spec([server.url], **{"sampling.sampler": "DPM++ 2M Karras"}))
    backend.img2img(make_request(backend.spec, 0))
    assert (server.state.img2img_requests[-1]["sampler_name"], server.state.img2img_requests[-1]["scheduler"]) == (
        "DPM++ 2M",
        "Karras",
    )
    backend = http_backends(
        make_spec([server.url], **{"sampling.sampler": "k_euler_a", "sampling.scheduler": "sgm_uniform"})
    )
    backend.img2img(make_request(backend.spec, 0))
    assert (server.state.img2img_requests[-1]["sampler_name"], server.state.img2img_requests[-1]["scheduler"]) == (
        "Euler a",
        "SGM Uniform",
    )


def test_checkpoint_override_selects_the_model_and_restores_the_server_setting(webui_servers, http_backends):
    server = webui_servers(models=["other.safetensors", CHECKPOINT], loaded_model="other.safetensors")
    backend = http_backends(make_spec([server.url]))
    result = backend.img2img(make_request(backend.spec, 0))
    assert result.info["sd_model_name"] == "v1-5-pruned-emaonly"
    assert "Model: v1-5-pruned-emaonly" in result.info["parameters"]
    assert server.state.options["sd_model_checkpoint"] == checkpoint_entry("other.safetensors")["title"]


def test_lora_tags_use_the_name_the_server_lists(webui_servers, http_backends):
    server = webui_servers(loras=[{"name": "charA_v2", "alias": "charA"}, "style_flat"])
    spec = make_spec(
        [server.url], **{"model.loras": [{"name": "charA", "weight": 0.75}, {"name": "style_flat", "weight": 1.0}]}
    )
    result = http_backends(spec).img2img(make_request(spec, 0))
    assert server.state.img2img_requests[-1]["prompt"] == "1girl, anime style <lora:charA_v2:0.75> <lora:style_flat:1>"
    assert 'Lora hashes: "charA_v2: ' in result.info["parameters"]


# --- request shape per flavor --------------------------------------------------------------


@pytest.mark.parametrize("flavor,identity", [("a1111", "none"), ("forge", "None")])
def test_our_canny_map_goes_with_the_identity_preprocessor(webui_servers, http_backends, flavor, identity):
    server = webui_servers(flavor=flavor)
    spec = make_spec(
        [server.url], **{"controlnet.weight": 1.2, "controlnet.control_mode": "ControlNet is more important"}
    )
    request = make_request(spec, 3)
    result = http_backends(spec).img2img(request)
    sent = server.state.img2img_requests[-1]
    unit = unit_of(sent)
    assert unit["module"] == identity
    assert unit["image"] == webui_api.encode_png_base64(request.control_image)
    assert sent["init_images"] == [webui_api.encode_png_base64(request.init_image)]
    assert "threshold_a" not in unit and "threshold_b" not in unit
    assert (unit["weight"], unit["control_mode"], unit["resize_mode"], unit["processor_res"]) == (
        1.2,
        "ControlNet is more important",
        "Just Resize",
        512,
    )
    assert (sent["seed"], sent["steps"], sent["width"], sent["height"], sent["denoising_strength"]) == (
        request.seed,
        4,
        SIZE,
        SIZE,
        0.5,
    )
    assert sent["save_images"] is False and sent["send_images"] is True and sent["resize_mode"] == 0
    assert "subseed" not in sent
    # The double draws the control map's edges in white: the rectangle reached the "model".
    pixels = np.asarray(result.image)
    assert pixels[8, 20].min() > pixels[30, 30].min()


@pytest.mark.parametrize("flavor", ["a1111", "forge"])
def test_server_side_canny_gets_the_source_frame_and_thresholds(webui_servers, http_backends, flavor):
    server = webui_servers(flavor=flavor)
    spec = make_spec(
        [server.url],
        **{"controlnet.preprocessor": "server", "controlnet.low_threshold": 50, "controlnet.high_threshold": 150},
    )
    http_backends(spec).img2img(make_request(spec, 1))
    sent = server.state.img2img_requests[-1]
    unit = unit_of(sent)
    assert (unit["module"], unit["threshold_a"], unit["threshold_b"]) == ("canny", 50.0, 150.0)
    assert unit["image"] == sent["init_images"][0]


def test_thresholds_sd_webui_controlnet_would_silently_replace_are_refused(webui_servers, http_backends):
    server = webui_servers(flavor="a1111")
    spec = make_spec([server.url], **{"controlnet.preprocessor": "server", "controlnet.low_threshold": 0})
    assert preflight_problems(http_backends(spec)) == [
        f"Canny low threshold 0 is outside 1..255, which the ControlNet extension at {server.url} accepts; "
        "change it or use preprocessor 'ours'."
    ]


def test_result_carries_the_webui_info_and_its_infotext(webui_servers, http_backends):
    server = webui_servers()
    spec = make_spec([server.url])
    request = make_request(spec, 2)
    result = http_backends(spec).img2img(request)
    assert isinstance(result, Img2ImgResult)
    assert result.image.mode == "RGB" and result.image.size == (SIZE, SIZE)
    assert result.info["backend"] == "webui_api" and result.info["server"] == server.url
    assert result.info["seed"] == request.seed
    assert result.info["parameters"] == result.info["infotexts"][0]
    assert result.info["parameters"].startswith(
        "1girl, anime style\nNegative prompt: lowres\nSteps: 4, Sampler: Euler a"
    )


def test_a_request_the_server_rejects_names_the_field(webui_servers, http_backends, monkeypatch):
    server = webui_servers()
    original = webui_api.controlnet_unit
    monkeypatch.setattr(webui_api, "controlnet_unit", lambda *args: {**original(*args), "lowvram_mode": True})
    backend = http_backends(make_spec([server.url]))
    with pytest.raises(BackendError) as caught:
        backend.img2img(make_request(backend.spec, 5))
    assert str(caught.value) == (
        f"The WebUI at {server.url} refused frame 5: the server rejected field "
        "'alwayson_scripts.controlnet.args.0.lowvram_mode' of POST /sdapi/v1/img2img; "
        "check that the WebUI and its ControlNet extension are up to date."
    )
    assert len(server.state.img2img_requests) == 1  # not retried: it would be refused again


def test_a_frame_failing_on_every_attempt_raises_instead_of_looping(webui_servers, http_backends):
    server = webui_servers(fail_every=1)
    policy = dataclasses.replace(FAST, server_errors_per_frame=3)
    backend = http_backends(make_spec([server.url]), policy=policy)
    with pytest.raises(BackendError) as caught:
        backend.img2img(make_request(backend.spec, 0))
    assert str(caught.value).startswith(
        f"Frame 0 failed 3 times on the WebUI, last at {server.url} (POST /sdapi/v1/img2img "
    )
    assert "double: simulated failure" not in str(caught.value)  # what the server answered goes to the log only
    assert len(server.state.img2img_requests) == 3


# --- many servers -------------------------------------------------------------------------


def render_all(
    backend: Backend, spec: JobSpec, frames: int, on_done: Callable[[int], None] | None = None
) -> dict[int, Img2ImgResult]:
    """What the render loop does: `concurrency` workers calling img2img for frames 0..N-1."""
    results: dict[int, Img2ImgResult] = {}
    lock = threading.Lock()

    def one(index: int) -> None:
        result = backend.img2img(make_request(spec, index))
        with lock:
            assert index not in results, f"frame {index} returned twice"
            results[index] = result
        if on_done is not None:
            on_done(index)

    with ThreadPoolExecutor(max_workers=backend.concurrency) as pool:
        for future in [pool.submit(one, index) for index in range(frames)]:
            future.result(timeout=WAIT * 3)
    return results


def test_frames_spread_over_failing_slow_and_dying_servers_render_exactly_once(webui_servers, http_backends):
    failing = webui_servers(fail_every=1)
    slow = webui_servers(delay=0.3)
    fast = webui_servers(delay=0.02)
    spec = make_spec([failing.url, slow.url, fast.url])
    statuses: list[str] = []
    backend = http_backends(spec, on_status=statuses.append)
    backend.preflight()
    # Per server by default: one request rendering, one queued there, one call ready to send.
    assert backend.concurrency == 9
    killed = threading.Event()
    rendered_before_kill: list[int] = []

    def kill_fast_mid_render(_: int) -> None:
        # Once a few frames are done, kill the fast server while it renders, then bring it back.
        if killed.is_set() or fast.state.renders_completed < 3:
            return
        killed.set()
        wait_until(lambda: fast.state.progress.job_count == 1, "the fast server renders a frame")
        fast.stop(abort_in_flight=True)
        rendered_before_kill.append(fast.state.renders_completed)
        time.sleep(0.3)
        fast.start()

    frames = 30
    results = render_all(backend, spec, frames, on_done=kill_fast_mid_render)

    assert sorted(results) == list(range(frames))
    for index, result in results.items():
        assert result.info["seed"] == frame_seed(spec, index, 0)
        assert result.info["server"] in (slow.url, fast.url)
    images = {np.asarray(result.image).tobytes() for result in results.values()}
    assert len(images) == frames  # every frame's own pixels, none duplicated
    assert killed.is_set()
    served = {url: sum(r.info["server"] == url for r in results.values()) for url in (slow.url, fast.url)}
    assert served[fast.url] > served[slow.url] > 0  # fastest first, the slow one still used
    assert fast.state.renders_completed > rendered_before_kill[0]  # it rendered after it came back too
    assert any(s.startswith(f"WebUI server {failing.url} set aside after 2 failure(s)") for s in statuses)
    assert f"WebUI server {fast.url} is back; sending it frames again." in statuses or all(
        not s.startswith(f"WebUI server {fast.url} set aside") for s in statuses
    )
    states = {s["url"]: s for s in backend.server_states()}
    assert states[failing.url]["frames_done"] == 0


def test_a_server_that_times_out_is_set_aside_and_its_frames_go_elsewhere(webui_servers, http_backends):
    stuck = webui_servers(delay=3.0)
    good = webui_servers()
    spec = make_spec([stuck.url, good.url], **{"backend.timeout": 0.5})
    backend = http_backends(spec)
    results = render_all(backend, spec, 6)
    assert sorted(results) == list(range(6))
    assert {result.info["server"] for result in results.values()} == {good.url}
    assert len(stuck.state.img2img_requests) >= 1  # it was tried, and its frame went to the other
    states = {state["url"]: state for state in backend.server_states()}
    # The frame queued behind the first one there may wait for it too: twice the time.
    assert states[stuck.url]["last_problem"] in (
        "no answer to POST /sdapi/v1/img2img within 0.5 s",
        "no answer to POST /sdapi/v1/img2img within 1 s",
    )


def test_with_every_server_down_calls_wait_and_resume_when_one_returns(webui_servers, http_backends):
    server = webui_servers(delay=0.02)
    statuses: list[str] = []
    down = threading.Event()

    def on_status(message: str) -> None:
        statuses.append(message)
        if message == ALL_DOWN_MESSAGE:
            down.set()

    backend = http_backends(make_spec([server.url]), on_status=on_status)
    backend.preflight()
    server.stop()
    outcome: dict[str, Any] = {}
    worker = threading.Thread(
        target=lambda: outcome.setdefault("result", backend.img2img(make_request(backend.spec, 7)))
    )
    worker.start()
    assert down.wait(WAIT), "on_status was not told that every server is unreachable"
    assert worker.is_alive()  # waiting, not failing
    server.start()
    worker.join(WAIT)
    assert not worker.is_alive()
    assert outcome["result"].info["seed"] == frame_seed(backend.spec, 7, 0)
    assert statuses.count(ALL_DOWN_MESSAGE) == 1
    set_aside = [s for s in statuses if s.startswith(f"WebUI server {server.url} set aside after 2 failure(s) (")]
    assert set_aside and set_aside[0].endswith("; it is re-checked now and then.")  # no other server to go on
    assert f"WebUI server {server.url} is back; sending it frames again." in statuses


# --- cancel and progress ------------------------------------------------------------------


def test_interrupt_stops_the_server_and_cancels_in_flight_and_later_calls(webui_servers, http_backends):
    server = webui_servers(delay=3.0)
    backend = http_backends(make_spec([server.url]))
    backend.preflight()
    outcome: dict[str, BaseException] = {}

    def call() -> None:
        try:
            backend.img2img(make_request(backend.spec, 0))
        except BaseException as exc:
            outcome["error"] = exc

    worker = threading.Thread(target=call)
    worker.start()
    wait_until(lambda: server.state.progress.job_count == 1, "the frame renders")
    backend.interrupt()
    worker.join(WAIT)
    assert isinstance(outcome.get("error"), Cancelled)
    assert ("POST", "/sdapi/v1/interrupt") in server.state.calls
    wait_until(lambda: server.state.progress.job_count == 0, "the server stops rendering")
    assert server.state.interrupts == 1
    with pytest.raises(Cancelled):
        backend.img2img(make_request(backend.spec, 1))


def test_interrupt_releases_calls_waiting_for_a_server(webui_servers, http_backends):
    server = webui_servers()
    statuses: list[str] = []
    backend = http_backends(make_spec([server.url]), on_status=statuses.append)
    backend.preflight()
    server.stop()
    outcome: dict[str, BaseException] = {}

    def call() -> None:
        try:
            backend.img2img(make_request(backend.spec, 0))
        except BaseException as exc:
            outcome["error"] = exc

    worker = threading.Thread(target=call)
    worker.start()
    wait_until(lambda: ALL_DOWN_MESSAGE in statuses, "every server is set aside")
    backend.interrupt()
    worker.join(WAIT)
    assert isinstance(outcome.get("error"), Cancelled)


def test_single_server_progress_reaches_the_callback(webui_servers, http_backends):
    server = webui_servers(delay=0.6)
    seen: list[tuple] = []
    backend = http_backends(
        make_spec([server.url], **{"sampling.steps": 12}), on_progress=lambda f, eta: seen.append((f, eta))
    )
    backend.img2img(make_request(backend.spec, 0))
    assert any(0.0 < fraction < 1.0 for fraction, _ in seen)
    assert all(eta >= 0.0 for _, eta in seen)
    fractions = [fraction for fraction, _ in seen if fraction > 0]
    assert fractions == sorted(fractions)


# --- construction -------------------------------------------------------------------------


def test_create_backend_builds_it_from_the_spec(webui_servers):
    first, second = webui_servers(), webui_servers()
    spec = make_spec([first.url + "/", second.url.replace("http://", "")], **{"backend.requests_per_server": 2})
    backend = create_backend(spec)
    try:
        assert isinstance(backend, WebUIApiBackend) and isinstance(backend, Backend)
        assert backend.name == "webui_api" and backend.concurrency == 6  # (2 slots + 1 ready call) x 2 servers
        assert backend.urls == [first.url, second.url]
    finally:
        backend.close()


def test_spec_without_urls_or_with_duplicates_is_refused():
    with pytest.raises(SpecError, match="needs at least one WebUI URL"):
        WebUIApiBackend(make_spec([]))
    with pytest.raises(SpecError, match="is listed twice; raise requests_per_server instead"):
        WebUIApiBackend(make_spec(["127.0.0.1:7860", "http://127.0.0.1:7860/"]))
