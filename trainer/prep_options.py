"""The options of `trainer prep` (one pydantic model, its bounds and checks) and their parsing.

Shared by the prep pipeline (dataset.py) and its report (prep_report.py), which must not import each other.
"""

from __future__ import annotations

import re
from typing import Any, Literal

from PIL import ImageColor

from vidstyle.compat import BaseModel, Extra, Field, ValidationError, root_validator, validator
from vidstyle.errors import UserInputError
from vidstyle.overrides import describe_validation_error

from .images import SHARPNESS_THRESHOLD

_UNSAFE_NAME = re.compile(r'[\\/:*?"<>|\x00-\x1f]')


class PrepOptions(BaseModel):
    """Everything that decides the dataset; defaults and bounds are declared once, here."""

    class Config:
        extra = Extra.forbid

    sources: list[str] = Field(
        ..., min_items=1, description="Folders (searched recursively) or image files to read; never modified."
    )
    out: str = Field(..., min_length=1, description="Dataset folder to create; a re-run replaces it as a whole.")
    name: str = Field(
        ..., min_length=1, max_length=80, description="Dataset name: the kohya folder becomes img/<repeats>_<name>."
    )
    trigger: str | None = Field(
        default=None, max_length=80, description="Trigger word put first in every caption (default: the name)."
    )
    repeats: int | None = Field(
        default=None,
        ge=1,
        le=1000,
        description="kohya repeats per image (default: about 300 / training images, 1-100).",
    )
    size: int = Field(
        default=512,
        ge=64,
        le=4096,
        multiple_of=8,
        description="Training resolution in pixels (512 for SD1.5, 1024 for SDXL).",
    )
    crop: Literal["bucket", "focal", "center"] = Field(
        default="bucket",
        description="bucket: keep the aspect ratio, only downscale to size*size pixels (for kohya's enable_bucket; "
        "recommended); focal: square crop around faces/detail; center: square centre crop.",
    )
    allow_upscale: bool = Field(
        default=False,
        description="Let focal/center crops upscale images smaller than the size (counted in the report).",
    )
    background: str = Field(
        default="white", description="Colour transparent pixels are flattened on (name or #RRGGBB)."
    )
    min_side: int | None = Field(
        default=None,
        ge=0,
        le=65536,
        description="Drop images whose shortest side is below this (default: half the size; 0: off).",
    )
    dedupe: bool = Field(
        default=True, description="Drop near-duplicates (perceptual hash), keeping the larger, then sharper one."
    )
    dedupe_threshold: int = Field(
        default=8, ge=0, le=32, description="Max differing pHash bits (of 64) for two images to be duplicates."
    )
    drop_monochrome: bool = Field(default=True, description="Drop greyscale and single-tint (sepia) images.")
    blur_threshold: float = Field(
        default=SHARPNESS_THRESHOLD,
        ge=0,
        le=1,
        description="Drop images whose edge sharpness (0-1, at training scale; flat colour does not count) is below "
        "this (0: off).",
    )
    face_filter: bool = Field(
        default=True, description="Drop images with more than max_faces faces (needs a face detector)."
    )
    max_faces: int = Field(default=1, ge=0, le=100, description="Most faces an image may show.")
    face_detector: str = Field(
        default="auto",
        description="'auto' (OpenCV's bundled frontal-face cascade), 'none', a cascade .xml "
        "(e.g. lbpcascade_animeface.xml for drawn faces) or a YuNet .onnx face detector.",
    )
    exclude: list[str] = Field(
        default_factory=list, description="File names or patterns to leave out (matched on name or relative path)."
    )
    exclude_file: str | None = Field(
        default=None, description="A text file of names/patterns to leave out, one per line."
    )
    caption_source: Literal["existing", "tags", "wd14", "webui", "none"] = Field(
        default="existing",
        description="existing: caption files beside the images; tags: a tagger's output folder; "
        "wd14: run a WD14 ONNX tagger; webui: a running WebUI's DeepBooru (--tagger webui:URL); none: trigger word "
        "only.",
    )
    caption_ext: str = Field(default=".txt", description="Extension of existing caption / tag files.")
    tags_dir: str | None = Field(
        default=None, description="Folder with a tagger's output files (same names as the images)."
    )
    tagger_model: str | None = Field(
        default=None, description="WD14 tagger model.onnx (selected_tags.csv beside it); nothing is downloaded."
    )
    tagger_threshold: float = Field(default=0.35, gt=0, lt=1, description="WD14 general-tag threshold.")
    tagger_character_threshold: float = Field(default=0.85, gt=0, lt=1, description="WD14 character-tag threshold.")
    tagger: str | None = Field(
        default=None,
        description="webui:URL: tag with that WebUI's DeepBooru over its API (/sdapi/v1/interrogate; the WebUI needs "
        "--api).",
    )
    tagger_workers: int = Field(default=4, ge=1, le=32, description="Images in flight to the WebUI tagger at once.")
    underscores_to_spaces: bool = Field(
        default=True, description="Write 'long hair', not 'long_hair' (kaomoji such as ^_^ stay)."
    )
    prune: list[str] = Field(
        default_factory=list, description="Tags to delete from every caption (patterns like '* eyes' allowed)."
    )
    prune_file: str | None = Field(
        default=None, description="A text file of tags to delete (one per line or comma-separated)."
    )
    keep_tags: list[str] = Field(default_factory=list, description="Tags never suggested or pruned.")
    suggest_threshold: float = Field(
        default=0.5, gt=0, le=1, description="Suggest pruning tags present in at least this fraction of the images."
    )
    prune_suggested: bool = Field(
        default=False, description="Also delete the suggested tags (the character's own features)."
    )
    val_fraction: float = Field(
        default=0.1, ge=0, le=0.5, description="Fraction of kept images held out for validation."
    )
    val_count: int | None = Field(default=None, ge=0, description="Number of images held out (overrides the fraction).")
    seed: int = Field(default=0, ge=0, le=2**32 - 1, description="Seed of the validation split.")
    max_pixels: int = Field(
        default=8192 * 8192,
        ge=1,
        le=2**31,
        description="Refuse images above this many pixels (decompression-bomb guard).",
    )
    workers: int | None = Field(default=None, ge=1, le=64, description="Worker processes (default: one per CPU core).")
    contact_sheets: bool = Field(default=True, description="Write contact sheets of kept and dropped images.")

    @validator("blur_threshold", pre=True)
    def _blur_scale(cls, value: Any) -> Any:
        # Thresholds like 40 from the earlier Laplacian-variance measure would drop every image.
        if isinstance(value, (int, float)) and value > 1:
            raise ValueError(
                f"{value:g} is on the old Laplacian scale; the blur threshold is now an edge "
                "sharpness from 0 to 1 (default 0.4, 0 turns the filter off)"
            )
        return value

    @validator("name")
    def _safe_name(cls, value: str) -> str:
        value = value.strip()
        if not value or value.startswith(".") or _UNSAFE_NAME.search(value):
            raise ValueError("use letters, digits, spaces, '-' or '_' (it becomes a folder name)")
        return value

    @validator("trigger")
    def _one_tag(cls, value: str | None) -> str | None:
        if value is None:
            return None
        value = " ".join(value.split())
        if not value or "," in value:
            raise ValueError("the trigger word must be one tag, without commas")
        return value

    @validator("background")
    def _colour(cls, value: str) -> str:
        try:
            ImageColor.getrgb(value)
        except ValueError as exc:
            raise ValueError(f"'{value}' is not a colour; use a name like white or #RRGGBB") from exc
        return value

    @validator("caption_ext")
    def _extension(cls, value: str) -> str:
        value = value.strip()
        return value if value.startswith(".") else "." + value

    @root_validator(skip_on_failure=True)
    def _caption_inputs(cls, values: dict[str, Any]) -> dict[str, Any]:
        source = values.get("caption_source")
        if source == "tags" and not values.get("tags_dir"):
            raise ValueError("caption_source 'tags' needs tags_dir (--tags-dir, the tagger's output folder)")
        if source == "wd14" and not values.get("tagger_model"):
            raise ValueError("caption_source 'wd14' needs tagger_model (--tagger-model, a WD14 model.onnx)")
        if values.get("tagger_model") and source != "wd14":
            raise ValueError("tagger_model is only used with caption_source 'wd14' (--captions wd14)")
        if source == "webui" and not values.get("tagger"):
            raise ValueError("caption_source 'webui' needs tagger (--tagger webui:URL, a WebUI started with --api)")
        if values.get("tagger") and source != "webui":
            raise ValueError("tagger is only used with caption_source 'webui' (--captions webui)")
        return values

    @validator("tagger")
    def _webui_tagger(cls, value: str | None) -> str | None:
        from .webui_tagger import webui_url

        if value is None:
            return None
        try:
            return "webui:" + webui_url(value.strip())
        except UserInputError as exc:
            raise ValueError(str(exc).rstrip(".")) from None

    @property
    def trigger_word(self) -> str:
        return self.trigger or self.name

    @property
    def min_side_px(self) -> int:
        return self.size // 2 if self.min_side is None else self.min_side

    @property
    def background_rgb(self) -> tuple[int, int, int]:
        rgb = ImageColor.getrgb(self.background)
        return (rgb[0], rgb[1], rgb[2])


def build_options(**values: Any) -> PrepOptions:
    """PrepOptions from keyword values; a bad value becomes one UserInputError sentence."""
    try:
        return PrepOptions(**values)
    except ValidationError as err:
        raise UserInputError(describe_validation_error(err, "prep options")) from err
