"""TEST DOUBLE of modules/paths_internal.py (A1111 v1.10.1): the WebUI's folders.

Upstream derives them from --data-dir (default: the WebUI folder); here the WebUI folder is
the double's own folder. Tests monkeypatch `data_path` to a temporary folder.
"""

import os

modules_path = os.path.dirname(os.path.realpath(__file__))
script_path = os.path.dirname(modules_path)
data_path = script_path
models_path = os.path.join(data_path, "models")
extensions_dir = os.path.join(data_path, "extensions")
default_output_dir = os.path.join(data_path, "outputs")
