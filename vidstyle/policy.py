"""ServerPolicy: what a client of /vidstyle/v1 may ask for, decided by the operator alone.

Everything that arrives over HTTP is untrusted. The operator sets one ServerPolicy (flags
of `vidstyle serve`; the "Video Stylize" settings inside the WebUI) and the server applies
it wherever a spec enters: a submitted job, an upload, the overrides of a redo.

* backends: the backend kinds a client may pick (inside the WebUI: the in-process one);
* webui_urls: the WebUI servers a webui_api job may call (none unless the operator lists
  them), so the server never sends requests wherever a client says;
* model_dirs: checkpoints, LoRAs and ControlNets are given by name, never as paths; for the
  diffusers backend a name resolves inside these folders (symlinks and '..' followed);
* webui_auth: the user:password for those WebUIs; it never enters a spec or a job folder;
* allow_compile / memory_modes: the diffusers options a client may turn on (torch.compile
  costs minutes of the server's CPU/GPU, so it is off unless the operator allows it);
* limits: upload size, JSON body size, queued jobs, and frames x pixels per job, where a
  job with repair on counts each frame as often as repair may render it (renders_per_frame).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path, PurePosixPath, PureWindowsPath
from typing import Any, Literal

from .compat import BaseModel, Extra, Field, SecretStr, validator
from .errors import SpecError, UserInputError
from .spec import JobSpec

MIB = 1024 * 1024
TINY_MODEL = "tiny"  # the built-in random-weight test model (vidstyle.tiny_models)
BackendKind = Literal["diffusers", "webui_api", "webui_local", "passthrough"]
# spec.BackendSpec.memory_mode's values (tests/test_policy_limits.py checks they match).
MemoryMode = Literal["auto", "none", "model_offload", "sequential_offload"]
MEMORY_MODES: tuple[MemoryMode, ...] = ("auto", "none", "model_offload", "sequential_offload")
# Kinds that read backend.memory_mode and backend.compile; the others ignore both.
_DIFFUSERS_KINDS = ("diffusers", "ray")
# File names a model may be named by without its suffix, as the WebUI lists them.
_SUFFIXES = {
    "checkpoint": ("", ".safetensors"),
    "LoRA": ("", ".safetensors"),
    "ControlNet": ("", ".safetensors", ".pth"),
}


class PolicyError(UserInputError):
    """This server's operator does not allow what the request asks for (HTTP 403)."""


def _normalize_url(url: str) -> str:
    from .backends.webui_http import normalize_url

    return normalize_url(url)


class ServerPolicy(BaseModel):
    class Config:
        extra = Extra.forbid

    backends: list[BackendKind] = Field(
        default_factory=lambda: ["diffusers", "webui_api", "passthrough"],
        description="Backend kinds a client may pick.",
    )
    webui_urls: list[str] = Field(default_factory=list, description="WebUI servers webui_api jobs may use.")
    webui_auth: SecretStr | None = Field(default=None, description="user:password for those WebUIs (--api-auth).")
    model_dirs: list[Path] = Field(default_factory=list, description="Folders diffusers model names resolve in.")
    allow_compile: bool = Field(
        default=False,
        description="Whether diffusers jobs may set backend.compile (torch.compile: minutes of CPU/GPU per job).",
    )
    memory_modes: list[MemoryMode] = Field(
        default_factory=lambda: list(MEMORY_MODES),
        min_items=1,
        description="backend.memory_mode values diffusers jobs may pick (all are safe; default: all).",
    )
    max_upload_bytes: int = Field(default=4096 * MIB, ge=1, description="Largest video upload.")
    max_body_bytes: int = Field(default=1 * MIB, ge=1024, description="Largest JSON request body.")
    max_queued_jobs: int = Field(default=16, ge=1, description="Jobs waiting or rendering at once.")
    max_job_megapixels: float = Field(
        default=20_000.0,
        gt=0,
        description="Frames x width x height of one job, in millions (20000: ~75 min at 512x512, 30 fps).",
    )

    @validator("webui_urls", each_item=True)
    def _url(cls, value: str) -> str:
        url = _normalize_url(value)
        if not url.startswith(("http://", "https://")):
            raise ValueError(f"WebUI URL {value} must start with http:// or https://")
        return url

    @validator("webui_auth")
    def _auth(cls, value: SecretStr | None) -> SecretStr | None:
        if value is not None and ":" not in value.get_secret_value():
            raise ValueError("webui_auth must look like user:password")
        return value

    @classmethod
    def for_webui(cls, **values: Any) -> ServerPolicy:
        """Inside the WebUI: jobs render in-process only, unless the operator allows more."""
        values.setdefault("backends", ["webui_local"])
        return cls(**values)

    @classmethod
    def from_webui_settings(
        cls, backends: Sequence[str], webui_urls: str, max_upload_mb: Any, max_queued_jobs: Any, max_job_megapixels: Any
    ) -> ServerPolicy:
        """The policy from the WebUI's settings: URLs one per line or comma-separated, uploads in MB.

        Values are passed through unconverted so a bad setting is a ValidationError naming it.
        """
        urls = [url.strip() for url in str(webui_urls or "").replace(",", "\n").splitlines() if url.strip()]
        values: dict[str, Any] = {
            "webui_urls": urls,
            "max_queued_jobs": max_queued_jobs,
            "max_job_megapixels": max_job_megapixels,
        }
        if list(backends):
            values["backends"] = list(backends)
        try:
            values["max_upload_bytes"] = int(float(max_upload_mb) * MIB)
        except (TypeError, ValueError):
            values["max_upload_bytes"] = max_upload_mb  # pydantic names the bad value
        return cls.for_webui(**values)

    def credentials(self) -> str | None:
        return self.webui_auth.get_secret_value() if self.webui_auth is not None else None

    # -- specs ---------------------------------------------------------------------------------
    def check_spec(self, spec: JobSpec) -> JobSpec:
        """The spec as this server will run it: allowed backend and servers, models resolved by name."""
        kind = spec.backend.kind
        if kind not in self.backends:
            raise PolicyError(
                f"This server does not let clients choose the '{kind}' backend; use one of: {', '.join(self.backends)}."
            )
        self._check_diffusers_options(spec)
        overrides: dict[str, Any] = {}
        if kind == "webui_api":
            overrides["backend.webui_urls"] = self._allowed_urls(spec.backend.webui_urls)
        overrides.update(self.model_overrides(spec))
        return spec.with_overrides(overrides) if overrides else spec

    def check_redo(self, job_spec: JobSpec, overrides: dict[str, Any]) -> dict[str, Any]:
        """A redo's overrides with the models it names resolved; the job's own models stay as they are."""
        merged = job_spec.with_overrides(overrides)  # SpecError (422) names a bad key
        return {**overrides, **self.model_overrides(merged, baseline=job_spec)}

    def model_overrides(self, spec: JobSpec, baseline: JobSpec | None = None) -> dict[str, Any]:
        """Dotted overrides that replace model names by what they resolve to (checked for every kind)."""
        kind = spec.backend.kind
        out: dict[str, Any] = {}
        if baseline is None or spec.model.checkpoint != baseline.model.checkpoint:
            out["model.checkpoint"] = self._model(kind, "checkpoint", "model.checkpoint", spec.model.checkpoint)
        if spec.controlnet.enabled and (baseline is None or spec.controlnet.model != baseline.controlnet.model):
            out["controlnet.model"] = self._model(kind, "ControlNet", "controlnet.model", spec.controlnet.model)
        known = {lora.name for lora in baseline.model.loras} if baseline is not None else set()
        loras = [
            {
                "name": ref.name if ref.name in known else self._model(kind, "LoRA", "model.loras", ref.name),
                "weight": ref.weight,
            }
            for ref in spec.model.loras
        ]
        if loras != [ref.dict() for ref in spec.model.loras]:
            out["model.loras"] = loras
        return {key: value for key, value in out.items() if value != _get(spec, key)}

    def check_size(self, frames: int, width: int, height: int) -> None:
        """Frames rendered once each (a preview): frames x pixels within max_job_megapixels."""
        megapixels = frames * width * height / 1e6
        if megapixels > self.max_job_megapixels:
            raise PolicyError(
                f"This job has {frames} frames of {width}x{height} ({megapixels:,.0f} megapixels in all); this server "
                f"takes at most {self.max_job_megapixels:,.0f}; shorten the selection or lower the size."
            )

    def check_job_size(self, spec: JobSpec, frames: int) -> None:
        """A job's (or a redo's) worst case within max_job_megapixels: each frame counts renders_per_frame times."""
        renders = renders_per_frame(spec)
        if renders == 1:
            self.check_size(frames, spec.size.width, spec.size.height)
            return
        width, height = spec.size.width, spec.size.height
        megapixels = frames * renders * width * height / 1e6
        if megapixels > self.max_job_megapixels:
            raise PolicyError(
                f"This job has {frames} frames of {width}x{height} with repair on, which counts each frame "
                f"{renders} times (one render, up to {spec.repair.max_attempts} repair attempts, one re-render "
                f"after a repaired neighbour), {megapixels:,.0f} megapixels in all; this server takes at most "
                f"{self.max_job_megapixels:,.0f}; lower repair.max_attempts, turn repair off, shorten the "
                "selection or lower the size."
            )

    # -- internals -----------------------------------------------------------------------------
    def _check_diffusers_options(self, spec: JobSpec) -> None:
        if spec.backend.kind not in _DIFFUSERS_KINDS:
            return
        if spec.backend.compile and not self.allow_compile:
            raise PolicyError(
                "This server does not let clients turn on backend.compile (torch.compile costs minutes of its "
                "CPU/GPU); set it to false, or ask its operator (vidstyle serve --allow-compile)."
            )
        if spec.backend.memory_mode not in self.memory_modes:
            raise PolicyError(
                f"This server does not let clients pick backend.memory_mode '{spec.backend.memory_mode}'; "
                f"use one of: {', '.join(self.memory_modes)}."
            )

    def _allowed_urls(self, urls: Sequence[str]) -> list[str]:
        if not self.webui_urls:
            raise PolicyError(
                "This server lets clients use no WebUI servers; its operator can allow some "
                "(vidstyle serve --allow-webui URL, or the Video Stylize settings in the WebUI)."
            )
        wanted = [_normalize_url(url) for url in urls if url.strip()] or list(self.webui_urls)
        for url in wanted:
            if url not in self.webui_urls:
                raise PolicyError(
                    f"WebUI URL {url[:100]} is not one this server may call; use one of: {', '.join(self.webui_urls)}."
                )
        return wanted

    def _model(self, kind: str, what: str, key: str, name: str) -> str:
        check_model_name(key, name)
        if kind != "diffusers" or name == TINY_MODEL:
            return name  # WebUI backends look names up in the WebUI's own lists
        for root in self.model_dirs:
            root = Path(root).resolve()
            for suffix in _SUFFIXES[what]:
                real = (root / (name + suffix)).resolve()
                if real.is_relative_to(root) and real.exists():
                    return str(real)
        raise SpecError(
            f"{key}: {what} '{name[:100]}' is not in this server's model folders; name a file or folder found there."
        )


def renders_per_frame(spec: JobSpec) -> int:
    """How often a job may render each frame at worst: once; with repair on, also every repair
    attempt (a frame may stay suspect through all of them) and once more as a follower that
    is made again from a repaired frame's output (repair.py: flow chains, keyframe fills)."""
    return 2 + spec.repair.max_attempts if spec.repair.enabled else 1


def check_model_name(key: str, name: str) -> None:
    """A model name, not a path: nothing absolute, no '..', no home folder."""
    parts = set(PurePosixPath(name).parts) | set(PureWindowsPath(name).parts)
    if (
        PurePosixPath(name).is_absolute()
        or PureWindowsPath(name).is_absolute()
        or PureWindowsPath(name).drive
        or ".." in parts
        or name.startswith("~")
        or "\x00" in name
    ):
        raise SpecError(f"{key}: give a model name as this server lists it, not a path ('{name[:100]}').")


def _get(spec: JobSpec, dotted: str) -> Any:
    value: Any = spec.dict()
    for key in dotted.split("."):
        value = value[key]
    return value
