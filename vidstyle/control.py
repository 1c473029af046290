"""Control maps for ControlNet: canny edges, made the way sd-webui-controlnet and diffusers make them.

Both run `cv2.Canny` on the RGB image itself (OpenCV then takes the strongest gradient over
the three channels), so our map matches what the WebUI's `canny` preprocessor would send;
the result is white edges on black, three channels, as ControlNet canny models expect.
"""

from __future__ import annotations

import cv2
import numpy as np

from .errors import SpecError
from .imageio import as_rgb
from .spec import ControlNetSpec


def canny_map(image_rgb: np.ndarray, low: int, high: int, blur: int = 0) -> np.ndarray:
    """White-on-black canny edges of an RGB uint8 image, as HxWx3 uint8 (values 0 or 255).

    `blur` is an odd Gaussian kernel size applied first to calm noisy renders (0 = none).
    """
    if not (0 <= low <= high <= 255):
        raise SpecError(f"Canny thresholds must satisfy 0 <= low <= high <= 255 (got low={low}, high={high}).")
    if blur < 0 or (blur and blur % 2 == 0):
        raise SpecError(f"Canny blur must be 0 or an odd kernel size (got {blur}).")
    image = as_rgb(image_rgb)
    if blur > 1:
        image = cv2.GaussianBlur(image, (blur, blur), 0)
    edges = cv2.Canny(image, int(low), int(high))
    return cv2.cvtColor(edges, cv2.COLOR_GRAY2RGB)


def control_for_spec(image_rgb: np.ndarray, spec: ControlNetSpec) -> np.ndarray:
    """The control map a frame gets under this ControlNet spec (canny is the only kind so far).

    Made even when spec.preprocessor is 'server', because previews and the edge-fidelity
    score need our map regardless of who preprocesses for the model.
    """
    return canny_map(image_rgb, spec.low_threshold, spec.high_threshold, spec.blur)
