"""TEST DOUBLE of Forge's `lib_controlnet.global_state` (tag `previous`, the same as on main for these names).

As upstream: names are "name [hash]" plus the placeholder "None", refreshed by
update_controlnet_filenames(); the identity preprocessor is called "None".
`_files` is the double's list of model files (test hook).
"""

from __future__ import annotations

from collections import OrderedDict

controlnet_filename_dict = {"None": "model.safetensors"}
controlnet_names = ["None"]
supported_preprocessors = OrderedDict([("None", object()), ("canny", object())])
_files: list[str] = []  # test hook: model stems in models/ControlNet


def get_all_controlnet_names():
    return controlnet_names


def get_controlnet_filename(controlnet_name):
    return controlnet_filename_dict[controlnet_name]


def get_all_preprocessor_names():
    return list(supported_preprocessors.keys())


def get_preprocessor(name):
    return supported_preprocessors.get(name, None)


def update_controlnet_filenames():
    global controlnet_filename_dict, controlnet_names
    controlnet_filename_dict = {"None": "model.safetensors"}
    for stem in _files:
        controlnet_filename_dict[f"{stem} [{abs(hash(stem)) % 16**8:08x}]"] = f"models/ControlNet/{stem}.safetensors"
    controlnet_names = list(controlnet_filename_dict.keys())
