"""`vidstyle ui` and `vidstyle serve`: the tab and the job API without the WebUI.

Jobs render with the backend their spec names (diffusers on this machine, or running WebUIs
over HTTP); the model pickers list what lies in the models folder (VIDSTYLE_MODELS, default
OUTPUT_ROOT/../models) plus the built-in random-weight 'tiny' model.
"""

from __future__ import annotations

import os
import socket
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from .errors import UserInputError
from .manager import JobManager
from .samplers import SAMPLERS
from .spec import DEFAULT_PRESET, list_presets

LORA_FOLDERS = {"lora", "loras"}


def models_dir(output_root: Path) -> Path:
    return Path(os.environ.get("VIDSTYLE_MODELS") or Path(output_root).resolve().parent / "models")


def _model_files(root: Path) -> list[Path]:
    """*.safetensors files and diffusers folders (model_index.json or config.json) under root."""
    if not root.is_dir():
        return []
    found = sorted(root.rglob("*.safetensors"))
    found += sorted(p.parent for p in root.rglob("model_index.json"))
    found += sorted(p.parent for p in root.rglob("config.json") if "control" in p.parent.name.lower())
    return found


def _is_lora(path: Path, root: Path) -> bool:
    return any(part.lower() in LORA_FOLDERS for part in path.relative_to(root).parts[:-1])


def _is_controlnet(path: Path) -> bool:
    return "control" in path.name.lower()


def local_choices(output_root: Path) -> dict[str, list[str]]:
    """Model names for the pickers, sorted into checkpoints, LoRAs and ControlNets by folder and name."""
    root = models_dir(output_root)
    files = _model_files(root)
    loras = [str(p) for p in files if _is_lora(p, root)]
    controlnets = [str(p) for p in files if not _is_lora(p, root) and _is_controlnet(p)]
    checkpoints = [str(p) for p in files if str(p) not in loras and str(p) not in controlnets]
    return {"checkpoints": ["tiny"] + checkpoints, "loras": loras, "controlnet_models": ["tiny"] + controlnets}


def _ui_choices(output_root: Path) -> Any:
    from .tab_values import UiChoices

    return UiChoices(
        checkpoints=lambda: local_choices(output_root)["checkpoints"],
        loras=lambda: local_choices(output_root)["loras"],
        controlnet_models=lambda: local_choices(output_root)["controlnet_models"],
        samplers=lambda: list(SAMPLERS),
        default_preset=DEFAULT_PRESET if DEFAULT_PRESET in list_presets() else (list_presets() or [""])[0],
        gallery_size=8,
        backend_kind=None,
    )


def enable_queue(blocks: Any, workers: int = 8) -> Any:
    """Turn on gradio's queue (generators need it) with room for several pollers at once."""
    import gradio as gr

    if int(gr.__version__.split(".")[0]) >= 4:
        return blocks.queue(default_concurrency_limit=workers)
    return blocks.queue(concurrency_count=workers)


def build_standalone_ui(output_root: Path) -> Any:
    """The tab as a complete gradio app over a JobManager for output_root (not launched)."""
    try:
        from .ui import build_tab
    except ModuleNotFoundError as exc:
        raise UserInputError(f"The UI needs gradio ({exc}); install it with: pip install 'vidstyle[ui]'.") from None
    except ImportError as exc:  # installed, but built for other versions of its dependencies
        raise UserInputError(
            f"gradio is installed but cannot be imported ({exc}); install a gradio release that matches "
            "the installed huggingface_hub and starlette, e.g. pip install -U gradio."
        ) from None
    manager = JobManager(Path(output_root))
    blocks = build_tab(manager, _ui_choices(Path(output_root)))
    blocks.title = "Vidstyle"
    return enable_queue(blocks)


LOOPBACK = ("127.0.0.1", "localhost", "::1")


def _warn_if_open(host: str, credentials: Any, what: str) -> None:
    if host not in LOOPBACK and credentials is None:
        print(f"warning: serving on {host} without --auth; anyone who can reach it can {what}.", file=sys.stderr)


def serve_ui(host: str, port: int, output_root: Path, auth: str | None = None) -> int:
    """Serve the Video Stylize tab on http://host:port until Ctrl-C; `auth` is 'user:pass' (gradio's login)."""
    from .auth import parse_auth

    credentials = parse_auth(auth, "--auth")
    _warn_if_open(host, credentials, "start jobs and read their files")
    output_root = Path(output_root).resolve()
    app = build_standalone_ui(output_root)
    print(f"vidstyle ui: jobs in {output_root}; models from {models_dir(output_root)}", file=sys.stderr)
    try:
        app.launch(
            server_name=host,
            server_port=port,
            allowed_paths=[str(output_root)],
            inbrowser=False,
            auth=credentials,
            show_error=True,
            quiet=False,
        )
    except OSError as exc:
        raise UserInputError(f"Cannot listen on {host}:{port} ({exc}); choose another --port.") from None
    except KeyboardInterrupt:
        pass
    finally:
        app.close()
    return 0


def allowed_roots_from_env(output_root: Path, extra: Sequence[Path] | None = None) -> list[Path]:
    """Folders the API may read source videos from: VIDSTYLE_ALLOWED_ROOTS (os.pathsep-separated),
    else the current folder; uploads always land inside output_root."""
    configured = os.environ.get("VIDSTYLE_ALLOWED_ROOTS")
    roots = [Path(p) for p in configured.split(os.pathsep) if p] if configured else [Path.cwd()]
    return [p.resolve() for p in list(extra or []) + roots]


def _check_can_listen(host: str, port: int) -> None:
    """uvicorn reports a taken port as a log line and exit code 3; say it as one sentence first."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((host, port))
        except OSError as exc:
            raise UserInputError(f"Cannot listen on {host}:{port} ({exc.strerror}); choose another --port.") from None


def serve_api(
    host: str,
    port: int,
    output_root: Path,
    auth: str | None = None,
    allowed_roots: Sequence[Path] | None = None,
    policy_values: dict[str, Any] | None = None,
    allowed_hosts: Sequence[str] | None = None,
) -> int:
    """Serve /vidstyle/v1 with uvicorn until Ctrl-C; `auth` is 'user:pass' for HTTP basic auth.

    `policy_values`: ServerPolicy fields (vidstyle serve flags); `allowed_hosts`: Host names
    clients use beyond the loopback ones (the bound address is always accepted).
    """
    import uvicorn

    from .auth import parse_auth
    from .compat import ValidationError
    from .overrides import describe_validation_error
    from .policy import ServerPolicy
    from .server import create_app

    credentials = parse_auth(auth, "--auth")
    _check_can_listen(host, port)
    roots = list(allowed_roots) if allowed_roots else allowed_roots_from_env(Path(output_root))
    values = dict(policy_values or {})
    values.setdefault("model_dirs", [models_dir(Path(output_root))])
    values.setdefault("webui_auth", os.environ.get("VIDSTYLE_WEBUI_AUTH") or None)
    try:
        policy = ServerPolicy(**values)
    except ValidationError as exc:
        raise UserInputError(describe_validation_error(exc, "vidstyle serve")) from None
    _warn_if_open(host, credentials, "start jobs")
    hosts = list(dict.fromkeys([*LOOPBACK, *([] if host in ("0.0.0.0", "::") else [host]), *(allowed_hosts or [])]))
    manager = JobManager(Path(output_root), webui_auth=policy.credentials())
    app = create_app(manager, roots, credentials, policy=policy, allowed_hosts=hosts)
    print(
        f"vidstyle serve: http://{host}:{port}/vidstyle/v1 (docs at /docs); jobs in {manager.output_root}; "
        f"sources allowed under: {', '.join(map(str, roots))}; backends: {', '.join(policy.backends)}; "
        f"Host names answered: {', '.join(hosts)} (add more with --allow-host)",
        file=sys.stderr,
    )
    try:
        uvicorn.run(app, host=host, port=port, log_level="warning", access_log=False)
    finally:
        manager.close()
    return 0
