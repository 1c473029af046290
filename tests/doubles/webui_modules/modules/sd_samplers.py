"""TEST DOUBLE of modules/sd_samplers.py (A1111 v1.10.1): the sampler table.

The names, aliases and options are upstream's (sd_samplers_kdiffusion.samplers_k_diffusion,
sd_samplers_timesteps, sd_samplers_lcm) for the samplers our presets use; the constructor
slot is None because the double samples nothing.
"""

from collections import namedtuple

SamplerData = namedtuple("SamplerData", ["name", "constructor", "aliases", "options"])

all_samplers = [
    SamplerData("DPM++ 2M", None, ["k_dpmpp_2m"], {"scheduler": "karras"}),
    SamplerData(
        "DPM++ SDE", None, ["k_dpmpp_sde"], {"scheduler": "karras", "second_order": True, "brownian_noise": True}
    ),
    SamplerData("Euler a", None, ["k_euler_a", "k_euler_ancestral"], {"uses_ensd": True}),
    SamplerData("Euler", None, ["k_euler"], {}),
    SamplerData("DDIM", None, ["ddim"], {}),
    SamplerData("UniPC", None, ["unipc"], {}),
]
all_samplers_map = {x.name: x for x in all_samplers}
