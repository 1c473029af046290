"""The one small protocol every backend implements.

The render loop knows nothing about HTTP, the WebUI or diffusers: it builds an
Img2ImgRequest per frame and calls `img2img` from up to `concurrency` threads.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

from PIL import Image

from ..spec import ControlNetSpec, JobSpec, LoraRef

StatusCallback = Callable[[str], None]
# How far the frame being rendered is (0..1) and the backend's own guess of its seconds left.
FrameProgressCallback = Callable[[float, float | None], None]


@dataclass
class Img2ImgRequest:
    """One frame to render; images are RGB and already width x height."""

    frame_index: int
    init_image: Image.Image
    control_image: Image.Image
    prompt: str
    negative_prompt: str
    checkpoint: str
    loras: list[LoraRef]
    controlnet: ControlNetSpec
    width: int
    height: int
    denoise: float
    steps: int
    cfg_scale: float
    sampler: str
    scheduler: str
    seed: int
    # The same two images as PNG file bytes when the engine already has them on disk, so an
    # HTTP backend can send them without encoding them again.
    init_png: bytes | None = None
    control_png: bytes | None = None
    # The source frame itself. With flow/keyframe coherence the init image is a blend of earlier
    # outputs, but a preprocessor that runs on the server (canny) must see the source frame, as
    # our own control map does. None: the init image is the source frame.
    source_image: Image.Image | None = None
    source_png: bytes | None = None

    @property
    def source(self) -> Image.Image:
        return self.source_image if self.source_image is not None else self.init_image

    @classmethod
    def for_spec(
        cls,
        spec: JobSpec,
        frame_index: int,
        init_image: Image.Image,
        control_image: Image.Image,
        seed: int,
        loras: list[LoraRef] | None = None,
        init_png: bytes | None = None,
        control_png: bytes | None = None,
    ) -> Img2ImgRequest:
        """The request for one frame with the job's prompt, model and sampling settings (the
        render loop's and the previews' one builder); `loras` replaces the spec's (an epoch preview)."""
        return cls(
            frame_index=frame_index,
            init_image=init_image,
            control_image=control_image,
            prompt=spec.prompt,
            negative_prompt=spec.negative_prompt,
            checkpoint=spec.model.checkpoint,
            loras=list(spec.model.loras) if loras is None else loras,
            controlnet=spec.controlnet,
            width=spec.size.width,
            height=spec.size.height,
            denoise=spec.sampling.denoise,
            steps=spec.sampling.steps,
            cfg_scale=spec.sampling.cfg_scale,
            sampler=spec.sampling.sampler,
            scheduler=spec.sampling.scheduler,
            seed=seed,
            init_png=init_png,
            control_png=control_png,
        )


@dataclass
class Img2ImgResult:
    image: Image.Image
    # Backend facts worth keeping in the ledger (e.g. the WebUI's `info` JSON, server URL).
    info: dict[str, Any] = field(default_factory=dict)


@runtime_checkable
class Backend(Protocol):
    """What every backend has. Optional extras are declared below (FrameProgress,
    WorkerProgressSource) and read only through the helpers at the end of this module.
    """

    name: str
    # How many img2img calls the render loop may have in flight at once.
    concurrency: int

    def preflight(self) -> None:
        """Check models, LoRAs and ControlNet exist before frame 1; raise PreflightError."""

    def img2img(self, request: Img2ImgRequest) -> Img2ImgResult:
        """Render one frame; raise BackendError on failure, Cancelled when interrupted."""

    def interrupt(self) -> None:
        """Stop in-flight work as soon as possible (cancel); must be safe from any thread."""

    def close(self) -> None:
        """Release models, connections and threads."""


@runtime_checkable
class FrameProgress(Protocol):
    """Optional: a backend that can tell how far a frame is (the WebUI's /sdapi/v1/progress).

    The render loop sets `on_progress` through `set_frame_progress` before frame 1; the
    backend calls it from any thread while a frame renders, or never.
    """

    on_progress: FrameProgressCallback | None


@runtime_checkable
class WorkerProgressSource(Protocol):
    """Optional: a backend with several workers (Ray) lists each one's progress as dataclasses
    (worker, node, frames, fps, state)."""

    @property
    def worker_progress(self) -> list[Any]: ...


def renders_at_once(backend: Backend) -> int:
    """Calls that render rather than wait at a server; a backend that queues the next frame
    behind the rendering one (the WebUI) says so with a `renders_at_once` attribute."""
    return int(getattr(backend, "renders_at_once", backend.concurrency))


def set_frame_progress(backend: Backend, callback: FrameProgressCallback | None) -> bool:
    """Give a FrameProgress backend its callback; False when the backend cannot report."""
    if not isinstance(backend, FrameProgress):
        return False
    backend.on_progress = callback
    return True


# How hosts make a backend for a spec: create_backend, or one the WebUI glue registers.
BackendFactory = Callable[[JobSpec, StatusCallback | None], Backend]
