"""Backends render one img2img frame; all share the protocol in `base`.

`create_backend` imports a backend module only when it is chosen, so the WebUI (which has
no diffusers) never imports diffusers, and the standalone CLI never imports the WebUI.
"""

from __future__ import annotations

from ..errors import SpecError
from ..spec import JobSpec
from .base import Backend, BackendFactory, StatusCallback

_extra_factories: dict[str, BackendFactory] = {}


def register_backend(kind: str, factory: BackendFactory) -> None:
    """Let a host (the WebUI glue) provide a backend the engine cannot import itself."""
    _extra_factories[kind] = factory


def create_backend(spec: JobSpec, on_status: StatusCallback | None = None, webui_auth: str | None = None) -> Backend:
    """`webui_auth`: user:password for WebUI servers (never part of the spec; see webui_http.resolve_auth)."""
    kind = spec.backend.kind
    if kind in _extra_factories:
        return _extra_factories[kind](spec, on_status)
    if kind == "passthrough":
        from .passthrough import PassthroughBackend

        return PassthroughBackend(spec)
    if kind == "simulated":  # a simulation of img2img (no model) for tests and benchmarks of coherence
        from .simulated import SimulatedImg2ImgBackend

        return SimulatedImg2ImgBackend(spec)
    if kind == "diffusers":
        from .diffusers import DiffusersBackend

        return DiffusersBackend(spec)
    if kind == "ray":
        from .ray import RayBackend

        return RayBackend(spec, on_status=on_status)
    if kind == "webui_api":
        from .webui_api import WebUIApiBackend

        return WebUIApiBackend(spec, on_status=on_status, auth=webui_auth)
    if kind == "webui_local":
        raise SpecError("The webui_local backend only runs inside the WebUI; use diffusers or webui_api here.")
    raise SpecError(f"Unknown backend '{kind}'.")
