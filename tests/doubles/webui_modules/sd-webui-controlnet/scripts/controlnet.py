"""TEST DOUBLE of sd-webui-controlnet's always-on img2img script (scripts/controlnet.py, v1.1.455).

title() "ControlNet", always visible, one argument slot per unit (control_net_unit_count,
default 3, each a disabled ControlNetUnit until the user enables it); process() takes the
enabled units from its slots (dicts are parsed like API calls) and hands them to the stand-in
model, which paints each unit's image edges into the result.
"""

from __future__ import annotations

from modules import scripts, shared

from scripts import external_code  # as upstream: the WebUI loads the module as scripts.external_code


class Script(scripts.Script):
    def title(self):
        return "ControlNet"

    def show(self, is_img2img):
        return scripts.AlwaysVisible

    def ui(self, is_img2img):
        count = shared.opts.data.get("control_net_unit_count", 3)
        return tuple(scripts._Control(external_code.ControlNetUnit(enabled=False)) for _ in range(count))

    def process(self, p, *args, **kwargs):
        units = [external_code.ControlNetUnit.parse_obj(u) if isinstance(u, dict) else u for u in args]
        assert all(isinstance(u, external_code.ControlNetUnit) for u in units), units
        enabled = [u for u in units if u.enabled]
        for i, unit in enumerate(enabled):
            if unit.image is None:
                raise ValueError("controlnet is enabled but no input image is given")
            p.extra_generation_params[f"ControlNet {i}"] = (
                f"Module: {unit.module}, Model: {unit.model}, Weight: {unit.weight}"
            )
        p._controlnet_units = enabled
