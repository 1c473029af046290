"""Temporal coherence building blocks: optical flow, warping, occlusion, fills, colour, scene cuts.

Pure functions on RGB uint8 HxWx3 arrays (the engine's image type) and flow fields.

Flow convention (used everywhere here): a flow for a *target* frame against a *reference*
frame is an HxWx2 float32 array F with target[p] ~ reference[p + F(p)], F[..., 0] = dx and
F[..., 1] = dy. `warp(reference_image, F)` is then backward warping: it samples the reference
at p + F(p) and returns an image aligned with the target. To carry the previous output onto
frame t, estimate the flow of frame t against frame t-1 and warp the previous output by it.
"""

from __future__ import annotations

import functools
import threading
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from itertools import pairwise

import cv2
import numpy as np

from .errors import SpecError

# DIS "medium" on frames brought to about 256 px: measured by benchmarks/bench_temporal.py at
# 512x512 as ~10 ms per flow with 0.13 px end-point error on a moving object and ~95 % of its
# disoccluded pixels found; "ultrafast"/"fast" at full size are as quick on a pan but blur the
# flow across object edges, which is where occlusion masks matter.
DEFAULT_PRESET = "medium"
FLOW_WORKING_SIZE = 256
MIN_FLOW_SIZE = 16  # DIS needs 12 px on a side; a little more leaves its pyramid a level
PRESETS = {
    "ultrafast": cv2.DISOPTICAL_FLOW_PRESET_ULTRAFAST,
    "fast": cv2.DISOPTICAL_FLOW_PRESET_FAST,
    "medium": cv2.DISOPTICAL_FLOW_PRESET_MEDIUM,
}
# Forward-backward consistency constants of Sundaram et al. (2010), as used by Ruder et al. (2016).
CONSISTENCY_ALPHA = 0.01
CONSISTENCY_BETA = 0.5
# Ruder et al.'s motion-boundary test: flow gradients this large relative to the motion are unreliable.
BOUNDARY_ALPHA = 0.01
BOUNDARY_BETA = 0.002
# Max per-channel difference (0..255, 3x3 mean) below which a warped pixel counts as reproduced:
# above resampling and video-codec noise, well below a different surface's colour.
PHOTOMETRIC_TOLERANCE = 12.0
CHANGED_TOLERANCE = 3 * PHOTOMETRIC_TOLERANCE
# Radius (Gaussian sigma, px) over which occluded pixels borrow the output's colours.
FILL_SIGMA = 6.0
# A keyframe pixel trusted less than this (occlusion, or a warp that misses the source's colour
# by ~2x the photometric tolerance) does not count as supplied; the fallback's detail fills it.
MIN_FILL_TRUST = 0.02


class TemporalInputError(SpecError, ValueError):
    """Images or settings the temporal functions cannot work with (one sentence, exit code 2)."""


# DIS objects keep per-call buffers, so each render thread gets its own (created on first use).
_local = threading.local()


def _dis(preset: str) -> cv2.DISOpticalFlow:
    if preset not in PRESETS:
        raise TemporalInputError(f"Unknown optical flow preset '{preset}'; use one of {', '.join(PRESETS)}.")
    cache: dict[str, cv2.DISOpticalFlow] | None = getattr(_local, "dis", None)
    if cache is None:
        cache = _local.dis = {}
    if preset not in cache:
        cache[preset] = cv2.DISOpticalFlow.create(PRESETS[preset])
    return cache[preset]


def _same_size(*images: np.ndarray | None) -> None:
    shapes = {tuple(image.shape[:2]) for image in images if image is not None}
    if len(shapes) > 1:
        sizes = " vs ".join(f"{w}x{h}" for h, w in sorted(shapes))
        raise TemporalInputError(
            f"Frames must all have the same size for flow and blending (got {sizes}); fit them to one size first."
        )


def _gray(image: np.ndarray) -> np.ndarray:
    return image if image.ndim == 2 else cv2.cvtColor(image, cv2.COLOR_RGB2GRAY)


def auto_scale(height: int, width: int) -> float:
    """The downscale that brings a frame's longer side to about FLOW_WORKING_SIZE (never up)."""
    return min(1.0, FLOW_WORKING_SIZE / max(height, width))


def _working(image: np.ndarray, scale: float) -> np.ndarray:
    """The image at the flow's working resolution (area-averaged, so texture does not alias)."""
    if scale >= 1.0:
        return image
    height, width = image.shape[:2]
    size = (max(MIN_FLOW_SIZE, round(width * scale)), max(MIN_FLOW_SIZE, round(height * scale)))
    return cv2.resize(image, size, interpolation=cv2.INTER_AREA)


def _check_scale(target: np.ndarray, scale: float | None) -> float:
    height, width = target.shape[:2]
    if max(height, width) < MIN_FLOW_SIZE:
        raise TemporalInputError(
            f"Frames of {width}x{height} are too small for optical flow; use frames of at least {MIN_FLOW_SIZE} px."
        )
    scale = auto_scale(height, width) if scale is None else scale
    if not 0.05 <= scale <= 1.0:
        raise TemporalInputError(f"Flow scale must be between 0.05 and 1 (got {scale}).")
    return scale


def _upsample_flow(flow: np.ndarray, height: int, width: int) -> np.ndarray:
    """A working-resolution flow at full size, its vectors in full-resolution pixels."""
    if flow.shape[:2] == (height, width):
        return flow
    sx, sy = width / flow.shape[1], height / flow.shape[0]
    full = cv2.resize(flow, (width, height), interpolation=cv2.INTER_LINEAR)
    full[..., 0] *= sx
    full[..., 1] *= sy
    return full


def estimate_flow(
    target: np.ndarray, reference: np.ndarray, scale: float | None = None, preset: str = DEFAULT_PRESET
) -> np.ndarray:
    """Dense flow of `target` against `reference` (see the module's convention), OpenCV DIS.

    `scale` < 1 estimates on downscaled grayscale frames for speed (None: `auto_scale`); the
    flow is resized back and its vectors scaled so they stay in full-resolution pixels.
    """
    _same_size(target, reference)
    scale = _check_scale(target, scale)
    # OpenCV allocates the flow when given None; its stubs only accept an array there.
    flow = _dis(preset).calc(_gray(_working(target, scale)), _gray(_working(reference, scale)), None)  # type: ignore[call-overload]
    return _upsample_flow(flow, *target.shape[:2])


def sample_maps(flow: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Where `warp` samples each pixel: x and y maps for cv2.remap (contiguous, the fast case)."""
    height, width = flow.shape[:2]
    map_x = flow[..., 0] + np.arange(width, dtype=np.float32)[None, :]
    map_y = flow[..., 1] + np.arange(height, dtype=np.float32)[:, None]
    return map_x, map_y


def remap(image: np.ndarray, maps: tuple[np.ndarray, np.ndarray]) -> np.ndarray:
    """`warp` with its sample maps made already (a chain's next frame has them from the prefetch)."""
    return cv2.remap(image, maps[0], maps[1], cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)


def warp(image: np.ndarray, flow: np.ndarray) -> np.ndarray:
    """Backward warp: out[p] = image[p + flow(p)] (bilinear; edge pixels repeat outside the frame).

    Works for images of any channel count and dtype cv2.remap takes, flows included.
    """
    _same_size(image, flow)
    return remap(image, sample_maps(flow))


def _outside(flow: np.ndarray, margin: float = 1.0) -> np.ndarray:
    """Pixels whose source lies off the reference frame by more than `margin` px.

    Within a pixel of the edge the repeated border pixel is the right colour; counting those
    as occluded would make a one-pixel seam along the frame's edge under any camera motion.
    """
    x, y = sample_maps(flow)
    height, width = flow.shape[:2]
    return (x < -margin) | (x > width - 1 + margin) | (y < -margin) | (y > height - 1 + margin)


def _squared_length(vectors: np.ndarray) -> np.ndarray:
    # Explicit, because numpy's sum over a last axis of length 2 is several times slower.
    return vectors[..., 0] * vectors[..., 0] + vectors[..., 1] * vectors[..., 1]


def _motion_boundaries(flow: np.ndarray) -> np.ndarray:
    du_y, du_x = np.gradient(flow[..., 0])
    dv_y, dv_x = np.gradient(flow[..., 1])
    gradient = du_x**2 + du_y**2 + dv_x**2 + dv_y**2
    return gradient > BOUNDARY_ALPHA * _squared_length(flow) + BOUNDARY_BETA


def residual(target: np.ndarray, reference: np.ndarray, flow: np.ndarray) -> np.ndarray:
    """How badly the warped reference reproduces the target: max channel difference (0..255), 3x3 mean."""
    difference = cv2.absdiff(warp(reference, flow), target)
    if difference.ndim == 3:
        difference = np.maximum(np.maximum(difference[..., 0], difference[..., 1]), difference[..., 2])
    return cv2.blur(difference.astype(np.float32), (3, 3))


def occlusion_mask(
    flow: np.ndarray,
    inverse_flow: np.ndarray,
    motion_boundaries: bool = True,
    target: np.ndarray | None = None,
    reference: np.ndarray | None = None,
) -> np.ndarray:
    """Pixels of the target that the reference cannot supply (bool HxW, True = occluded).

    `flow` is the target's flow against the reference, `inverse_flow` the reference's against
    the target. A pixel whose round trip does not come back, |f + b(p+f)|^2 > a(|f|^2 + |b|^2) + b
    (Sundaram et al. 2010), was hidden in the reference; flow at motion boundaries is unreliable
    (Ruder et al. 2016). Given the two frames, a pixel the warped reference reproduces anyway is
    kept: in flat areas the flow is arbitrary, yet any flow carries the right colour there, and
    calling them occluded would patch a stylised output with raw source. Pixels whose source lies
    outside the reference frame are always occluded.
    """
    _same_size(flow, inverse_flow, target, reference)
    back = warp(inverse_flow, flow)
    mismatch = _squared_length(flow + back)
    magnitude = _squared_length(flow) + _squared_length(back)
    unreliable = mismatch > CONSISTENCY_ALPHA * magnitude + CONSISTENCY_BETA
    if motion_boundaries:
        unreliable |= _motion_boundaries(flow)
    occluded = _outside(flow)
    if target is None or reference is None:
        return unreliable | occluded
    error = residual(target, reference, flow)
    # A consistent flow can still carry the wrong colour: content that changed without moving
    # (a light, a screen, text) is as unusable as content that was hidden.
    return (unreliable & (error > PHOTOMETRIC_TOLERANCE)) | (error > CHANGED_TOLERANCE) | occluded


@dataclass
class Correspondence:
    """Where each pixel of a target frame comes from in a reference frame, and where it cannot."""

    flow: np.ndarray  # HxWx2 float32, target -> reference (backward warping)
    occluded: np.ndarray  # HxW bool in target coordinates
    # HxW float32: how far the warped reference *source* frame is from the target's (0..255);
    # lets fills prefer, pixel by pixel, the keyframe whose warp fits better. None if unknown.
    residual: np.ndarray | None = None

    @property
    def coverage(self) -> float:
        """Fraction of the target's pixels the reference supplies."""
        return float(1.0 - self.occluded.mean())

    def warp(self, reference_image: np.ndarray) -> np.ndarray:
        """An image of the reference frame (e.g. its output) carried onto the target frame."""
        return warp(reference_image, self.flow)

    def then(self, further: Correspondence) -> Correspondence:
        """Chain target->reference with reference->further into target->further (for keyframes K > 2 away)."""
        flow = self.flow + warp(further.flow, self.flow)
        hidden = warp(further.occluded.astype(np.float32), self.flow) > 0.5
        # The chained residual is not known without the frames; the larger one is a fair bound.
        error = None
        if self.residual is not None and further.residual is not None:
            error = np.maximum(self.residual, warp(further.residual, self.flow))
        return Correspondence(flow=flow, occluded=self.occluded | hidden, residual=error)


def correspond(
    target: np.ndarray,
    reference: np.ndarray,
    scale: float | None = None,
    preset: str = DEFAULT_PRESET,
    motion_boundaries: bool = True,
) -> Correspondence:
    """Flow of target against reference plus its occlusions (two flow estimates: there and back).

    The consistency check runs at the flow's working resolution (4x fewer pixels at 512x512
    for the same answer, since the flow has no finer detail); the mask is then scaled up.
    """
    _same_size(target, reference)
    scale = _check_scale(target, scale)
    small_target, small_reference = _working(target, scale), _working(reference, scale)
    a, b = _gray(small_target), _gray(small_reference)
    # as in dense_flow: None lets OpenCV allocate the flow (its stubs want an array)
    flow = _dis(preset).calc(a, b, None)  # type: ignore[call-overload]
    inverse = _dis(preset).calc(b, a, None)  # type: ignore[call-overload]
    occluded = occlusion_mask(flow, inverse, motion_boundaries, small_target, small_reference)
    error = residual(small_target, small_reference, flow)
    height, width = target.shape[:2]
    if occluded.shape != (height, width):
        occluded = cv2.resize(occluded.astype(np.uint8), (width, height), interpolation=cv2.INTER_NEAREST) > 0
        error = cv2.resize(error, (width, height), interpolation=cv2.INTER_LINEAR)
    return Correspondence(flow=_upsample_flow(flow, height, width), occluded=occluded, residual=error)


def _soft(mask: np.ndarray, feather: float) -> np.ndarray:
    """Mask as float weights with soft edges, so blends show no seams at occlusion borders."""
    weights = mask.astype(np.float32)
    if feather > 0:
        weights = np.maximum(weights, cv2.GaussianBlur(weights, (0, 0), feather))
    return weights


def _mix(a: np.ndarray, b: np.ndarray, weight_b: np.ndarray) -> np.ndarray:
    mixed = a.astype(np.float32) * (1.0 - weight_b[..., None]) + b.astype(np.float32) * weight_b[..., None]
    return np.clip(mixed + 0.5, 0, 255).astype(np.uint8)


@functools.lru_cache(maxsize=8)
def _mix_table(weight_b: float) -> np.ndarray:
    """`_mix` with one weight for every pixel, for every pair of uint8 values (index a * 256 + b):
    the same float32 arithmetic, looked up instead of done per pixel (~3x faster at 1024x1024)."""
    values = np.arange(256, dtype=np.float32)
    weight = np.float32(weight_b)
    mixed = values[:, None] * (np.float32(1.0) - weight) + values[None, :] * weight
    table = np.clip(mixed + np.float32(0.5), 0, 255).astype(np.uint8).ravel()
    table.flags.writeable = False  # shared by every thread through the cache
    return table


def _mix_constant(a: np.ndarray, b: np.ndarray, weight_b: float) -> np.ndarray:
    """`_mix(a, b, np.full(..., weight_b))` for uint8 images, the same pixels."""
    index = a.astype(np.uint16)
    index <<= 8
    index |= b
    return _mix_table(weight_b)[index]


def occlusion_fill(
    warped: np.ndarray, source: np.ndarray, occluded: np.ndarray, sigma: float = FILL_SIGMA
) -> np.ndarray:
    """What occluded pixels get: the source's detail on the warped output's surrounding colours.

    Raw source pixels in a stylised frame would leave a halo of unstylised colour around every
    moving object that a flow-guided denoise is too weak to repaint; the source's high
    frequencies keep its shapes, and the colours spread in from the visible neighbours
    (normalised convolution) keep the output's look.
    """
    visible = (~occluded).astype(np.float32)
    image = warped.astype(np.float32)
    weight = cv2.GaussianBlur(visible, (0, 0), sigma)[..., None]
    colour = cv2.GaussianBlur(image * visible[..., None], (0, 0), sigma) / np.maximum(weight, 1e-6)
    smooth_source = cv2.GaussianBlur(source.astype(np.float32), (0, 0), sigma)
    # Where no visible pixel is near, the source's own colours are all there is.
    colour = np.where(weight > 1e-3, colour, smooth_source)
    return np.clip(colour + (source.astype(np.float32) - smooth_source) + 0.5, 0, 255).astype(np.uint8)


def _blur_radius(sigma: float) -> int:
    # OpenCV's kernel for float images reaches 4 sigma; one more pixel for its rounding.
    return int(np.ceil(4.0 * sigma)) + 1


def _box(mask: np.ndarray, margin: int = 0) -> tuple[slice, slice] | None:
    """The bounding box of a mask's true pixels grown by `margin` (within the frame); None if empty."""
    rows, cols = np.flatnonzero(mask.any(axis=1)), np.flatnonzero(mask.any(axis=0))
    if rows.size == 0:
        return None
    height, width = mask.shape
    return (
        slice(max(0, rows[0] - margin), min(height, rows[-1] + 1 + margin)),
        slice(max(0, cols[0] - margin), min(width, cols[-1] + 1 + margin)),
    )


def _inner(box: tuple[slice, slice], crop: tuple[slice, slice]) -> tuple[slice, slice]:
    """`box` in the coordinates of `crop` (which contains it)."""
    return tuple(slice(b.start - c.start, b.stop - c.start) for b, c in zip(box, crop, strict=True))  # type: ignore[return-value]


# Occluded areas are found on a grid of this many pixels: each connected group of cells gets its
# own box, so a few small holes far apart cost their own area, not the box around all of them.
_REGION_CELL = 32


def _regions(mask: np.ndarray) -> list[tuple[slice, slice]]:
    """Boxes that together hold every true pixel of `mask`: one per connected group of grid cells."""
    height, width = mask.shape
    cell = _REGION_CELL
    padded = np.zeros((-(-height // cell) * cell, -(-width // cell) * cell), bool)
    padded[:height, :width] = mask
    grid = padded.reshape(padded.shape[0] // cell, cell, padded.shape[1] // cell, cell)
    cells = np.asarray(grid.any(axis=(1, 3)), dtype=np.uint8)
    count, _, stats, _ = cv2.connectedComponentsWithStats(cells, connectivity=8)
    boxes = []
    for x, y, w, h, _area in stats[1:count]:
        outer = (slice(y * cell, min(height, (y + h) * cell)), slice(x * cell, min(width, (x + w) * cell)))
        inner = _box(mask[outer])
        if inner is not None:
            boxes.append(_within(inner, outer))
    return boxes


def _within(box: tuple[slice, slice], outer: tuple[slice, slice]) -> tuple[slice, slice]:
    """`box`, given in the coordinates of `outer`, in the frame's."""
    return tuple(slice(b.start + o.start, b.stop + o.start) for b, o in zip(box, outer, strict=True))  # type: ignore[return-value]


def _grown(box: tuple[slice, slice], margin: int, shape: tuple[int, ...]) -> tuple[slice, slice]:
    return (
        slice(max(0, box[0].start - margin), min(shape[0], box[0].stop + margin)),
        slice(max(0, box[1].start - margin), min(shape[1], box[1].stop + margin)),
    )


@dataclass
class _Region:
    """One box of a prepared blend: its soft weights and what its occlusion fill needs."""

    box: tuple[slice, slice]  # holds every pixel of its group whose soft weight is > 0
    soft: np.ndarray  # the weights inside `box`
    patch: np.ndarray | None = None  # fill "source": the source inside `box`
    crop: tuple[slice, slice] | None = None  # fill "detail": `box` grown by the blur's reach
    visible: np.ndarray | None = None  # in `crop`: 1 where the warp supplies the pixel
    weight: np.ndarray | None = None  # in `box`: the blurred visibility (HxWx1)
    smooth_source: np.ndarray | None = None  # in `box`: the blurred source
    detail: np.ndarray | None = None  # in `box`: source - its blur

    def mixed(self, warped: np.ndarray) -> np.ndarray:
        """The init's pixels inside the box."""
        patch = self.patch if self.patch is not None else self._fill(warped)
        return _mix(warped[self.box], patch, self.soft)

    def _fill(self, warped: np.ndarray) -> np.ndarray:
        """`occlusion_fill` inside the box, from the crop around it (the same values: the crop
        holds every pixel the blur reaches from inside the box)."""
        assert self.crop is not None and self.visible is not None and self.weight is not None
        assert self.smooth_source is not None and self.detail is not None
        image = warped[self.crop].astype(np.float32)
        blurred = cv2.GaussianBlur(image * self.visible[..., None], (0, 0), FILL_SIGMA)
        colour = blurred[_inner(self.box, self.crop)] / np.maximum(self.weight, 1e-6)
        colour = np.where(self.weight > 1e-3, colour, self.smooth_source)
        return np.clip(colour + self.detail + 0.5, 0, 255).astype(np.uint8)


def _region(
    box: tuple[slice, slice], soft_full: np.ndarray, source: np.ndarray, occluded: np.ndarray, fill: str
) -> _Region:
    if fill == "source":
        return _Region(box, soft_full[box], patch=source[box])
    crop = _grown(box, _blur_radius(FILL_SIGMA), occluded.shape)
    inner = _inner(box, crop)
    visible = (~occluded[crop]).astype(np.float32)
    source_crop = source[crop].astype(np.float32)
    smooth = cv2.GaussianBlur(source_crop, (0, 0), FILL_SIGMA)[inner]
    return _Region(
        box,
        soft_full[box],
        crop=crop,
        visible=visible,
        weight=cv2.GaussianBlur(visible, (0, 0), FILL_SIGMA)[inner][..., None],
        smooth_source=smooth,
        detail=source_crop[inner] - smooth,
    )


@dataclass
class PreparedBlend:
    """`blend_init` for one target frame with everything that depends only on the source and the
    occlusions computed already, so a chain's next init costs only the parts that need the
    previous output (`prepare_blend` makes it; `apply` finishes it; the same pixels as `blend_init`).

    The occlusion fill is worked out only in boxes around the occluded pixels (their soft edge),
    each over a crop that adds the blur's reach, so it equals the whole-frame computation there;
    outside them the init is the warped output itself.
    """

    source: np.ndarray  # HxWx3 uint8
    source_mix: float
    regions: list[_Region]

    @property
    def area(self) -> int:
        """Pixels inside the regions' boxes (where the blend has work to do besides the source mix)."""
        return sum((r.box[0].stop - r.box[0].start) * (r.box[1].stop - r.box[1].start) for r in self.regions)

    def apply(self, warped: np.ndarray, in_place: bool = False) -> np.ndarray:
        """The init image from the warped previous output (`in_place`: `warped` may be overwritten)."""
        _same_size(warped, self.source)
        # Every box from the unchanged warp first: boxes may overlap, and fills read around their box.
        mixed = [(region.box, region.mixed(warped)) for region in self.regions]
        init = warped if in_place else warped.copy()
        for box, pixels in mixed:
            init[box] = pixels
        if self.source_mix > 0:
            init = _mix_constant(init, self.source, self.source_mix)
        return init


def prepare_blend(
    source: np.ndarray,
    occluded: np.ndarray,
    source_mix: float = 0.0,
    feather: float = 1.5,
    fill: str = "detail",
) -> PreparedBlend:
    """The source-only half of `blend_init` (see `PreparedBlend`)."""
    _same_size(source, occluded)
    if not 0.0 <= source_mix <= 1.0:
        raise TemporalInputError(f"The source mix must be between 0 and 1 (got {source_mix}).")
    if fill not in ("detail", "source"):
        raise TemporalInputError(f"Unknown occlusion fill '{fill}'; use 'detail' or 'source'.")
    if not occluded.any():
        return PreparedBlend(source, source_mix, [])
    soft_full = _soft(occluded, feather)
    boxes = _regions(soft_full > 0)
    return PreparedBlend(source, source_mix, [_region(box, soft_full, source, occluded, fill) for box in boxes])


def blend_init(
    warped: np.ndarray,
    source: np.ndarray,
    occluded: np.ndarray,
    source_mix: float = 0.0,
    feather: float = 1.5,
    fill: str = "detail",
) -> np.ndarray:
    """Init image for a flow-guided frame: the warped previous output, with occluded pixels from the source.

    fill "detail" (default) gives occluded pixels the source's detail on the output's colours
    (`occlusion_fill`); "source" pastes the source frame's pixels as they are. `source_mix`
    (0..1) also lets that share of the source through everywhere, which keeps a long chain
    from drifting away from the source's colours. (`prepare_blend` + `apply`: the same in two halves.)
    """
    _same_size(warped, source, occluded)
    return prepare_blend(source, occluded, source_mix, feather, fill).apply(warped)


@dataclass
class FlowInit:
    """What a flow frame's init needs besides the previous output, made ahead of the chain: where
    the warp samples, the frame's own source and the source-only half of the blend."""

    coverage: float  # of the link (see Correspondence.coverage)
    maps: tuple[np.ndarray, np.ndarray]  # sample_maps of the link's flow
    source: np.ndarray
    blend: PreparedBlend

    def init(self, previous_output: np.ndarray) -> np.ndarray:
        """`blend_init(link.warp(previous_output), source, link.occluded, source_mix)`, the same pixels."""
        _same_size(previous_output, self.source)
        return self.blend.apply(remap(previous_output, self.maps), in_place=True)


def prepare_flow_init(link: Correspondence, source: np.ndarray, source_mix: float) -> FlowInit:
    blend = prepare_blend(source, link.occluded, source_mix)
    return FlowInit(link.coverage, sample_maps(link.flow), source, blend)


@dataclass
class Fill:
    """An in-between frame made from keyframe outputs; `coverage` is the share of pixels they supplied."""

    image: np.ndarray
    coverage: float
    uncovered: np.ndarray  # HxW bool: pixels taken from the fallback


def fill_between(
    fallback: np.ndarray,
    position: float,
    before: np.ndarray | None = None,
    to_before: Correspondence | None = None,
    after: np.ndarray | None = None,
    to_after: Correspondence | None = None,
    feather: float = 4.0,
) -> Fill:
    """Fill a frame from the keyframe outputs on either side, weighted by temporal distance and occlusion.

    `position` is the frame's place between the keyframes (0 = at `before`, 1 = at `after`);
    `to_before`/`to_after` are the frame's correspondences against each keyframe's source frame.
    Either side may be None (clip ends). Pixels neither keyframe supplies get `fallback`'s
    detail (normally the source frame; see `occlusion_fill`); a low `coverage` says the frame
    should go to img2img instead. Weights change over `feather` px: where one keyframe stops
    covering, a hard switch from the two-keyframe blend would draw an edge of its own.
    """
    if not 0.0 <= position <= 1.0:
        raise TemporalInputError(f"A frame's position between keyframes must be between 0 and 1 (got {position}).")
    if (before is None) != (to_before is None) or (after is None) != (to_after is None):
        raise TemporalInputError("Each keyframe output needs its correspondence (and the other way round).")
    _same_size(fallback, before, after)
    total = np.zeros(fallback.shape[:2], np.float32)
    acc = np.zeros(fallback.shape, np.float32)
    confidence = np.zeros(fallback.shape[:2], np.float32)  # the best side's, per pixel
    for image, corr, closeness in ((before, to_before, 1.0 - position), (after, to_after, position)):
        if image is None or corr is None:
            continue
        trust = 1.0 - _soft(corr.occluded, feather)
        if corr.residual is not None:
            # Where one keyframe's warp fits the source better it should win, not be averaged
            # with a slightly misplaced copy (which would draw every outline twice).
            fit = np.exp(-((corr.residual / PHOTOMETRIC_TOLERANCE) ** 2))
            trust *= cv2.GaussianBlur(fit, (0, 0), feather) if feather > 0 else fit
        # The small floor keeps a side usable where it is the only one, even at distance 1.
        weight = trust * (closeness + 1e-3)
        acc += corr.warp(image).astype(np.float32) * weight[..., None]
        total += weight
        confidence = np.maximum(confidence, trust)
    covered = confidence > MIN_FILL_TRUST
    blended = np.clip(acc / np.maximum(total, 1e-9)[..., None] + 0.5, 0, 255).astype(np.uint8)
    image = (
        blended if covered.all() else np.where(covered[..., None], blended, occlusion_fill(blended, fallback, ~covered))
    )
    return Fill(image=image, coverage=float(covered.mean()), uncovered=~covered)


# --------------------------------------------------------------------------- colour


def _lab(image: np.ndarray) -> np.ndarray:
    # Float LAB (L 0..100) avoids the 8-bit LAB rounding that would band smooth gradients.
    return cv2.cvtColor(image.astype(np.float32) / 255.0, cv2.COLOR_RGB2Lab)


def _rgb(lab: np.ndarray) -> np.ndarray:
    rgb = cv2.cvtColor(lab.astype(np.float32), cv2.COLOR_Lab2RGB)
    return np.clip(rgb * 255.0 + 0.5, 0, 255).astype(np.uint8)


def lab_stats(image: np.ndarray) -> np.ndarray:
    """Per-channel LAB mean and standard deviation, shape (2, 3): the summary colour matching uses."""
    lab = _lab(image).reshape(-1, 3)
    return np.stack([lab.mean(axis=0), lab.std(axis=0)])


def match_colors(image: np.ndarray, reference: np.ndarray, strength: float = 1.0) -> np.ndarray:
    """Move the image's LAB mean/std per channel to the reference's (Reinhard et al. 2001).

    `strength` 0..1 blends between the image (0) and the full transfer (1).
    """
    if not 0.0 <= strength <= 1.0:
        raise TemporalInputError(f"Colour matching strength must be between 0 and 1 (got {strength}).")
    return apply_lab_stats(image, lab_stats(reference), strength)


def apply_lab_stats(image: np.ndarray, target: np.ndarray, strength: float = 1.0) -> np.ndarray:
    """Give the image the target LAB stats (from `lab_stats`); the reference image itself is not needed."""
    lab = _lab(image)
    mean, std = lab.reshape(-1, 3).mean(axis=0), lab.reshape(-1, 3).std(axis=0)
    # A flat channel has no spread to scale; shifting its mean is all that is meaningful.
    gain = np.where(std > 1e-3, target[1] / np.maximum(std, 1e-3), 1.0)
    matched = (lab - mean) * gain + target[0]
    return _rgb(lab + strength * (matched - lab))


def check_deflicker_window(window: int) -> None:
    if window < 1:
        raise TemporalInputError(
            f"The deflicker window must be 1 frame or more (got {window}); turn deflicker off instead of using 0."
        )


def deflicker_targets(stats: np.ndarray, window: int) -> np.ndarray:
    """Per-frame target LAB stats: the median of each frame's stats over +-window frames.

    `stats` is (N, 2, 3) from `lab_stats`; a median rather than a mean lets a scene's real
    brightness changes through while single-frame flicker is pulled back into line.
    """
    check_deflicker_window(window)
    count = len(stats)
    return np.stack([np.median(stats[max(0, i - window) : i + window + 1], axis=0) for i in range(count)])


def deflicker(frames: Sequence[np.ndarray], window: int, strength: float = 1.0) -> list[np.ndarray]:
    """Pull each frame's LAB stats toward the temporal median of its neighbours (in memory; see
    `lab_stats`/`deflicker_targets`/`apply_lab_stats` to stream a long job frame by frame)."""
    check_deflicker_window(window)
    _same_size(*frames)
    stats = np.stack([lab_stats(frame) for frame in frames]) if frames else np.zeros((0, 2, 3))
    targets = deflicker_targets(stats, window)
    return [apply_lab_stats(frame, target, strength) for frame, target in zip(frames, targets, strict=False)]


# --------------------------------------------------------------------------- scene cuts

# Below this Bhattacharyya distance two frames are the same scene whatever the clip's spread.
MIN_CUT_DISTANCE = 0.3
# Robust z-score a frame-to-frame distance must exceed to be a cut (far beyond camera motion).
CUT_Z = 8.0


def frame_signature(image: np.ndarray) -> np.ndarray:
    """A normalised HSV histogram (hue x saturation, plus value) that changes little under motion."""
    hsv = cv2.cvtColor(cv2.resize(image, (128, 128), interpolation=cv2.INTER_AREA), cv2.COLOR_RGB2HSV)
    hue_sat = cv2.calcHist([hsv], [0, 1], None, [16, 8], [0, 180, 0, 256]).ravel()
    value = cv2.calcHist([hsv], [2], None, [16], [0, 256]).ravel()
    signature = np.concatenate([hue_sat, value]).astype(np.float32)
    return signature / signature.sum()


def cut_distances(signatures: Sequence[np.ndarray]) -> np.ndarray:
    """Bhattacharyya distance between each frame's signature and the previous one's (length N-1)."""
    return np.array([cv2.compareHist(a, b, cv2.HISTCMP_BHATTACHARYYA) for a, b in pairwise(signatures)])


def find_cuts(distances: np.ndarray, z: float = CUT_Z) -> list[int]:
    """Indices of frames that start a new scene, from `cut_distances`.

    The threshold adapts to the clip: a distance is a cut when it is far above the clip's own
    median (robust z over the median absolute deviation) and above an absolute floor; a lower
    `z` finds more cuts (JobSpec coherence.scene_cut_z).
    """
    if len(distances) == 0:
        return []
    median = float(np.median(distances))
    spread = 1.4826 * float(np.median(np.abs(distances - median)))
    threshold = max(MIN_CUT_DISTANCE, median + z * max(spread, 0.01))
    return [int(i) + 1 for i in np.flatnonzero(distances > threshold)]


def detect_scene_cuts(frames: Iterable[np.ndarray]) -> list[int]:
    """Indices of the frames where a new scene starts (frame 0 is never listed)."""
    return find_cuts(cut_distances([frame_signature(frame) for frame in frames]))
