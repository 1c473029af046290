"""One source file -> its measures, its per-image filter verdicts and (if it passes) its output.

Runs in worker processes: each file is read once, decoded once (JPEGs at a reduced size when
the output is much smaller), measured on a copy at the training scale, and cropped/written
only if no per-image filter rejects it. Only near-duplicates need all images at once; the
caller decides those. Everything crossing the process boundary is a small picklable value.
"""

from __future__ import annotations

import builtins
import hashlib
import math
import signal
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np
from PIL import Image

from vidstyle.errors import OutputError, VidstyleError

from . import faces as face_detection
from .focal import CropPlan, RelBox, focal_point, plan_crop
from .images import (
    ColourMeasure,
    Header,
    ImageRejected,
    LoadedImage,
    colour_measure,
    decode_image,
    is_monochrome,
    jpeg_tile,
    open_image,
    perceptual_hashes,
    resize_to_area,
    sharpness,
)

Reason = tuple[str, str]  # (code, sentence)


@dataclass(frozen=True)
class WorkSettings:
    size: int
    crop: str
    allow_upscale: bool
    background: tuple[int, int, int]
    max_pixels: int
    min_side: int  # 0: filter off
    drop_monochrome: bool
    blur_threshold: float  # 0: filter off
    max_faces: int | None  # None: filter off
    face_detector: str | None  # resolved path, None: no detector


@dataclass(frozen=True)
class FileJob:
    index: int
    path: str
    output: str | None  # where a passing image is written; None: measure only (excluded)


@dataclass
class FileResult:
    index: int
    bytes: int = 0
    sha256: str | None = None
    header: Header | None = None
    rejected: Reason | None = None  # unreadable / not an image / too large / corrupt
    reasons: list[Reason] = field(default_factory=list)  # per-image filters that failed
    had_alpha: bool = False
    phash: int | None = None
    phash_mirror: int | None = None
    sharpness: float | None = None
    colour: ColourMeasure | None = None
    faces: list[RelBox] | None = None  # None: no detector ran
    focal: tuple[float, float] | None = None
    plan: CropPlan | None = None
    written: bool = False
    # builtins.bytes: the field `bytes` above (the file size) shadows the type inside this class
    source_tile: builtins.bytes | None = None
    output_tile: builtins.bytes | None = None


def init_worker() -> None:
    # Each worker is one of N processes already; OpenCV's own thread pool would oversubscribe.
    cv2.setNumThreads(1)
    # Ctrl-C is the parent's to handle (it cancels the queue); workers just finish their file.
    signal.signal(signal.SIGINT, signal.SIG_IGN)


def needed_scale(width: int, height: int, settings: WorkSettings) -> float:
    """Output pixels per source pixel the crop mode will use (before any filter)."""
    if settings.crop == "bucket":
        return min(1.0, math.sqrt(settings.size * settings.size / (width * height)))
    return settings.size / min(width, height)


def process_file(job: FileJob, settings: WorkSettings) -> FileResult:
    result = FileResult(index=job.index)
    try:
        data = Path(job.path).read_bytes()
    except OSError as exc:
        result.rejected = ("unreadable", f"cannot read the file ({exc.strerror or exc})")
        return result
    result.bytes = len(data)
    result.sha256 = hashlib.sha256(data).hexdigest()
    try:
        _process(data, job, settings, result)
    except ImageRejected as exc:
        result.rejected = (exc.code, exc.message)
    except VidstyleError:
        raise  # the output cannot be written (disk full, ...): that ends the run, not one file
    except Exception as exc:  # one odd file must not end a run of thousands; prep.json says what
        result.rejected = ("error", f"unexpected {type(exc).__name__} while processing: {exc}")
    return result


def _decode(data: bytes, settings: WorkSettings) -> LoadedImage:
    image, header = open_image(data, settings.max_pixels)
    # Decoding at >= 2x the output scale keeps INTER_AREA's quality and skips most of a big JPEG.
    scale = min(1.0, 2.0 * needed_scale(header.width, header.height, settings))
    return decode_image(image, header, settings.background, min_decode_scale=scale)


def _process(data: bytes, job: FileJob, settings: WorkSettings, result: FileResult) -> None:
    loaded = _decode(data, settings)
    header = result.header = loaded.header
    result.had_alpha = loaded.had_alpha
    width, height = header.width, header.height
    # Measure at the training scale: that is the sharpness and detail the LoRA will see. In
    # bucket mode that picture *is* the output, so it is computed once.
    if settings.crop == "bucket":
        result.plan = plan_crop(width, height, "bucket", settings.size)
        thumb = render_output(loaded, result.plan)
    else:
        thumb = resize_to_area(loaded.rgb, settings.size * settings.size)
    result.sharpness = sharpness(thumb)
    result.colour = colour_measure(thumb)
    result.phash, result.phash_mirror = perceptual_hashes(thumb)
    result.source_tile = jpeg_tile(thumb)
    if settings.face_detector and (settings.max_faces is not None or settings.crop == "focal"):
        detector = face_detection.load_detector(settings.face_detector)
        result.faces = face_detection.detect_faces(detector, thumb)
    plan: CropPlan | None = None
    if settings.crop != "bucket":
        if settings.crop == "focal":
            result.focal = focal_point(thumb, result.faces or [])
        plan = result.plan = plan_crop(
            width, height, settings.crop, settings.size, result.focal or (0.5, 0.5), result.faces or []
        )
    result.reasons = filter_reasons(result, settings)
    if job.output and not result.reasons:
        output = thumb if plan is None else render_output(loaded, plan)  # no plan: crop == "bucket"
        try:
            Image.fromarray(output).save(job.output, "PNG", compress_level=1)
        except OSError as exc:
            raise OutputError(
                f"Cannot write {job.output} ({exc.strerror or exc}); free disk space or choose another --out."
            ) from exc
        result.written = True
        result.output_tile = result.source_tile if output is thumb else jpeg_tile(output)


def filter_reasons(result: FileResult, settings: WorkSettings) -> list[Reason]:
    """Every per-image filter this image fails, in a fixed order (the first is reported)."""
    assert result.header is not None and result.plan is not None
    width, height = result.header.width, result.header.height
    short = min(width, height)
    reasons: list[Reason] = []
    if settings.min_side and short < settings.min_side:
        reasons.append(
            (
                "low_resolution",
                f"low resolution: {width}x{height}, shortest side {short} px < {settings.min_side} px (--min-side)",
            )
        )
    if settings.crop != "bucket" and result.plan.upscaled and not settings.allow_upscale:
        reasons.append(
            (
                "needs_upscale",
                f"needs {result.plan.scale:.2f}x upscaling for a {settings.size}x{settings.size} crop "
                f"(shortest side {short} px); pass --allow-upscale or a smaller --size",
            )
        )
    colour = result.colour
    if settings.drop_monochrome and colour is not None and is_monochrome(colour):
        reasons.append(
            (
                "monochrome",
                f"monochrome: chroma p99 {colour.chroma_p99:.1f}, hue spread {colour.hue_spread:.1f} deg "
                "(--keep-monochrome keeps it)",
            )
        )
    if settings.blur_threshold and result.sharpness is not None and result.sharpness < settings.blur_threshold:
        reasons.append(
            (
                "blurry",
                f"blurry: edge sharpness {result.sharpness:.2f} < {settings.blur_threshold:g} (--blur-threshold)",
            )
        )
    if settings.max_faces is not None and result.faces is not None and len(result.faces) > settings.max_faces:
        reasons.append(
            ("too_many_faces", f"{len(result.faces)} faces found, more than {settings.max_faces} (--max-faces)")
        )
    return reasons


def render_output(loaded: LoadedImage, plan: CropPlan) -> np.ndarray:
    """Crop `plan.box` (full-size coordinates) from the decoded pixels and resize to the output."""
    scale = loaded.decoded_scale
    rgb = loaded.rgb
    decoded_h, decoded_w = rgb.shape[:2]
    left, top, right, bottom = (int(round(v * scale)) for v in plan.box)
    left, top = max(0, left), max(0, top)
    right, bottom = min(decoded_w, max(right, left + 1)), min(decoded_h, max(bottom, top + 1))
    region = rgb[top:bottom, left:right]
    out_w, out_h = plan.out_size
    if (region.shape[1], region.shape[0]) == (out_w, out_h):
        return np.ascontiguousarray(region)
    shrinking = out_w * out_h < region.shape[0] * region.shape[1]
    interpolation = cv2.INTER_AREA if shrinking else cv2.INTER_LANCZOS4
    return cv2.resize(np.ascontiguousarray(region), (out_w, out_h), interpolation=interpolation)
