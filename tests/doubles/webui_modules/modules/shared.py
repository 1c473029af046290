"""TEST DOUBLE of modules/shared.py (A1111 v1.10.1): the WebUI's process-wide objects.

Upstream fills `opts` and `state` during initialize(); the double fills them at import with
the options Vidstyle reads (same keys and defaults as modules/shared_options.py).
"""

from __future__ import annotations

import os

from modules import options, shared_cmd_options, shared_state
from modules.paths_internal import data_path, default_output_dir  # noqa: F401

cmd_opts = shared_cmd_options.cmd_opts

OptionInfo = options.OptionInfo

# Upstream modules/shared_options.py registers these categories (in this order) and files
# its sections under them; the double keeps the two sections whose options Vidstyle reads.
for _category_id, _label in (
    ("saving", "Saving images"),
    ("sd", "Stable Diffusion"),
    ("ui", "User Interface"),
    ("system", "System"),
    ("postprocessing", "Postprocessing"),
    ("training", "Training"),
):
    options.categories.register_category(_category_id, _label)

options_templates = {}
options_templates.update(
    options.options_section(
        ("saving-paths", "Paths for saving", "saving"),
        {
            "outdir_img2img_samples": OptionInfo(
                os.path.join(default_output_dir, "img2img-images"), "Output directory for img2img images"
            ),
            "outdir_img2img_grids": OptionInfo(
                os.path.join(default_output_dir, "img2img-grids"), "Output directory for img2img grids"
            ),
        },
    )
)
options_templates.update(
    options.options_section(
        ("sd", "Stable Diffusion", "sd"),
        {
            "sd_model_checkpoint": OptionInfo(None, "Stable Diffusion Checkpoint"),
        },
    )
)
opts = options.Options(options_templates, set())

state = shared_state.State()

sd_model = None


class _TotalTQDM:
    """Stands in for shared_total_tqdm.TotalTQDM (the console's total progress bar)."""

    def __init__(self):
        self._clears = 0  # test hook

    def clear(self):
        self._clears += 1


total_tqdm = _TotalTQDM()
