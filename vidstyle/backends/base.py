"""The one small protocol every backend implements.

The render loop knows nothing about HTTP, the WebUI or diffusers: it builds an
Img2ImgRequest per frame and calls `img2img` from up to `concurrency` threads.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, Dict, List, Optional, Protocol, runtime_checkable

from PIL import Image

from ..spec import ControlNetSpec, LoraRef

StatusCallback = Callable[[str], None]


@dataclass
class Img2ImgRequest:
    """One frame to render; images are RGB and already width x height."""

    frame_index: int
    init_image: Image.Image
    control_image: Image.Image
    prompt: str
    negative_prompt: str
    checkpoint: str
    loras: List[LoraRef]
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
    init_png: Optional[bytes] = None
    control_png: Optional[bytes] = None


@dataclass
class Img2ImgResult:
    image: Image.Image
    # Backend facts worth keeping in the ledger (e.g. the WebUI's `info` JSON, server URL).
    info: Dict[str, Any] = field(default_factory=dict)


@runtime_checkable
class Backend(Protocol):
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
