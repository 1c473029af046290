"""The WebUI glue (scripts/vidstyle.py), the in-process backend and install.py, against WebUI doubles.

tests/doubles/webui_modules holds TEST DOUBLES of the AUTOMATIC1111 WebUI's `modules`
package (v1.10.1), its launch.py and built-in Lora extension, sd-webui-controlnet's
`scripts.external_code` + always-on script, and Forge's built-in `lib_controlnet`; each
keeps the upstream names, signatures and the behaviour Vidstyle relies on (see their
docstrings and docs/webui-compat.md). Extension files are loaded the way the WebUI loads
them: `modules.script_loading.load_module` with the extension folder first on sys.path.
"""

from __future__ import annotations

import io
import runpy
import sys
import threading
import types
from collections.abc import Iterator
from contextlib import redirect_stdout
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image

from vidstyle.backends.base import Img2ImgRequest
from vidstyle.errors import Cancelled, PreflightError
from vidstyle.spec import JobSpec, load_spec

REPO = Path(__file__).resolve().parent.parent
DOUBLES = REPO / "tests" / "doubles" / "webui_modules"
SCRIPT = REPO / "scripts" / "vidstyle.py"
INSTALL = REPO / "install.py"
MIKUBILL = "sd-webui-controlnet"
FORGE = "forge"  # Forge main (built-in ControlNet since the Aug 2024 rewrite)
FORGE_2024 = "forge-2024"  # Forge tag `previous` (June 2024, gradio 3)
FORGE_FOLDERS = {FORGE: "sd_forge_controlnet", FORGE_2024: "sd_forge_controlnet_2024"}
# Top-level names the WebUI doubles (and the extensions they load) bring into sys.modules.
DOUBLE_NAMES = ("modules", "scripts", "lib_controlnet", "networks", "network", "launch")
CN_MODEL = "control_v11p_sd15_canny"


def _matches(name: str, prefixes: tuple) -> bool:
    return any(name == p or name.startswith(p + ".") for p in prefixes)


class _SysModules:
    """Take names out of sys.modules for a test and put the originals back afterwards."""

    def __init__(self, prefixes: tuple) -> None:
        self.prefixes = prefixes
        self.saved = {k: v for k, v in sys.modules.items() if _matches(k, prefixes)}

    def clear(self) -> None:
        for name in [k for k in sys.modules if _matches(k, self.prefixes)]:
            del sys.modules[name]

    def restore(self) -> None:
        self.clear()
        sys.modules.update(self.saved)


def run_extension_file(path: Path, basedir: Path) -> types.ModuleType:
    """What modules/scripts.py load_scripts() does per file: folder first on sys.path, then restored."""
    from modules import script_loading

    syspath = sys.path
    try:
        sys.path = [str(basedir)] + sys.path
        return script_loading.load_module(str(path))
    finally:
        sys.path = syspath


class WebUI:
    """A WebUI double with two checkpoints, one LoRA, a ControlNet flavor and the img2img scripts."""

    def __init__(self, data: Path, flavor: str | None, lora_extension: bool = True) -> None:
        from modules import paths_internal, scripts, sd_models, shared
        from modules.processing_scripts.sampler import ScriptSampler
        from modules.processing_scripts.seed import ScriptSeed

        self.data = data
        paths_internal.data_path = str(data)
        shared.cmd_opts.data_dir = str(data)
        shared.cmd_opts.gradio_allowed_path = [str(data)]
        self.anything = sd_models.CheckpointInfo(f"{sd_models.model_path}/anything-v5.safetensors")
        self.other = sd_models.CheckpointInfo(f"{sd_models.model_path}/other.safetensors")
        self.anything.register()
        self.other.register()
        shared.opts.sd_model_checkpoint = self.other.title  # the user has another model selected
        sd_models.reload_model_weights()
        if lora_extension:
            sys.path.insert(0, str(DOUBLES / "Lora"))
            import networks

            networks._add(str(data / "models" / "Lora" / "zhongli.safetensors"))
        self.cn_model = None
        runner = scripts.scripts_img2img
        runner._add(ScriptSampler())
        runner._add(ScriptSeed())
        if flavor == MIKUBILL:
            module = run_extension_file(DOUBLES / MIKUBILL / "scripts" / "controlnet.py", DOUBLES / MIKUBILL)
            self.cn_model = sys.modules["scripts.external_code"]._add_model(CN_MODEL)
            self.cn_script = runner._add(module.Script())
        elif flavor in FORGE_FOLDERS:
            folder = DOUBLES / FORGE_FOLDERS[flavor]
            module = run_extension_file(folder / "scripts" / "controlnet.py", folder)
            state = sys.modules["lib_controlnet.global_state"]
            state._files.append(CN_MODEL)
            state.update_controlnet_filenames()
            self.cn_model = state.get_all_controlnet_names()[1]
            self.cn_script = runner._add(module.ControlNetForForgeOfficial())

    def load_glue(self) -> types.ModuleType:
        return run_extension_file(SCRIPT, REPO)


@pytest.fixture
def doubles(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    names = _SysModules(DOUBLE_NAMES)
    names.clear()
    syspath = list(sys.path)
    sys.path.insert(0, str(DOUBLES))
    try:
        yield
    finally:
        sys.path[:] = syspath
        names.restore()
        from vidstyle.backends import _extra_factories

        _extra_factories.pop("webui_local", None)


def make_webui(tmp_path: Path, flavor: str | None = MIKUBILL, **kwargs: Any) -> WebUI:
    data = tmp_path / "webui"
    data.mkdir(exist_ok=True)
    return WebUI(data, flavor, **kwargs)


@pytest.fixture
def webui(doubles: None, tmp_path: Path) -> WebUI:
    return make_webui(tmp_path)


def job_spec(**overrides: Any) -> JobSpec:
    base = {
        "model.checkpoint": "anything-v5",
        "model.loras": [{"name": "zhongli", "weight": 0.8}],
        "controlnet.model": CN_MODEL,
        "controlnet.weight": 0.9,
        "controlnet.guidance_end": 0.8,
        "controlnet.control_mode": "ControlNet is more important",
        "sampling.sampler": "DPM++ 2M Karras",
        "sampling.steps": 6,
        "sampling.denoise": 0.6,
        "sampling.seed": 1234,
        "backend.kind": "webui_local",
        "size.width": 64,
        "size.height": 64,
    }
    base.update(overrides)
    return load_spec("anime-canny-sd15", base)


def edge_image(size: int = 64, black: bool = False) -> Image.Image:
    edges = np.zeros((size, size, 3), dtype=np.uint8)
    if not black:
        edges[16, 16:48] = 255
        edges[16:48, 16] = 255
    return Image.fromarray(edges)


def request_for(spec: JobSpec, frame: int = 0, control: Image.Image | None = None) -> Img2ImgRequest:
    init = Image.fromarray(np.tile(np.linspace(40, 200, 64, dtype=np.uint8)[None, :, None], (64, 1, 3)))
    return Img2ImgRequest.for_spec(spec, frame, init, control or edge_image(), spec.sampling.seed)


def backend_for(spec: JobSpec, statuses: list[str] | None = None) -> Any:
    from vidstyle.backends.webui_local import create

    backend = create(spec, statuses.append if statuses is not None else None)
    backend.preflight()
    return backend


def markdown_of(blocks: Any) -> str:
    return "\n".join(
        str(getattr(block, "value", "")) for block in blocks.blocks.values() if type(block).__name__ == "Markdown"
    )


# -- the WebUI entry (scripts/vidstyle.py) ---------------------------------------------------------


def test_loading_the_script_registers_callbacks_and_does_no_work(webui: WebUI) -> None:
    from modules import script_callbacks

    glue = webui.load_glue()
    registered = {key: [c.callback for c in value] for key, value in script_callbacks.callback_map.items()}
    assert registered["callbacks_ui_tabs"] == [glue.on_ui_tabs]
    assert registered["callbacks_ui_settings"] == [glue.on_ui_settings]
    assert registered["callbacks_app_started"] == [glue.on_app_started]
    assert registered["callbacks_script_unloaded"] == [glue.on_script_unloaded]
    assert glue._host.manager is None
    assert not (webui.data / "outputs").exists()


def test_settings_section(webui: WebUI) -> None:
    pytest.importorskip("gradio")
    from modules import script_callbacks, shared

    webui.load_glue()
    script_callbacks.ui_settings_callback()
    labels = shared.opts.data_labels
    ours = {key: info for key, info in labels.items() if key.startswith("vidstyle_")}
    assert set(ours) == {
        "vidstyle_output_dir",
        "vidstyle_default_preset",
        "vidstyle_gallery_size",
        "vidstyle_keep_intermediate",
        "vidstyle_api_backends",
        "vidstyle_api_webui_urls",
        "vidstyle_api_max_upload_mb",
        "vidstyle_api_max_queued_jobs",
        "vidstyle_api_max_job_megapixels",
    }
    assert shared.opts.vidstyle_keep_intermediate is True
    assert {info.section for info in ours.values()} == {("vidstyle", "Video Stylize")}
    assert shared.opts.vidstyle_output_dir == "outputs/vidstyle"
    assert shared.opts.vidstyle_default_preset == "anime-canny-sd15"
    assert shared.opts.vidstyle_gallery_size == 8
    assert "anime-canny-sd15" in ours["vidstyle_default_preset"].component_args()["choices"]
    assert ours["vidstyle_gallery_size"].component_args == {"minimum": 1, "maximum": 64, "step": 1}


def test_tab_is_built_over_the_webui_lists(webui: WebUI) -> None:
    gr = pytest.importorskip("gradio")
    from modules import errors, script_callbacks, shared

    glue = webui.load_glue()
    script_callbacks.ui_settings_callback()
    shared.opts.vidstyle_output_dir = "jobs/here"
    tabs = script_callbacks.ui_tabs_callback()
    assert errors._reported == []
    assert [(title, elem_id) for _, title, elem_id in tabs] == [("Video Stylize", "vidstyle")]
    blocks = tabs[0][0]
    assert isinstance(blocks, gr.Blocks)
    assert "vidstyle_problem" not in {getattr(b, "elem_id", None) for b in blocks.blocks.values()}
    assert glue._host.manager.output_root == (webui.data / "jobs" / "here").resolve()
    choices = " ".join(repr(getattr(b, "choices", "")) for b in blocks.blocks.values())
    for listed in (webui.anything.title, "zhongli", webui.cn_model, "DPM++ 2M"):
        assert listed in choices
    script_callbacks.script_unloaded_callback()  # Reload UI: the manager stops, a new load makes a new one
    assert glue._host.manager is None


# Runs in a fresh Python: the engine cannot be imported twice in one process (pydantic refuses
# to redefine its validators), and `av` must be missing before anything imports it.
MISSING_AV_DRIVER = """
import json, sys
sys.modules["av"] = None  # `import av` now fails as it does when the package is not installed
sys.path[:0] = [sys.argv[1], sys.argv[2]]
from modules import paths_internal, script_callbacks, script_loading, shared
paths_internal.data_path = sys.argv[3]
syspath = sys.path
sys.path = [sys.argv[2]] + sys.path
script = script_loading.load_module(sys.argv[4])
sys.path = syspath
tabs = script_callbacks.ui_tabs_callback()
markdown = [str(b.value) for b in tabs[0][0].blocks.values() if type(b).__name__ == "Markdown"]
from fastapi import FastAPI
shared.cmd_opts.api = True
app = FastAPI()
script_callbacks.app_started_callback(None, app)
print(json.dumps({"tabs": [[t, e] for _, t, e in tabs], "markdown": markdown,
                  "routes": [r.path for r in app.routes if r.path.startswith("/vidstyle")],
                  "manager": script._host.manager is not None}))
"""


def test_missing_package_shows_what_to_do_in_the_tab(tmp_path: Path) -> None:
    pytest.importorskip("gradio")
    import json
    import subprocess

    done = subprocess.run(
        [sys.executable, "-c", MISSING_AV_DRIVER, str(DOUBLES), str(REPO), str(tmp_path), str(SCRIPT)],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=str(tmp_path),
    )
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert result["tabs"] == [["Video Stylize", "vidstyle"]]
    text = " ".join(result["markdown"])
    assert "the Python package `av` is missing" in text
    assert f'"{sys.executable}" -m pip install "av>=11"' in text
    assert result["routes"] == [] and result["manager"] is False
    assert "/vidstyle/v1 is not served" in done.stderr


def test_shadowing_vidstyle_package_is_reported(webui: WebUI) -> None:
    pytest.importorskip("gradio")
    from modules import script_callbacks

    engine = _SysModules(("vidstyle",))
    impostor = types.ModuleType("vidstyle")
    impostor.__file__ = str(webui.data / "extensions" / "other" / "vidstyle" / "__init__.py")
    sys.modules["vidstyle"] = impostor
    try:
        webui.load_glue()
        text = markdown_of(script_callbacks.ui_tabs_callback()[0][0])
        assert "another extension's `vidstyle` package" in text
    finally:
        engine.restore()


def test_missing_controlnet_shows_what_to_do_in_the_tab(doubles: None, tmp_path: Path) -> None:
    pytest.importorskip("gradio")
    from modules import script_callbacks

    glue = make_webui(tmp_path, flavor=None).load_glue()
    text = markdown_of(script_callbacks.ui_tabs_callback()[0][0])
    assert "needs ControlNet" in text and "sd-webui-controlnet" in text
    assert glue._host.manager is None


def test_api_routes_use_the_webui_api_auth(webui: WebUI) -> None:
    from fastapi import FastAPI
    from fastapi.testclient import TestClient
    from modules import errors, script_callbacks, shared

    webui.load_glue()
    shared.cmd_opts.api = True
    shared.cmd_opts.api_auth = "alice:pw1,bob:pw2"
    app = FastAPI()
    script_callbacks.app_started_callback(None, app)
    assert errors._reported == []
    client = TestClient(app)
    assert client.get("/vidstyle/v1/jobs").status_code == 401
    assert client.get("/vidstyle/v1/jobs", auth=("bob", "wrong")).status_code == 401
    assert client.get("/vidstyle/v1/jobs", auth=("bob", "pw2")).status_code == 200
    answer = client.get("/vidstyle/v1/jobs", auth=("alice", "pw1"))
    assert answer.status_code == 200 and answer.json() is not None


def test_api_routes_follow_the_webui_api_flag(webui: WebUI) -> None:
    from fastapi import FastAPI
    from fastapi.testclient import TestClient
    from modules import script_callbacks, shared

    webui.load_glue()
    app = FastAPI()
    script_callbacks.app_started_callback(None, app)  # no --api: the WebUI serves no API, nor do we
    assert TestClient(app).get("/vidstyle/v1/jobs").status_code == 404
    shared.cmd_opts.nowebui = True
    app = FastAPI()
    script_callbacks.app_started_callback(None, app)
    assert TestClient(app).get("/vidstyle/v1/jobs").status_code == 200  # no --api-auth: open, like /sdapi/v1


def test_allowed_roots_are_the_webui_folders(webui: WebUI, tmp_path: Path) -> None:
    from modules import shared

    glue = webui.load_glue()
    videos = tmp_path / "videos"
    shared.cmd_opts.gradio_allowed_path = [str(webui.data), str(videos)]
    jobs = webui.data / "outputs" / "vidstyle"
    assert glue.allowed_roots(jobs) == [webui.data.resolve(), jobs.resolve(), videos.resolve()]


def test_a_job_renders_in_process_through_the_manager(webui: WebUI, demo_clip: Path) -> None:
    from modules import sd_models, shared

    glue = webui.load_glue()
    manager = glue._host.get_manager()
    try:
        spec = job_spec(**{"source.path": str(demo_clip), "source.end_frame": 4, "sampling.steps": 2})
        job_id = manager.submit(spec, name="dance")
        assert manager.wait_idle(300)
        status = manager.status(job_id)
        assert status["state"] == "done", status
        assert status["done"] == 4
        with Image.open(Path(status["path"]) / "out" / "000000.png") as frame:
            parameters = frame.text["parameters"]
        assert "Version: v1.10.1" in parameters and "Model: anything-v5" in parameters  # the WebUI's own infotext
        assert shared.opts.sd_model_checkpoint == webui.other.title
        assert sd_models._loads[-1] == webui.anything.title
    finally:
        glue.on_script_unloaded()


# -- the in-process backend ------------------------------------------------------------------------


@pytest.mark.parametrize("flavor", [MIKUBILL, FORGE, FORGE_2024])
def test_frame_renders_with_the_controlnet_unit(doubles: None, tmp_path: Path, flavor: str) -> None:
    from modules import processing, sd_models, shared

    webui = make_webui(tmp_path, flavor)
    spec = job_spec()
    result = backend_for(spec).img2img(request_for(spec))

    p = processing._runs[-1]
    assert p.is_api and p._closed
    assert (p.seed, p.steps, p.sampler_name, p.scheduler) == (1234, 6, "DPM++ 2M", "Karras")  # not the tab's widgets
    assert p.prompt == spec.prompt + " <lora:zhongli:0.8>"
    assert p.override_settings == {"sd_model_checkpoint": webui.anything.title}
    assert p.do_not_save_samples and p.do_not_save_grid and p.denoising_strength == 0.6
    slots = p.script_args[webui.cn_script.args_from : webui.cn_script.args_to]
    assert len(slots) == 3 and [u.enabled for u in slots] == [True, False, False]
    (unit,) = p._controlnet_units
    assert unit.model == webui.cn_model
    assert unit.module == ("none" if flavor == MIKUBILL else "None")
    assert (unit.weight, unit.guidance_start, unit.guidance_end, unit.pixel_perfect) == (0.9, 0.0, 0.8, False)
    assert getattr(unit.control_mode, "value", unit.control_mode) == "ControlNet is more important"
    assert getattr(unit.resize_mode, "value", unit.resize_mode) == "Just Resize"
    assert unit.save_detected_map is False
    image = unit.image["image"] if flavor == FORGE_2024 else unit.image  # old Forge reads an {image, mask} pair
    assert np.array_equal(image, np.asarray(edge_image()))

    pixels = np.asarray(result.image)
    assert (pixels[16, 16:48] == 255).all() and (pixels[30, 30] < 255).any()  # the control edges reached the model
    info = result.info["parameters"]
    assert "Seed: 1234" in info and "Model: anything-v5" in info and "Lora hashes: zhongli" in info
    assert result.info["backend"] == "webui_local"
    assert shared.opts.sd_model_checkpoint == webui.other.title  # override restored
    assert sd_models._loads == [webui.other.title, webui.anything.title]
    assert shared.state._jobs == ["vidstyle"] and shared.state.job == ""
    assert shared.total_tqdm._clears == 1


def test_an_empty_prompt_sends_the_lora_tag_without_a_leading_space(webui: WebUI) -> None:
    from modules import processing

    spec = job_spec(prompt="")
    backend_for(spec).img2img(request_for(spec))
    assert processing._runs[-1].prompt == "<lora:zhongli:0.8>"  # as the HTTP backend sends it


def test_server_preprocessor_sends_the_source_frame_with_thresholds(webui: WebUI) -> None:
    from modules import processing

    spec = job_spec(
        **{"controlnet.preprocessor": "server", "controlnet.low_threshold": 50, "controlnet.high_threshold": 150}
    )
    request = request_for(spec)
    backend_for(spec).img2img(request)
    (unit,) = processing._runs[-1]._controlnet_units
    assert unit.module == "canny" and (unit.threshold_a, unit.threshold_b) == (50, 150)
    assert np.array_equal(unit.image, np.asarray(request.init_image))


@pytest.mark.parametrize("flavor", [FORGE, FORGE_2024])
def test_forge_accepts_an_all_black_control_map(doubles: None, tmp_path: Path, flavor: str) -> None:
    make_webui(tmp_path, flavor)
    spec = job_spec()
    result = backend_for(spec).img2img(request_for(spec, control=edge_image(black=True)))
    assert result.image.size == (64, 64)


def test_controlnet_off_disables_every_unit(webui: WebUI) -> None:
    from modules import processing

    webui.cn_script.controls[0].value = sys.modules["scripts.external_code"].ControlNetUnit(
        enabled=True, module="none", image=np.zeros((8, 8, 3), np.uint8)
    )  # the user's tab default enables unit 0
    spec = job_spec(**{"controlnet.enabled": False})
    backend_for(spec).img2img(request_for(spec))
    assert processing._runs[-1]._controlnet_units == []


def test_preflight_names_every_missing_model(webui: WebUI) -> None:
    spec = job_spec(
        **{
            "model.checkpoint": "nope",
            "model.loras": [{"name": "ghost", "weight": 1}],
            "controlnet.model": "control_missing",
            "sampling.sampler": "Heun 9000",
        }
    )
    with pytest.raises(PreflightError) as caught:
        backend_for(spec)
    text = str(caught.value)
    for name in ("'nope'", "'ghost'", "'control_missing'", "'Heun 9000'"):
        assert name in text
    assert len(caught.value.problems) == 4  # type: ignore[attr-defined]


def test_preflight_without_controlnet_or_lora_extension(doubles: None, tmp_path: Path) -> None:
    from vidstyle.backends.webui_local import CONTROLNET_MISSING, LORA_MISSING

    make_webui(tmp_path, flavor=None, lora_extension=False)
    with pytest.raises(PreflightError) as caught:
        backend_for(job_spec())
    assert caught.value.problems == [LORA_MISSING, CONTROLNET_MISSING]  # type: ignore[attr-defined]
    backend_for(job_spec(**{"controlnet.enabled": False, "model.loras": []}))  # nothing missing then


def test_interrupt_button_stops_the_job_and_drops_the_partial_frame(webui: WebUI) -> None:
    from modules import processing, shared

    processing._step_hooks.append(lambda p, step: shared.state.interrupt() if step == 2 else None)
    spec = job_spec()
    with pytest.raises(Cancelled, match="Interrupt button"):
        backend_for(spec).img2img(request_for(spec))
    assert shared.state.job == ""  # the WebUI's job ended


def test_backend_interrupt_touches_the_webui_only_while_its_frame_runs(webui: WebUI) -> None:
    from modules import processing, shared

    spec = job_spec()
    backend = backend_for(spec)
    processing._step_hooks.append(lambda p, step: backend.interrupt() if step == 1 else None)
    with pytest.raises(Cancelled, match="Render cancelled"):
        backend.img2img(request_for(spec))
    assert len(processing._runs) == 1

    idle = backend_for(spec)
    processing._step_hooks.clear()
    shared.state.begin(job="txt2img")  # someone else's generation holds the state now
    idle.interrupt()
    assert shared.state.interrupted is False
    shared.state.end()
    with pytest.raises(Cancelled):
        idle.img2img(request_for(spec))
    assert len(processing._runs) == 1  # a cancelled backend starts no frame


def test_skip_renders_the_frame_again(webui: WebUI) -> None:
    from modules import processing, shared

    runs: list[int] = []
    processing._step_hooks.append(
        lambda p, step: (runs.append(id(p)), shared.state.skip()) if step == 1 and not runs else None
    )
    statuses: list[str] = []
    spec = job_spec()
    result = backend_for(spec, statuses).img2img(request_for(spec, frame=7))
    assert len(processing._runs) == 2
    assert statuses == ["frame 7 was skipped in the WebUI; rendering it again"]
    complete = backend_for(spec).img2img(request_for(spec, frame=7))
    assert np.array_equal(np.asarray(result.image), np.asarray(complete.image))  # the full frame, not the cut one


def test_stop_generating_keeps_the_frame_then_stops(webui: WebUI) -> None:
    from modules import processing, shared

    processing._step_hooks.append(lambda p, step: shared.state.stop_generating() if step == 0 else None)
    spec = job_spec()
    backend = backend_for(spec)
    assert backend.img2img(request_for(spec)).image.size == (64, 64)
    with pytest.raises(Cancelled, match="Stop generating"):
        backend.img2img(request_for(spec, frame=1))
    assert len(processing._runs) == 1


def test_frames_wait_for_the_webui_queue(webui: WebUI) -> None:
    from modules import call_queue, processing

    spec = job_spec()
    backend = backend_for(spec)
    results: list[Any] = []
    with call_queue.queue_lock:  # the txt2img tab is generating
        worker = threading.Thread(target=lambda: results.append(backend.img2img(request_for(spec))))
        worker.start()
        worker.join(timeout=0.5)
        assert worker.is_alive() and processing._runs == []
    worker.join(timeout=60)
    assert len(results) == 1 and len(processing._runs) == 1


def test_webui_before_schedule_types(webui: WebUI, monkeypatch: pytest.MonkeyPatch) -> None:
    from modules import processing

    monkeypatch.setitem(sys.modules, "modules.sd_schedulers", None)  # WebUI < 1.9 and Forge before Aug 2024 lack it
    spec = job_spec(**{"sampling.sampler": "Euler a"})
    backend_for(spec).img2img(request_for(spec))
    p = processing._runs[-1]
    assert (p.sampler_name, p.scheduler) == ("Euler a", None)  # no `scheduler` keyword sent


def test_redo_with_another_sampler_is_resolved_per_frame(webui: WebUI) -> None:
    from modules import processing

    from vidstyle.errors import BackendError

    spec = job_spec()
    backend = backend_for(spec)
    backend.img2img(request_for(spec.with_overrides({"sampling.sampler": "Euler a"})))
    assert processing._runs[-1].sampler_name == "Euler a"
    with pytest.raises(BackendError, match="'Heun 9000'"):
        backend.img2img(request_for(spec.with_overrides({"sampling.sampler": "Heun 9000"})))


# -- install.py ---------------------------------------------------------------------------------------


def run_installer() -> str:
    out = io.StringIO()
    with redirect_stdout(out):
        namespace = runpy.run_path(str(INSTALL), run_name="install")
        assert namespace["main"]() == 0
    return out.getvalue()


def test_installer_adds_only_missing_packages_and_is_idempotent(doubles: None) -> None:
    import launch

    from vidstyle.deps import needed

    launch._installed.update({"av", "numpy", "cv2", "pydantic", "gradio"})
    assert run_installer() == ""
    wanted = [dep.pip_spec for dep in needed() if dep.import_name != "av"]
    assert launch._pip_calls == [f'"{launch.python}" -m pip install "{spec}" --prefer-binary' for spec in wanted]
    assert all(
        name not in " ".join(launch._pip_calls) for name in ("torch", "gradio", "diffusers", "pydantic", "numpy")
    )
    launch._pip_calls.clear()
    assert run_installer() == ""
    assert launch._pip_calls == []  # second start: nothing to do


def test_installer_prints_the_command_when_pip_fails(doubles: None) -> None:
    import launch

    launch._installed.update({"av", "tomli_w", "tomli"})
    launch._failing.add("imagehash")
    output = run_installer()
    assert f'"{launch.python}" -m pip install "imagehash>=4.3"' in output
    assert "No matching distribution" in output  # pip's own reason is shown too


def test_installer_respects_skip_install(doubles: None) -> None:
    import launch

    launch.args.skip_install = True
    output = run_installer()
    assert launch._pip_calls == []
    assert '-m pip install "av>=11" "tomli-w>=1.0" "imagehash>=4.3"' in output


def test_installer_table_matches_pyproject() -> None:
    from vidstyle.compat import tomllib
    from vidstyle.deps import WEBUI_ADDS

    with open(REPO / "pyproject.toml", "rb") as handle:
        dependencies = tomllib.load(handle)["project"]["dependencies"]
    declared = {dep.split(";")[0].strip().lower() for dep in dependencies}
    for dep in WEBUI_ADDS:
        assert dep.pip_spec.lower() in declared, dep
