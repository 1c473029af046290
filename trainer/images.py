"""Open one image file safely and measure it.

Everything here works on bytes already read into memory (so the file is read once, and its
SHA-256 and pixels come from the same bytes) and returns plain numpy arrays: upright (EXIF
orientation applied), RGB, alpha flattened on a background colour. Bad files raise
`ImageRejected` with a short reason code and a sentence for prep.json, never a bare error.
"""

from __future__ import annotations

import io
import math
import warnings
from dataclasses import dataclass

import cv2
import imagehash
import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

SUPPORTED_EXTENSIONS = (".png", ".jpg", ".jpeg", ".webp", ".bmp")
# Pillow's JPEG opener also returns multi-picture JPEGs from cameras (format "MPO").
WANTED_FORMATS = ("PNG", "JPEG", "WEBP", "BMP")
EXIF_ORIENTATION = 0x0112
# Orientations 5-8 swap width and height.
_TRANSPOSING_ORIENTATIONS = (5, 6, 7, 8)

RGB = tuple[int, int, int]


def quiet_pillow_size_warning() -> None:
    """Silence Pillow's DecompressionBombWarning as PIL.Image issues it, for the whole process.

    Pillow warns above its own MAX_IMAGE_PIXELS; open_image's max_pixels check right after gives
    the clearer reason, and Pillow's hard limit (2x) still raises DecompressionBombError. One
    filter installed once, not `warnings.catch_warnings()` around each open: that swaps the
    process-wide filter list, which before Python 3.14 leaks or loses filters when images are
    opened on several threads at once (prep runs inline on a host's job threads). Narrow: only
    this category, and only from PIL.Image; the same class warned by other code still shows.
    Idempotent (filterwarnings replaces an identical filter).
    """
    warnings.filterwarnings("ignore", category=Image.DecompressionBombWarning, module=r"PIL\.Image\Z")


quiet_pillow_size_warning()


class ImageRejected(Exception):
    """A file that cannot become a training image; `code` goes into prep.json's counts."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


@dataclass
class Header:
    """What the file says about itself before any pixel is decoded."""

    format: str
    width: int  # upright, i.e. after EXIF orientation
    height: int
    orientation: int


@dataclass
class LoadedImage:
    rgb: np.ndarray  # H x W x 3 uint8, upright, alpha flattened
    header: Header
    had_alpha: bool  # some pixel was not fully opaque

    @property
    def decoded_scale(self) -> float:
        """Decoded width / full width: below 1 when a JPEG was decoded at reduced size."""
        return self.rgb.shape[1] / self.header.width


def _pil_formats() -> list[str]:
    """The wanted formats this Pillow can open (WebP support is a build option)."""
    Image.init()
    return [name for name in WANTED_FORMATS if name in Image.OPEN]


def _open(data: bytes) -> Image.Image:
    if not data:
        raise ImageRejected("empty", "empty file (0 bytes)")
    try:
        return Image.open(io.BytesIO(data), formats=_pil_formats())
    except Image.DecompressionBombError as exc:
        raise ImageRejected("too_large", f"decompression-bomb sized image refused by Pillow ({exc})") from exc
    except UnidentifiedImageError as exc:
        raise ImageRejected("not_image", "not a PNG, JPEG, WebP or BMP image Pillow can read") from exc
    except (OSError, ValueError, SyntaxError) as exc:
        raise ImageRejected("corrupt", f"corrupt image header ({exc})") from exc


def read_header(image: Image.Image) -> Header:
    try:
        orientation = int(image.getexif().get(EXIF_ORIENTATION, 1) or 1)
    except Exception:  # a broken EXIF block must not cost the picture
        orientation = 1
    width, height = image.size
    if orientation in _TRANSPOSING_ORIENTATIONS:
        width, height = height, width
    return Header(format=str(image.format), width=width, height=height, orientation=orientation)


def open_image(data: bytes, max_pixels: int) -> tuple[Image.Image, Header]:
    """Open lazily (header only) and refuse images above `max_pixels` before decoding them."""
    image = _open(data)
    width, height = image.size  # the pixel count does not depend on the EXIF orientation
    if width * height > max_pixels:
        raise ImageRejected(
            "too_large",
            f"{width}x{height} is {width * height / 1e6:.0f} MP, above the {max_pixels / 1e6:.0f} MP limit "
            "(--max-pixels)",
        )
    # Reading EXIF may decode a PNG (its eXIf chunk can follow the pixels): only after the check.
    return image, read_header(image)


def decode_image(image: Image.Image, header: Header, background: RGB, min_decode_scale: float = 1.0) -> LoadedImage:
    """Decode upright and flattened.

    `min_decode_scale` < 1 lets a JPEG decode at a reduced size (libjpeg's DCT scaling) when
    the caller will downscale at least that much anyway; it never goes below what is asked.
    """
    try:
        if header.format in ("JPEG", "MPO") and min_decode_scale < 0.5:
            stored_w, stored_h = image.size
            image.draft("RGB", (math.ceil(stored_w * min_decode_scale), math.ceil(stored_h * min_decode_scale)))
        image.load()
        # exif_transpose gives None only with in_place=True
        upright = (ImageOps.exif_transpose(image) or image) if header.orientation != 1 else image
        rgb, had_alpha = _flatten(upright, background)
    except Image.DecompressionBombError as exc:
        raise ImageRejected("too_large", f"decompression-bomb sized image refused by Pillow ({exc})") from exc
    except (OSError, ValueError, SyntaxError, EOFError) as exc:
        raise ImageRejected("corrupt", f"corrupt or truncated image data ({exc})") from exc
    except MemoryError as exc:
        raise ImageRejected("too_large", "not enough memory to decode this image") from exc
    return LoadedImage(rgb=np.ascontiguousarray(rgb), header=header, had_alpha=had_alpha)


def load_image(data: bytes, background: RGB, max_pixels: int, min_decode_scale: float = 1.0) -> LoadedImage:
    image, header = open_image(data, max_pixels)
    return decode_image(image, header, background, min_decode_scale)


def _to_8bit(image: Image.Image) -> Image.Image:
    """16/32-bit greyscale (16-bit PNGs) -> 8-bit; Pillow's convert('L') would clip instead."""
    array = np.asarray(image)
    peak = float(array.max()) if array.size else 0.0
    if peak > 255:
        array = array.astype(np.float64) * (255.0 / (65535.0 if peak <= 65535 else peak))
    return Image.fromarray(np.clip(array, 0, 255).astype(np.uint8), "L")


def _flatten(image: Image.Image, background: RGB) -> tuple[np.ndarray, bool]:
    if image.mode in ("I", "I;16", "I;16B", "I;16L", "I;16N", "F"):
        image = _to_8bit(image)
    has_alpha_channel = image.mode in ("RGBA", "LA", "PA", "RGBa", "La") or (
        image.mode == "P" and "transparency" in image.info
    )
    if not has_alpha_channel:
        return np.asarray(image if image.mode == "RGB" else image.convert("RGB")), False
    rgba = image.convert("RGBA")
    alpha = rgba.getchannel("A")
    if alpha.getextrema()[0] == 255:
        return np.asarray(rgba.convert("RGB")), False
    canvas = Image.new("RGB", rgba.size, background)
    canvas.paste(rgba.convert("RGB"), mask=alpha)
    return np.asarray(canvas), True


# ----------------------------------------------------------------------------------- measures


def resize_to_area(rgb: np.ndarray, max_area: int) -> np.ndarray:
    """Downscale (never up) so width*height <= max_area, keeping the aspect ratio."""
    height, width = rgb.shape[:2]
    if width * height <= max_area:
        return rgb
    scale = math.sqrt(max_area / (width * height))
    size = (max(1, int(width * scale)), max(1, int(height * scale)))
    return cv2.resize(rgb, size, interpolation=cv2.INTER_AREA)


def resize_long_side(image: np.ndarray, long_side: int) -> np.ndarray:
    height, width = image.shape[:2]
    if max(width, height) <= long_side:
        return image
    scale = long_side / max(width, height)
    size = (max(1, round(width * scale)), max(1, round(height * scale)))
    return cv2.resize(image, size, interpolation=cv2.INTER_AREA)


# The re-blur measure (Crete-Roffet et al., "The blur effect", SPIE 2007), judged only where
# the picture has edges. Calibrated on cel-shaded, pastel line art, painted and photographic
# test images, a third of them JPEG'd at quality 75 (tests/test_train_prep_blur.py): sharp ones
# score 0.43-0.80, their Gaussian-blurred copies (sigma 2-3 at 512 px) 0.37 at most. The
# Laplacian variance used before called low-contrast flat-colour art blurry.
SHARPNESS_THRESHOLD = 0.40
_REBLUR = 9  # box length of the re-blur: a crisp edge loses 8/9 of its step, a soft one little
_EDGE_STEP = (
    1.5  # grey levels per pixel the re-blurred picture must still change by (skips flat areas and 8-bit banding)
)


def sharpness(rgb: np.ndarray) -> float:
    """0-1: the share of the edge contrast that a 9-pixel box blur would take away.

    A crisp edge steps within a pixel and the re-blur spreads it over nine, removing ~0.9 of
    its per-pixel contrast; an edge already blurred loses little. Only pixels where the
    re-blurred picture still changes count, so flat colour (cel shading, skies, backgrounds)
    neither helps nor hurts, unlike the Laplacian's variance, which is low for any flat art.
    Colour channels are judged separately: an edge between two colours of equal brightness
    vanishes in grey. A picture with no edges at all scores 0."""
    image = rgb.astype(np.float32)
    total = removed = 0.0
    for axis, box in ((0, (1, _REBLUR)), (1, (_REBLUR, 1))):
        blurred = cv2.blur(image, box)  # along `axis` only: ksize is (width, height)
        step = np.abs(np.diff(image, axis=axis))
        step_blurred = np.abs(np.diff(blurred, axis=axis))
        edges = step_blurred > _EDGE_STEP
        total += float(step[edges].sum())
        removed += float(np.maximum(step - step_blurred, 0.0)[edges].sum())
    return removed / total if total else 0.0


@dataclass(frozen=True)
class ColourMeasure:
    chroma_p99: float  # 99th percentile of CIELAB chroma: ~0 for greyscale
    hue_spread: float  # degrees; small when every coloured pixel has the same hue (sepia, tinted)
    coloured_fraction: float  # share of pixels with visible chroma


def colour_measure(rgb: np.ndarray) -> ColourMeasure:
    small = resize_long_side(rgb, 128)
    lab = cv2.cvtColor(np.ascontiguousarray(small), cv2.COLOR_RGB2LAB).astype(np.float32)
    a = lab[..., 1] - 128.0
    b = lab[..., 2] - 128.0
    chroma = np.hypot(a, b)
    p99 = float(np.percentile(chroma, 99))
    coloured = chroma > 6.0
    fraction = float(coloured.mean())
    if fraction < 0.01:
        return ColourMeasure(chroma_p99=p99, hue_spread=0.0, coloured_fraction=fraction)
    # Chroma-weighted circular spread of hue: sqrt(-2 ln R) is the circular standard deviation.
    weights = chroma[coloured]
    angles = np.arctan2(b[coloured], a[coloured])
    resultant = np.hypot((weights * np.cos(angles)).sum(), (weights * np.sin(angles)).sum()) / weights.sum()
    spread = math.degrees(math.sqrt(max(0.0, -2.0 * math.log(max(resultant, 1e-12)))))
    return ColourMeasure(chroma_p99=p99, hue_spread=spread, coloured_fraction=fraction)


def is_monochrome(measure: ColourMeasure, grey_chroma: float = 12.0, tint_spread: float = 4.0) -> bool:
    """Greyscale (or nearly: a faint paper tint), or one pure tint over most of the picture.

    The thresholds are conservative: a warm palette (skin, red, orange) spreads ~10 degrees
    of hue, as does a brown-to-cream gradient map, so those stay colour images; so does line
    art with one spot colour (the tint must cover at least half of the pixels).
    """
    if measure.chroma_p99 < grey_chroma:
        return True
    return measure.hue_spread < tint_spread and measure.coloured_fraction >= 0.5


def perceptual_hashes(rgb: np.ndarray) -> tuple[int, int]:
    """64-bit pHash of the image and of its mirror image (a flipped copy is still a duplicate)."""
    small = Image.fromarray(cv2.resize(rgb, (64, 64), interpolation=cv2.INTER_AREA))
    plain = int(str(imagehash.phash(small)), 16)
    mirrored = int(str(imagehash.phash(ImageOps.mirror(small))), 16)
    return plain, mirrored


def jpeg_tile(rgb: np.ndarray, side: int = 160) -> bytes:
    """A small JPEG for the contact sheets (bytes keep 2,000 of them cheap to hold)."""
    small = resize_long_side(rgb, side)
    buffer = io.BytesIO()
    Image.fromarray(small).save(buffer, "JPEG", quality=85)
    return buffer.getvalue()
