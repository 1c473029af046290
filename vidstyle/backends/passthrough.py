"""A backend with no model: returns the init image unchanged.

For benchmarks of the engine's own overhead and for dry runs of a job's plumbing.
"""

from __future__ import annotations

from ..spec import JobSpec
from .base import Img2ImgRequest, Img2ImgResult


class PassthroughBackend:
    name = "passthrough"
    concurrency = 1

    def __init__(self, spec: JobSpec) -> None:
        self.spec = spec

    def preflight(self) -> None:
        return None

    def img2img(self, request: Img2ImgRequest) -> Img2ImgResult:
        return Img2ImgResult(image=request.init_image.copy(), info={"backend": self.name})

    def interrupt(self) -> None:
        return None

    def close(self) -> None:
        return None
