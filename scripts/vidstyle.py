"""Video Stylize in the AUTOMATIC1111 WebUI (and Forge): its tab, its settings, its HTTP routes.

Glue only. The WebUI runs this file while the extension folder is first on sys.path, so
the one import done here binds our package name `vidstyle` (the WebUI takes the folder off
sys.path again right after); everything else happens inside the callbacks registered at
the end:

* on_ui_settings: the "Video Stylize" settings section;
* on_ui_tabs: the tab (vidstyle.ui.build_tab over one vidstyle.manager.JobManager whose jobs
  render in-process through the "webui_local" backend). A missing package or a missing
  ControlNet extension gives a tab that says what to do instead of a broken WebUI;
* on_app_started: /vidstyle/v1 (vidstyle.server.create_router) on the WebUI's FastAPI app
  when the WebUI serves its API (--api or --nowebui), behind the WebUI's own --api-auth
  check when that is set, under the policy of the settings (vidstyle.policy: by default
  clients get the in-process backend only and no WebUI URLs);
* on_script_unloaded (Reload UI): the manager stops; an unfinished job stays resumable.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

from modules import script_callbacks

EXTENSION_ROOT = Path(__file__).resolve().parent.parent
TAB_TITLE = "Video Stylize"
TAB_ID = "vidstyle"
SECTION = ("vidstyle", "Video Stylize")
# The settings category (A1111 1.7+, Forge): "Stable Diffusion", beside the img2img section,
# since a job is img2img over a video's frames. Registered by the WebUI itself.
SETTINGS_CATEGORY = "sd"
DEFAULT_OUTPUT_DIR = "outputs/vidstyle"
DEFAULT_PRESET = "anime-canny-sd15"
DEFAULT_GALLERY_SIZE = 8
OPT_OUTPUT_DIR = "vidstyle_output_dir"
OPT_PRESET = "vidstyle_default_preset"
OPT_GALLERY_SIZE = "vidstyle_gallery_size"
OPT_KEEP_FRAMES = "vidstyle_keep_intermediate"
# The policy of /vidstyle/v1 (what API clients may ask for); see vidstyle.policy.
OPT_API_BACKENDS = "vidstyle_api_backends"
OPT_API_WEBUI_URLS = "vidstyle_api_webui_urls"
OPT_API_MAX_UPLOAD_MB = "vidstyle_api_max_upload_mb"
OPT_API_MAX_QUEUED = "vidstyle_api_max_queued_jobs"
OPT_API_MAX_MEGAPIXELS = "vidstyle_api_max_job_megapixels"
API_BACKEND_CHOICES = ["webui_local", "webui_api", "passthrough"]
DEFAULT_API_BACKENDS = ["webui_local"]
API_MODULES = ("vidstyle.backends.webui_local", "vidstyle.manager", "vidstyle.server")
TAB_MODULES = API_MODULES + ("vidstyle.ui",)
CONTROLNET_MISSING = (
    "**Video Stylize needs ControlNet.** Install sd-webui-controlnet from *Extensions > Available* "
    "(or *Install from URL*: https://github.com/Mikubill/sd-webui-controlnet), put a canny model such as "
    "`control_v11p_sd15_canny` into `models/ControlNet`, then restart the WebUI. "
    "In Forge, ControlNet is built in: enable `sd_forge_controlnet` in *Extensions > Installed*."
)

try:
    import vidstyle  # noqa: F401  (binds the name while our folder is on sys.path)

    _package_error: BaseException | None = None
except Exception as exc:  # told in the tab, never at WebUI start-up
    _package_error = exc


class _Host:
    """What this load of the script owns: one JobManager, made on first use."""

    def __init__(self) -> None:
        self.manager: Any = None

    def get_manager(self) -> Any:
        if self.manager is None:
            from vidstyle.backends import register_backend
            from vidstyle.backends.webui_local import create
            from vidstyle.manager import JobManager

            register_backend("webui_local", create)
            self.manager = JobManager(output_root(), keep_intermediate=bool(option(OPT_KEEP_FRAMES, True)))
        return self.manager

    def close(self) -> None:
        if self.manager is not None:
            self.manager.close(cancel=True)
            self.manager = None


_host = _Host()


# -- settings ------------------------------------------------------------------------------------


def option(key: str, default: Any) -> Any:
    from modules import shared

    value = getattr(shared.opts, key, default)
    return default if value is None or value == "" else value


def output_root() -> Path:
    """The jobs folder; a relative setting lies inside the WebUI's data folder (--data-dir)."""
    from modules import paths_internal

    path = Path(str(option(OPT_OUTPUT_DIR, DEFAULT_OUTPUT_DIR))).expanduser()
    return path if path.is_absolute() else Path(paths_internal.data_path) / path


def preset_names() -> list[str]:
    # Globbed here, not read through vidstyle.spec: settings register even when the engine cannot import.
    return sorted(p.stem for p in (EXTENSION_ROOT / "presets" / "video").glob("*.toml")) or [DEFAULT_PRESET]


def _option_info(*args: Any, **kwargs: Any) -> Any:
    """shared.OptionInfo in our section, filed under SETTINGS_CATEGORY where the WebUI has categories.

    A1111 1.7+ and Forge take `category_id` (a section without one is listed under
    "Uncategorized"); earlier WebUIs have no such parameter, and there the section alone is right.
    """
    import inspect

    from modules import shared

    if "category_id" in inspect.signature(shared.OptionInfo).parameters:
        kwargs["category_id"] = SETTINGS_CATEGORY
    return shared.OptionInfo(*args, section=SECTION, **kwargs)


def on_ui_settings() -> None:
    import gradio as gr
    from modules import shared

    shared.opts.add_option(
        OPT_OUTPUT_DIR,
        _option_info(
            DEFAULT_OUTPUT_DIR,
            "Output folder for Video Stylize jobs (a relative path is inside the WebUI's data folder)",
        ).needs_reload_ui(),
    )
    shared.opts.add_option(
        OPT_PRESET,
        _option_info(
            DEFAULT_PRESET,
            "Default preset",
            gr.Dropdown,
            lambda: {"choices": preset_names()},
        ).needs_reload_ui(),
    )
    shared.opts.add_option(
        OPT_KEEP_FRAMES,
        _option_info(
            True,
            "Keep intermediate frames (source frames and canny maps) after a job finishes; "
            "without them a redo decodes the video again",
        ).needs_reload_ui(),
    )
    shared.opts.add_option(
        OPT_GALLERY_SIZE,
        _option_info(
            DEFAULT_GALLERY_SIZE,
            "Latest frames shown while a job renders",
            gr.Slider,
            {"minimum": 1, "maximum": 64, "step": 1},
        ).needs_reload_ui(),
    )
    shared.opts.add_option(
        OPT_API_BACKENDS,
        _option_info(
            list(DEFAULT_API_BACKENDS),
            "API (/vidstyle/v1, with --api): backends clients may choose",
            gr.CheckboxGroup,
            {"choices": API_BACKEND_CHOICES},
        ).needs_restart(),
    )
    shared.opts.add_option(
        OPT_API_WEBUI_URLS,
        _option_info(
            "",
            "API: WebUI servers webui_api jobs may call (comma-separated URLs; none by default; "
            "their user:password comes from the VIDSTYLE_WEBUI_AUTH environment variable)",
        ).needs_restart(),
    )
    shared.opts.add_option(
        OPT_API_MAX_UPLOAD_MB, _option_info(4096, "API: largest video upload (MB)", gr.Number).needs_restart()
    )
    shared.opts.add_option(
        OPT_API_MAX_QUEUED, _option_info(16, "API: most jobs queued or rendering at once", gr.Number).needs_restart()
    )
    shared.opts.add_option(
        OPT_API_MAX_MEGAPIXELS,
        _option_info(20000, "API: largest job, frames x width x height in megapixels", gr.Number).needs_restart(),
    )


# -- start-up problems, told in the tab ------------------------------------------------------------


def explain_import_error(exc: BaseException) -> str:
    """Markdown: which package is missing and the command that installs it."""
    missing = (getattr(exc, "name", None) or "").split(".")[0] if isinstance(exc, ImportError) else ""
    spec = None
    try:
        from vidstyle.deps import pip_command, pip_spec_for

        spec = pip_spec_for(missing) if missing else None
    except ImportError:
        pass
    if spec:
        return (
            f"**Video Stylize could not start:** the Python package `{missing}` is missing from the WebUI's Python.\n\n"
            "Restart the WebUI: the extension's installer adds it. If it is still missing, run this, then restart:\n\n"
            f"```\n{pip_command((spec,))}\n```"
        )
    return (
        f"**Video Stylize could not start:** {type(exc).__name__}: {exc}.\n\n"
        "Update the extension (*Extensions > Installed > Check for updates*) or reinstall it; "
        "the console shows the details."
    )


def import_problem(needed: tuple[str, ...] = TAB_MODULES) -> str | None:
    """None when our package and the `needed` modules import; else what to do, as Markdown."""
    if _package_error is not None:
        return explain_import_error(_package_error)
    package_dir = Path(getattr(sys.modules.get("vidstyle"), "__file__", "") or "").resolve().parent
    if package_dir != EXTENSION_ROOT / "vidstyle":
        return (
            f"**Video Stylize could not start:** another extension's `vidstyle` package ({package_dir}) "
            "was loaded in place of ours; disable that extension in *Extensions > Installed* and restart the WebUI."
        )
    try:
        for name in needed:
            __import__(name)
    except ImportError as exc:
        return explain_import_error(exc)
    except Exception as exc:  # a bug or a broken install: keep the traceback for the console
        _report("Video Stylize: importing the engine failed")
        return explain_import_error(exc)
    return None


def controlnet_problem() -> str | None:
    from vidstyle.backends.webui_local import find_controlnet

    return None if find_controlnet() is not None else CONTROLNET_MISSING


def _report(message: str) -> None:
    """The WebUI's way to log an exception (with its traceback) from inside an except block."""
    from modules import errors

    errors.report(message, exc_info=True)


def message_tab(markdown: str) -> list[tuple[Any, str, str]]:
    import gradio as gr

    with gr.Blocks(analytics_enabled=False) as blocks:
        gr.Markdown(markdown, elem_id="vidstyle_problem")
    return [(blocks, TAB_TITLE, TAB_ID)]


# -- the tab --------------------------------------------------------------------------------------


def on_ui_tabs() -> list[tuple[Any, str, str]]:
    problem = import_problem() or controlnet_problem()
    if problem:
        return message_tab(problem)
    from vidstyle.backends import webui_local
    from vidstyle.errors import VidstyleError
    from vidstyle.ui import UiChoices, build_tab

    choices = UiChoices(
        checkpoints=webui_local.checkpoint_titles,
        loras=webui_local.lora_names,
        controlnet_models=webui_local.controlnet_model_names,
        samplers=webui_local.sampler_names,
        default_preset=str(option(OPT_PRESET, DEFAULT_PRESET)),
        gallery_size=int(option(OPT_GALLERY_SIZE, DEFAULT_GALLERY_SIZE)),
        backend_kind="webui_local",
    )
    try:
        return [(build_tab(_host.get_manager(), choices), TAB_TITLE, TAB_ID)]
    except VidstyleError as err:  # e.g. the output folder cannot be created
        return message_tab(f"**Video Stylize could not start:** {err}")
    except Exception as exc:
        _report("Video Stylize: building the tab failed")
        return message_tab(explain_import_error(exc))


# -- the HTTP routes ------------------------------------------------------------------------------


def allowed_roots(jobs_root: Path) -> list[Path]:
    """Folders API clients may name source videos in: the WebUI's data folder, the jobs folder,
    and every --gradio-allowed-path (the WebUI's own list of folders it may serve files from)."""
    from modules import paths_internal, shared

    extra = getattr(shared.cmd_opts, "gradio_allowed_path", None) or []
    roots: list[Path] = []
    for candidate in [Path(paths_internal.data_path), jobs_root, *(Path(p) for p in extra)]:
        resolved = candidate.expanduser().resolve()
        if resolved not in roots:
            roots.append(resolved)
    return roots


def api_policy() -> Any:
    """The operator's policy for /vidstyle/v1 from the settings; by default jobs render in-process only."""
    from vidstyle.policy import ServerPolicy

    return ServerPolicy.from_webui_settings(
        backends=option(OPT_API_BACKENDS, DEFAULT_API_BACKENDS),
        webui_urls=option(OPT_API_WEBUI_URLS, ""),
        max_upload_mb=option(OPT_API_MAX_UPLOAD_MB, 4096),
        max_queued_jobs=option(OPT_API_MAX_QUEUED, 16),
        max_job_megapixels=option(OPT_API_MAX_MEGAPIXELS, 20000),
    )


def on_app_started(demo: Any, app: Any) -> None:
    from modules import shared

    cmd_opts = shared.cmd_opts
    # Served exactly when the WebUI serves /sdapi/v1, so starting jobs over HTTP is never
    # more open than the user made the WebUI's own API.
    if not (getattr(cmd_opts, "api", False) or getattr(cmd_opts, "nowebui", False)):
        return
    if import_problem(API_MODULES) is not None:
        print("Video Stylize: /vidstyle/v1 is not served; the Video Stylize tab says why.", file=sys.stderr)
        return

    from vidstyle.auth import parse_credential_list
    from vidstyle.compat import ValidationError
    from vidstyle.overrides import describe_validation_error
    from vidstyle.server import create_router

    try:
        policy = api_policy()
    except ValidationError as exc:  # never a broken WebUI start: say which setting to fix
        print(
            f"Video Stylize: /vidstyle/v1 is not served; fix the setting: "
            f"{describe_validation_error(exc, 'Video Stylize API settings')}",
            file=sys.stderr,
        )
        return
    manager = _host.get_manager()
    credentials = parse_credential_list(getattr(cmd_opts, "api_auth", None))  # as the WebUI's API reads it
    router = create_router(
        manager,
        allowed_roots(manager.output_root),
        auth=list(credentials.items()) or None,
        default_backend="webui_local",
        default_preset=lambda: str(option(OPT_PRESET, DEFAULT_PRESET)),
        policy=policy,
    )
    app.include_router(router)


def on_script_unloaded() -> None:
    _host.close()


script_callbacks.on_ui_settings(on_ui_settings)
script_callbacks.on_ui_tabs(on_ui_tabs)
script_callbacks.on_app_started(on_app_started)
script_callbacks.on_script_unloaded(on_script_unloaded)
