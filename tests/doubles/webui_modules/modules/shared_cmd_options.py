"""TEST DOUBLE of modules/shared_cmd_options.py (A1111 v1.10.1): the parsed command line.

Upstream parses modules/cmd_args.py's parser; here `cmd_opts` holds the defaults of the
arguments Vidstyle reads (same `dest` names and defaults as upstream cmd_args.py).
"""

import argparse

from modules.paths_internal import data_path

cmd_opts = argparse.Namespace(
    api=False,  # --api
    nowebui=False,  # --nowebui
    api_auth=None,  # --api-auth "user:pass[,user2:pass2]"
    port=None,  # --port
    data_dir=data_path,  # --data-dir
    gradio_allowed_path=[data_path],  # --gradio-allowed-path (action='append', default=[data_path])
    freeze_settings=False,  # --freeze-settings
)
