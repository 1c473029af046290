"""TEST DOUBLE of modules/script_loading.py (A1111 v1.10.1): how the WebUI executes scripts/*.py.

A script file becomes a module named after its file name, not registered in sys.modules.
"""

import importlib.util
import os

loaded_scripts = {}


def load_module(path):
    module_spec = importlib.util.spec_from_file_location(os.path.basename(path), path)
    module = importlib.util.module_from_spec(module_spec)
    module_spec.loader.exec_module(module)
    loaded_scripts[path] = module
    return module
