"""Render frames inside the WebUI's own process: modules.processing + the ControlNet extension.

Only the WebUI glue (scripts/vidstyle.py) registers this backend, with
`register_backend("webui_local", create)`; the module imports without the WebUI because
every `modules.*` import happens inside a function. Upstream facts relied on (A1111 1.10.1,
sd-webui-controlnet 1.1.455, Forge; see docs/webui-compat.md):

* One frame is one `StableDiffusionProcessingImg2Img` + `process_images`, run under
  `modules.call_queue.queue_lock` between `shared.state.begin()` and `end()` exactly as the
  WebUI's img2img API does, so it queues with the txt2img/img2img tabs instead of colliding.
  The lock is taken per frame: the user's own generations can run between two frames.
  The next frame's inputs are built while a frame renders, and it then waits for the lock
  (a FIFO lock since 1.7), so the GPU goes on to it at once; a cancel lets it take the
  lock and leave without rendering.
* `p.is_api = True`: otherwise the built-in Sampler and Seed scripts (`setup_for_ui_only`)
  overwrite the frame's sampler, steps and seed with the img2img tab's widget values.
* Script arguments start as the WebUI's API builds them (each script input's default
  value, slot 0 = no selectable script); the ControlNet slots are then set through
  sd-webui-controlnet's public `external_code.update_cn_script_in_processing`, or for
  Forge's built-in ControlNet (whose `lib_controlnet.external_code` has no such helper) by
  filling the ControlNet script's `args_from:args_to` slots the same way.
* The checkpoint is chosen with `override_settings={"sd_model_checkpoint": title}` and
  `override_settings_restore_afterwards=True`: process_images restores the setting.
  process_images silently drops an unknown checkpoint, and the Lora extension silently
  skips an unknown `<lora:name:weight>` tag, so preflight resolves every name first (the
  same `plan_for` the HTTP backend uses, on the same lists the WebUI's routes return).
* Interrupt leaves a partial image in `processed.images`; it is dropped and the job stops
  (Cancelled). Skip cuts the frame short; the frame is rendered again. "Stop generating"
  keeps the frame being rendered and then stops the job.
"""

from __future__ import annotations

import importlib
import sys
import threading
from contextlib import closing
from dataclasses import dataclass
from types import ModuleType
from typing import Any

import numpy as np

from ..errors import BackendError, Cancelled, PreflightError
from ..ordered_turns import OrderedTurns
from ..spec import ControlNetSpec, JobSpec
from .base import Img2ImgRequest, Img2ImgResult, StatusCallback
from .webui_fields import controlnet_unit, img2img_fields, wanted_from_request, wanted_from_spec
from .webui_preflight import (
    FORGE_CONTROLNET,
    SD_WEBUI_CONTROLNET,
    ControlNetCatalog,
    ServerCatalog,
    ServerPlan,
    Wanted,
    plan_for,
)

NAME = "webui_local"
JOB_NAME = "vidstyle"
CONTROLNET_TITLE = "ControlNet"  # Script.title() of both sd-webui-controlnet and Forge's built-in ControlNet
INTERRUPTED = "Stopped by the WebUI's Interrupt button; the job is saved and Resume continues it."
STOPPED = "Stopped by the WebUI's Stop generating button after the frame in flight; Resume continues the job."
CANCELLED = "Render cancelled; the job is saved and Resume continues it."
CONTROLNET_MISSING = (
    "ControlNet is not loaded in this WebUI; install sd-webui-controlnet from Extensions > Available "
    "(in Forge enable the built-in sd_forge_controlnet), restart the WebUI, or turn ControlNet off."
)
LORA_MISSING = (
    "The WebUI's built-in Lora extension is not loaded; enable it in Extensions > Installed and restart the WebUI."
)


# -- the ControlNet extension as the WebUI loaded it --------------------------------------


@dataclass
class ControlNetApi:
    """The public module of the ControlNet extension this WebUI runs."""

    flavor: str  # SD_WEBUI_CONTROLNET or FORGE_CONTROLNET
    external_code: ModuleType
    global_state: ModuleType | None = None  # Forge: model and preprocessor lists live here


def _loaded_module(name: str) -> ModuleType | None:
    """The module the WebUI already imported under `name`, else an import attempt.

    Re-importing an extension by file path (`extensions.sd-webui-controlnet.scripts...`)
    would make a second copy with its own, empty model list, so the loaded one comes first.
    """
    module = sys.modules.get(name)
    if module is not None:
        return module
    try:
        return importlib.import_module(name)
    except Exception:  # absent, or an unrelated `scripts` package failing to import
        return None


def find_controlnet() -> ControlNetApi | None:
    """sd-webui-controlnet's `scripts.external_code`, or Forge's `lib_controlnet`; None when neither runs."""
    mikubill = _loaded_module("scripts.external_code")
    if mikubill is not None and all(
        hasattr(mikubill, name) for name in ("ControlNetUnit", "update_cn_script_in_processing", "get_models")
    ):
        return ControlNetApi(SD_WEBUI_CONTROLNET, mikubill)
    forge = _loaded_module("lib_controlnet.external_code")
    forge_state = _loaded_module("lib_controlnet.global_state")
    if forge is not None and forge_state is not None and hasattr(forge, "ControlNetUnit"):
        return ControlNetApi(FORGE_CONTROLNET, forge, forge_state)
    return None


# -- what this WebUI offers, in the shapes of its HTTP routes ------------------------------


def local_url() -> str:
    """How messages name this WebUI (its local address)."""
    from modules import shared

    return f"http://127.0.0.1:{getattr(shared.cmd_opts, 'port', None) or 7860}"


def _checkpoints() -> list[dict[str, Any]]:
    from modules import sd_models

    # The fields of GET /sdapi/v1/sd-models (modules/api/api.py get_sd_models).
    return [
        {"title": x.title, "model_name": x.model_name, "hash": x.shorthash, "sha256": x.sha256, "filename": x.filename}
        for x in sd_models.checkpoints_list.values()
    ]


def _samplers() -> list[dict[str, Any]]:
    from modules import sd_samplers

    return [{"name": s.name, "aliases": list(s.aliases)} for s in sd_samplers.all_samplers]


def _schedulers() -> list[dict[str, Any]] | None:
    try:
        from modules import sd_schedulers
    except ImportError:  # WebUI before 1.9: no schedule types
        return None
    return [{"name": s.name, "label": s.label, "aliases": list(s.aliases or [])} for s in sd_schedulers.schedulers]


def _loras() -> list[dict[str, Any]] | None:
    # The Lora extension (A1111 extensions-builtin/Lora, Forge sd_forge_lora) loads as `networks`.
    networks = sys.modules.get("networks")
    if networks is None or not hasattr(networks, "available_networks"):
        return None
    return [{"name": n.name, "alias": n.alias, "path": n.filename} for n in networks.available_networks.values()]


def _controlnet_catalog(api: ControlNetApi) -> ControlNetCatalog:
    if api.flavor == SD_WEBUI_CONTROLNET:
        code = api.external_code
        # update=True rescans models/ControlNet, as GET /controlnet/model_list does.
        models = list(code.get_models(update=True))
        return ControlNetCatalog(api.flavor, models, list(code.get_modules()), code.get_modules_detail())
    state = api.global_state
    assert state is not None
    state.update_controlnet_filenames()
    models = [m for m in state.get_all_controlnet_names() if m != "None"]
    return ControlNetCatalog(api.flavor, models, list(state.get_all_preprocessor_names()), {})


def read_catalog(wanted: Wanted) -> tuple[ServerCatalog, list[str]]:
    """This WebUI's checkpoints, samplers, schedule types, LoRAs and ControlNet lists."""
    problems: list[str] = []
    loras = None
    if wanted.loras:
        loras = _loras()
        if loras is None:
            problems.append(LORA_MISSING)
    controlnet = None
    if wanted.controlnet is not None:
        api = find_controlnet()
        if api is None:
            problems.append(CONTROLNET_MISSING)
        else:
            controlnet = _controlnet_catalog(api)
    catalog = ServerCatalog(local_url(), _checkpoints(), _samplers(), _schedulers(), loras, controlnet)
    return catalog, problems


def checkpoint_titles() -> list[str]:
    return [entry["title"] for entry in _checkpoints()]


def lora_names() -> list[str]:
    return [entry["name"] for entry in _loras() or []]


def lora_stage_target() -> tuple[Any, Any, Any]:
    """(Lora folder, refresh(expected names), listed names) of this WebUI, for `vidstyle.lora_stage`.

    The folder is the Lora extension's --lora-dir (default models/Lora); refreshing is what
    POST /sdapi/v1/refresh-loras does: networks.list_available_networks().
    """
    from pathlib import Path

    from modules import shared

    networks = sys.modules.get("networks")
    folder = getattr(shared.cmd_opts, "lora_dir", None)
    if networks is None or not hasattr(networks, "list_available_networks") or not folder:
        raise PreflightError(LORA_MISSING)

    def refresh(expected: list[str]) -> None:
        networks.list_available_networks()
        missing = [name for name in expected if name not in networks.available_networks]
        if missing:
            raise PreflightError(
                f"This WebUI does not list {missing[0]} after a refresh; check that {folder} is its Lora folder."
            )

    return Path(folder), refresh, lambda: set(lora_names())


def controlnet_model_names() -> list[str]:
    api = find_controlnet()
    return _controlnet_catalog(api).models if api is not None else []


def sampler_names() -> list[str]:
    return [entry["name"] for entry in _samplers()]


# -- building one img2img run ---------------------------------------------------------------


def default_script_args(runner: Any) -> list[Any]:
    """Script arguments as the WebUI's API fills them: every input's default, no selectable script."""
    last = max([1] + [script.args_to for script in runner.scripts])
    inputs = list(runner.inputs)
    if len(inputs) < last:
        raise PreflightError(
            "The WebUI has not built its img2img scripts yet; wait until its page has loaded, then start the job again."
        )
    args = [getattr(component, "value", None) for component in inputs[:last]]
    args[0] = 0
    return args


def _controlnet_script(runner: Any) -> Any | None:
    return next((s for s in runner.alwayson_scripts if s.title() == CONTROLNET_TITLE), None)


def build_unit(api: ControlNetApi, plan: ServerPlan, cn: ControlNetSpec, request: Img2ImgRequest) -> Any:
    """One enabled ControlNet unit with the image as an RGB array (what the extension's own tab passes).

    'ours': our canny map through the identity preprocessor; 'server': the source frame
    through the extension's canny with our thresholds.
    """
    # request.source: the source frame even when the init is a flow-guided blend of outputs.
    source = request.control_image if cn.preprocessor == "ours" else request.source
    image = np.ascontiguousarray(np.asarray(source.convert("RGB"), dtype=np.uint8))
    fields = controlnet_unit(plan, cn, image)
    if api.flavor == FORGE_CONTROLNET:
        if hasattr(api.external_code.ControlNetUnit, "image_fg"):
            # Forge since Aug 2024 tests `(image < 5).all() and (image_fg > 5).any()`: an
            # all-black map (a blank frame) without a foreground layer would compare None.
            fields["image_fg"] = np.zeros(image.shape[:2] + (4,), dtype=np.uint8)
        else:
            # Earlier Forge reads the image as {"image", "mask"}, the shape its from_dict makes.
            fields["image"] = {"image": image, "mask": np.zeros_like(image)}
    return api.external_code.ControlNetUnit(**fields)


def set_forge_units(runner: Any, args: list[Any], units: list[Any], api: ControlNetApi) -> None:
    """Fill the ControlNet script's slots, padding with disabled units (as update_cn_script does)."""
    script = _controlnet_script(runner)
    if script is None:
        if units:
            raise BackendError("The ControlNet script is not among the WebUI's img2img scripts; restart the WebUI.")
        return
    slots = script.args_to - script.args_from
    disabled = [api.external_code.ControlNetUnit(enabled=False) for _ in range(max(slots - len(units), 0))]
    args[script.args_from : script.args_to] = (units + disabled)[:slots]


# -- the backend ------------------------------------------------------------------------------


@dataclass
class _Prepared:
    """One frame's inputs, built before it waits for the WebUI's queue lock."""

    kwargs: dict[str, Any]  # StableDiffusionProcessingImg2Img arguments but the model
    script_args: list[Any]
    api: ControlNetApi | None
    units: list[Any]


class WebUILocalBackend:
    name = NAME
    # One WebUI, one GPU queue: frames render one at a time, but the next frame's inputs
    # (arrays, ControlNet units, script arguments) are built while the current one renders
    # and it then waits in the WebUI's queue, so the GPU goes on to it at once.
    concurrency = 2
    renders_at_once = 1

    def __init__(self, spec: JobSpec, on_status: StatusCallback | None = None) -> None:
        self.spec = spec
        self.on_status = on_status
        self._wanted = wanted_from_spec(spec)
        self._plans: dict[Wanted, ServerPlan] = {}
        self._guard = threading.Lock()  # orders interrupt() against the frame entering/leaving the WebUI
        self._in_flight = False
        # Frames ask for the queue lock in the order they came: each waits until the one
        # before holds the lock (or gave up); the WebUI's FIFO lock keeps that order.
        self._turns = OrderedTurns()
        self._cancelled = False
        self._stop_after_frame = False

    # -- protocol ---------------------------------------------------------------------------
    def preflight(self) -> None:
        catalog, problems = read_catalog(self._wanted)
        plan = None
        if not problems:
            plan, problems = plan_for(catalog, self._wanted)
        if problems or plan is None:
            error = PreflightError("\n".join(problems) or "This WebUI cannot render the job.")
            error.problems = problems  # type: ignore[attr-defined]  # one sentence each, for UIs
            raise error
        self._plans[self._wanted] = plan

    def img2img(self, request: Img2ImgRequest) -> Img2ImgResult:
        while True:
            ticket = self._turns.ticket()
            try:
                prepared = self._prepared(request)
                outcome = self._render_once(prepared, request, ticket)
            finally:
                self._turns.withdraw(ticket)  # it holds the queue lock by now, or never will
            if outcome is not None:
                return outcome
            self._status(f"frame {request.frame_index} was skipped in the WebUI; rendering it again")

    def interrupt(self) -> None:
        from modules import shared

        with self._guard:
            self._cancelled = True
            # Only while our frame holds the WebUI: afterwards the state belongs to someone else's job.
            if self._in_flight:
                shared.state.interrupt()

    def close(self) -> None:
        self._plans.clear()

    # -- internals --------------------------------------------------------------------------
    def _status(self, message: str) -> None:
        if self.on_status is not None:
            self.on_status(message)

    def _plan(self, wanted: Wanted) -> ServerPlan:
        """A redo may ask for other names than the job did; resolve those once, too."""
        if wanted not in self._plans:
            catalog, problems = read_catalog(wanted)
            plan = None
            if not problems:
                plan, problems = plan_for(catalog, wanted)
            if problems or plan is None:
                raise BackendError(problems[0] if problems else "This WebUI cannot render this frame.")
            self._plans[wanted] = plan
        return self._plans[wanted]

    def _enter(self, frame_index: int) -> None:
        from modules import shared

        with self._guard:
            if self._cancelled:
                raise Cancelled(CANCELLED)
            if self._stop_after_frame:
                raise Cancelled(STOPPED)
            shared.state.begin(job=JOB_NAME)
            self._in_flight = True
        shared.state.job_count = 1
        shared.state.textinfo = f"Video Stylize: frame {frame_index}"

    def _leave(self) -> None:
        from modules import shared

        with self._guard:
            self._in_flight = False
        shared.state.end()
        total = getattr(shared, "total_tqdm", None)
        if total is not None:  # the console's "Total progress" bar, cleared as the API does
            total.clear()

    def _render_once(self, prepared: _Prepared, request: Img2ImgRequest, ticket: int) -> Img2ImgResult | None:
        """One pass through process_images; None when the user pressed Skip."""
        from modules import call_queue, processing, shared

        self._turns.wait(ticket)
        with call_queue.queue_lock:
            self._turns.withdraw(ticket)  # holding the lock: the next frame may queue behind us
            self._enter(request.frame_index)
            try:
                with closing(self._processing(prepared)) as p:
                    processed = processing.process_images(p)
                interrupted, skipped = bool(shared.state.interrupted), bool(shared.state.skipped)
                stopping = bool(getattr(shared.state, "stopping_generation", False))
            except (Cancelled, PreflightError, BackendError):
                raise
            except Exception as exc:  # CUDA out of memory, NaNs, a script's bug: the WebUI logged it
                raise _webui_failure(request, exc) from exc
            finally:
                self._leave()
        if interrupted:
            message = CANCELLED if self._cancelled else INTERRUPTED
            with self._guard:  # the next frame, waiting for the queue lock, must not start now
                self._cancelled = True
            raise Cancelled(message)
        if skipped:
            return None
        if stopping:
            self._stop_after_frame = True
        if not processed.images:
            raise BackendError(f"The WebUI returned no image for frame {request.frame_index}; see its console.")
        info: dict[str, Any] = {"backend": NAME, "seed": getattr(processed, "seed", request.seed)}
        infotexts = getattr(processed, "infotexts", None) or []
        if infotexts and isinstance(infotexts[0], str):
            info["parameters"] = infotexts[0]  # the WebUI's own infotext, for PNG Info
        return Img2ImgResult(image=processed.images[0].convert("RGB"), info=info)

    def _prepared(self, request: Img2ImgRequest) -> _Prepared:
        try:
            return self._prepare(self._plan(wanted_from_request(request)), request)
        except (Cancelled, PreflightError, BackendError):
            raise
        except Exception as exc:  # an extension's unit class refusing our fields, say
            raise _webui_failure(request, exc) from exc

    def _prepare(self, plan: ServerPlan, request: Img2ImgRequest) -> _Prepared:
        """Everything that does not need the model, done before the frame queues for the WebUI."""
        from modules import scripts, shared

        kwargs: dict[str, Any] = {
            "outpath_samples": getattr(shared.opts, "outdir_img2img_samples", None),
            "outpath_grids": getattr(shared.opts, "outdir_img2img_grids", None),
            **img2img_fields(plan, request),
            "subseed": -1,
            "subseed_strength": 0,
            "init_images": [request.init_image],
            "do_not_save_samples": True,  # our job folder keeps the frames
            "do_not_save_grid": True,
        }
        api = find_controlnet()
        if request.controlnet.enabled and api is None:
            raise BackendError(CONTROLNET_MISSING)
        units = [build_unit(api, plan, request.controlnet, request)] if (api and request.controlnet.enabled) else []
        return _Prepared(kwargs, default_script_args(scripts.scripts_img2img), api, units)

    def _processing(self, prepared: _Prepared) -> Any:
        """The frame's processing object, made under the queue lock: the model is the one loaded now."""
        from modules import processing, scripts, shared

        p = processing.StableDiffusionProcessingImg2Img(sd_model=shared.sd_model, **prepared.kwargs)
        p.is_api = True  # see the module docstring: keeps the built-in scripts off our settings
        runner = scripts.scripts_img2img
        args = list(prepared.script_args)
        api, units = prepared.api, prepared.units
        if api is not None and api.flavor == FORGE_CONTROLNET:
            set_forge_units(runner, args, units, api)
        p.scripts = runner
        p.script_args = tuple(args)
        if api is not None and api.flavor == SD_WEBUI_CONTROLNET:
            # Also when ControlNet is off: pads every slot with disabled units, whatever the tab's defaults.
            api.external_code.update_cn_script_in_processing(p, units)
        return p


def _webui_failure(request: Img2ImgRequest, exc: Exception) -> BackendError:
    return BackendError(
        f"The WebUI failed on frame {request.frame_index} ({type(exc).__name__}: {exc}); see its console."
    )


def create(spec: JobSpec, on_status: StatusCallback | None = None) -> WebUILocalBackend:
    """The factory scripts/vidstyle.py registers as the "webui_local" backend."""
    return WebUILocalBackend(spec, on_status)


__all__ = [
    "ControlNetApi",
    "WebUILocalBackend",
    "build_unit",
    "checkpoint_titles",
    "controlnet_model_names",
    "create",
    "default_script_args",
    "find_controlnet",
    "lora_names",
    "lora_stage_target",
    "read_catalog",
    "sampler_names",
]
