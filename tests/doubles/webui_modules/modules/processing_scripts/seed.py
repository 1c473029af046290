"""TEST DOUBLE of modules/processing_scripts/seed.py (A1111 v1.10.1): the built-in Seed script.

Like upstream, setup() would set p.seed to the tab's Seed box (-1: random) for UI requests.
"""

from modules import scripts


class ScriptSeed(scripts.ScriptBuiltinUI):
    section = "seed"

    def title(self):
        return "Seed"

    def ui(self, is_img2img):
        return (
            scripts._Control(-1),
            scripts._Control(False),
            scripts._Control(-1),
            scripts._Control(0.0),
            scripts._Control(0),
            scripts._Control(0),
        )

    def setup(self, p, seed, seed_checkbox, subseed, subseed_strength, seed_resize_from_w, seed_resize_from_h):
        p.seed = seed
        if seed_checkbox and subseed_strength > 0:
            p.subseed = subseed
            p.subseed_strength = subseed_strength
        if seed_checkbox and seed_resize_from_w > 0 and seed_resize_from_h > 0:
            p.seed_resize_from_w = seed_resize_from_w
            p.seed_resize_from_h = seed_resize_from_h
