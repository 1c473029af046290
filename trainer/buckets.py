"""Which kohya aspect-ratio bucket each image will land in (for the prep report).

Mirrors the behaviour of sd-scripts' predefined buckets (library/model_util.py
make_bucket_resolutions and BucketManager.select_bucket with bucket_no_upscale off): a
square bucket of the resolution's area, plus every width from min to max reso in steps with
the tallest height that keeps the area, both orientations; an image goes to the bucket with
the nearest aspect ratio (an exact size match wins).
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Iterable

Size = tuple[int, int]

DEFAULT_MIN_RESO = 256
DEFAULT_STEPS = 64


def default_max_reso(resolution: int) -> int:
    # sd-scripts' default max_bucket_reso is 1024; SDXL configs use twice the resolution.
    return max(1024, 2 * resolution)


def bucket_sizes(
    resolution: int, min_reso: int = DEFAULT_MIN_RESO, max_reso: int = 1024, steps: int = DEFAULT_STEPS
) -> list[Size]:
    area = resolution * resolution
    square = int(math.sqrt(area) // steps) * steps
    sizes = {(square, square)}
    for width in range(min_reso, max_reso + 1, steps):
        height = min(max_reso, int((area // width) // steps) * steps)
        if height >= min_reso:
            sizes.add((width, height))
            sizes.add((height, width))
    return sorted(sizes)


def select_bucket(width: int, height: int, sizes: list[Size]) -> Size:
    if (width, height) in sizes:
        return (width, height)
    aspect = width / height
    return min(sizes, key=lambda s: (abs(s[0] / s[1] - aspect), sizes.index(s)))


def bucket_histogram(image_sizes: Iterable[Size], resolution: int) -> dict[str, object]:
    """{'assumes': kohya settings used, 'counts': {'WxH': images}} for prep.json."""
    max_reso = default_max_reso(resolution)
    sizes = bucket_sizes(resolution, DEFAULT_MIN_RESO, max_reso, DEFAULT_STEPS)
    counts = Counter(select_bucket(w, h, sizes) for w, h in image_sizes)
    return {
        "assumes": {
            "resolution": resolution,
            "min_bucket_reso": DEFAULT_MIN_RESO,
            "max_bucket_reso": max_reso,
            "bucket_reso_steps": DEFAULT_STEPS,
            "bucket_no_upscale": False,
        },
        "counts": {f"{w}x{h}": n for (w, h), n in sorted(counts.items())},
    }
