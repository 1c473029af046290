"""TEST DOUBLE of Forge's always-on ControlNet script before the August 2024 rewrite (tag `previous`).

As upstream get_input_data: the unit image is read as `unit.image['image']` and
`unit.image['mask']` (an array image fails), `(image < 5).all() and (mask > 5).any()`
picks the mask, and the model must be a name global_state lists.
"""

from __future__ import annotations

import numpy as np
from lib_controlnet import external_code, global_state
from lib_controlnet.external_code import ControlNetUnit
from modules import scripts, shared


class ControlNetForForgeOfficial(scripts.Script):
    sorting_priority = 10

    def title(self):
        return "ControlNet"

    def show(self, is_img2img):
        return scripts.AlwaysVisible

    def ui(self, is_img2img):
        max_models = shared.opts.data.get("control_net_unit_count", 3)
        return tuple(
            scripts._Control(ControlNetUnit(enabled=False, module="None", model="None")) for _ in range(max_models)
        )

    def get_enabled_units(self, units):
        units = [ControlNetUnit.from_dict(unit) if isinstance(unit, dict) else unit for unit in units]
        assert all(isinstance(unit, ControlNetUnit) for unit in units)
        return [x for x in units if x.enabled]

    def process(self, p, *args, **kwargs):
        enabled = self.get_enabled_units(args)
        for unit in enabled:
            assert unit.model != "None", "You have not selected any control model!"
            global_state.get_controlnet_filename(unit.model)
            assert global_state.get_preprocessor(unit.module) is not None, unit.module
            external_code.resize_mode_from_value(unit.resize_mode)
            external_code.control_mode_from_value(unit.control_mode)
            if unit.image is None:
                raise ValueError("controlnet is enabled but no input image is given")
            elif (unit.image["image"] < 5).all() and (unit.image["mask"] > 5).any():
                image = unit.image["mask"]
            else:
                image = unit.image["image"]
            if not isinstance(image, np.ndarray):
                raise ValueError("controlnet is enabled but no input image is given")
        p._controlnet_units = enabled
