"""TEST DOUBLE of modules/sd_schedulers.py (A1111 v1.10.1): schedule types (WebUI 1.9+).

Same names, labels and aliases as upstream; the sigma functions are left out (None).
"""

import dataclasses


@dataclasses.dataclass
class Scheduler:
    name: str
    label: str
    function: any

    default_rho: float = -1
    need_inner_model: bool = False
    aliases: list = None


schedulers = [
    Scheduler("automatic", "Automatic", None),
    Scheduler("uniform", "Uniform", None, need_inner_model=True),
    Scheduler("karras", "Karras", None, default_rho=7.0),
    Scheduler("exponential", "Exponential", None),
    Scheduler("sgm_uniform", "SGM Uniform", None, need_inner_model=True, aliases=["SGMUniform"]),
]
schedulers_map = {**{x.name: x for x in schedulers}, **{x.label: x for x in schedulers}}
