"""Run a WD14-style ONNX tagger the user already has (nothing is downloaded).

The SmilingWolf WD14 taggers (v2 and v3) take a batch of square images, NHWC float32 in
0-255, BGR channel order, padded to a square on white and resized to the model's input size
(448); they output one probability per row of `selected_tags.csv` (tag_id,name,category,count)
kept beside the model. Categories: 0 general, 4 character, 9 rating (never written).
"""

from __future__ import annotations

import csv
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from vidstyle.errors import ModelNotFoundError, UserInputError

TAGS_FILE = "selected_tags.csv"
CATEGORY_GENERAL = 0
CATEGORY_CHARACTER = 4
CATEGORY_RATING = 9


@dataclass(frozen=True)
class TagInfo:
    name: str
    category: int


def read_selected_tags(path: Path) -> list[TagInfo]:
    try:
        with open(path, newline="", encoding="utf-8") as handle:
            rows = list(csv.DictReader(handle))
    except OSError as exc:
        raise ModelNotFoundError(f"Cannot read {path}; put the tagger's {TAGS_FILE} beside the model.") from exc
    if not rows or "name" not in rows[0] or "category" not in rows[0]:
        raise UserInputError(f"{path} is not a WD14 {TAGS_FILE} (expected columns tag_id,name,category,count).")
    try:
        return [TagInfo(row["name"], int(row["category"])) for row in rows]
    except (TypeError, ValueError) as exc:
        raise UserInputError(f"{path} has a non-numeric category; is it the tagger's {TAGS_FILE}?") from exc


def pad_to_square(rgb: np.ndarray, fill: int = 255) -> np.ndarray:
    height, width = rgb.shape[:2]
    side = max(height, width)
    canvas = np.full((side, side, 3), fill, dtype=np.uint8)
    top, left = (side - height) // 2, (side - width) // 2
    canvas[top : top + height, left : left + width] = rgb
    return canvas


def preprocess(rgb: np.ndarray, side: int) -> np.ndarray:
    """RGB uint8 -> the tagger's input: white-padded square, side x side, BGR float32 0-255."""
    square = pad_to_square(rgb)
    interpolation = cv2.INTER_AREA if square.shape[0] > side else cv2.INTER_CUBIC
    resized = cv2.resize(square, (side, side), interpolation=interpolation)
    return resized[:, :, ::-1].astype(np.float32)


class WD14Tagger:
    def __init__(
        self,
        model_path: str,
        general_threshold: float = 0.35,
        character_threshold: float = 0.85,
        tags_csv: str | None = None,
        threads: int = 0,
    ) -> None:
        path = Path(model_path).expanduser()
        if not path.is_file():
            raise ModelNotFoundError(f"Tagger model {model_path} does not exist; pass the path of a WD14 model.onnx.")
        csv_path = Path(tags_csv) if tags_csv else path.with_name(TAGS_FILE)
        if not csv_path.is_file():
            raise ModelNotFoundError(f"{csv_path} is missing; put the tagger's {TAGS_FILE} beside {path.name}.")
        self.tags = read_selected_tags(csv_path)
        self.general_threshold = general_threshold
        self.character_threshold = character_threshold
        self.session = self._session(path, threads)
        model_input = self.session.get_inputs()[0]
        self.input_name = model_input.name
        shape = list(model_input.shape)
        if len(shape) != 4 or shape[3] != 3:
            raise UserInputError(
                f"{path.name} does not take NHWC RGB images (input shape {shape}); is it a WD14 tagger?"
            )
        self.side = int(shape[1]) if isinstance(shape[1], int) else 448

    @staticmethod
    def _session(path: Path, threads: int) -> Any:
        try:
            import onnxruntime
        except ImportError as exc:
            raise UserInputError("Running a tagger needs onnxruntime; pip install onnxruntime.") from exc
        options = onnxruntime.SessionOptions()
        if threads:
            options.intra_op_num_threads = threads
        try:
            return onnxruntime.InferenceSession(str(path), sess_options=options, providers=["CPUExecutionProvider"])
        except Exception as exc:  # onnxruntime raises its own untyped errors for bad files
            raise UserInputError(f"onnxruntime cannot load {path}; is it a WD14 tagger .onnx file? ({exc})") from exc

    def probabilities(self, images: Sequence[np.ndarray]) -> np.ndarray:
        batch = np.stack([preprocess(image, self.side) for image in images])
        output: np.ndarray = np.asarray(self.session.run(None, {self.input_name: batch})[0], dtype=np.float32)
        if output.ndim != 2 or output.shape[1] != len(self.tags):
            raise UserInputError(
                f"The tagger outputs {output.shape[-1]} scores but {TAGS_FILE} lists {len(self.tags)} tags; "
                "use the CSV that came with this model."
            )
        if output.min() < 0.0 or output.max() > 1.0:  # logits: a model exported without its sigmoid
            output = 1.0 / (1.0 + np.exp(-output))
        return output

    def tag(self, images: Sequence[np.ndarray]) -> list[list[str]]:
        """Tags per image: character tags first, then general ones, most confident first."""
        results = []
        for scores in self.probabilities(images):
            character, general = [], []
            for info, score in zip(self.tags, scores.tolist(), strict=True):
                if info.category == CATEGORY_RATING:
                    continue
                if info.category == CATEGORY_CHARACTER:
                    if score >= self.character_threshold:
                        character.append((score, info.name))
                elif score >= self.general_threshold:
                    general.append((score, info.name))
            ordered = sorted(character, key=lambda s: -s[0]) + sorted(general, key=lambda s: -s[0])
            results.append([name for _, name in ordered])
        return results
