"""TEST DOUBLE of modules/processing_scripts/sampler.py (A1111 v1.10.1): the built-in Sampler script.

Its setup() copies the img2img tab's widgets onto p, but only for UI requests
(setup_for_ui_only): an API-style request (p.is_api) keeps its own sampler and steps.
"""

from modules import scripts


class ScriptSampler(scripts.ScriptBuiltinUI):
    section = "sampler"

    def title(self):
        return "Sampler"

    def ui(self, is_img2img):
        # Upstream widget defaults: Sampling steps 20, the first visible sampler, schedule "Automatic".
        return scripts._Control(20), scripts._Control("DPM++ 2M"), scripts._Control("Automatic")

    def setup(self, p, steps, sampler_name, scheduler):
        p.steps = steps
        p.sampler_name = sampler_name
        p.scheduler = scheduler
