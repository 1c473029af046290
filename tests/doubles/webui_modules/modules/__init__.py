"""TEST DOUBLE of the AUTOMATIC1111 WebUI's `modules` package (stable-diffusion-webui v1.10.1).

Not the WebUI: it runs no model. Each module implements only the names Vidstyle's glue
(scripts/vidstyle.py) and in-process backend (vidstyle/backends/webui_local.py) use, with
the same module paths, signatures and semantics as upstream v1.10.1 (commit
82a973c04367123ae98bd9abdf80d9eda9b910e2); a /tmp check script compared them with `ast`
(see docs/webui-compat.md). Names starting with an underscore are the double's own test
hooks and do not exist upstream.

Tests put tests/doubles/webui_modules first on sys.path so `import modules` finds this
package, exactly as the WebUI's own folder is on sys.path when it runs extensions.
"""
