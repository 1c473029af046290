"""The layers of docs/architecture.md, enforced: the engine core imports neither gradio nor the
WebUI's `modules`, and the heavy optional packages (torch, diffusers, ...) only inside functions.

The core is every module of `vidstyle` and `trainer` except the gradio tab (vidstyle/ui.py)
and the in-process WebUI backend (vidstyle/backends/webui_local.py). The WebUI runs our
engine in its own process, and the WebUI-pins environment has no torch: the core must import
there, and must not drag gradio or `modules` into a CLI or a server that never asked for them.
"""

from __future__ import annotations

import ast
import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("vidstyle", "trainer")
# Outside the core: the one gradio module and the one module that touches the WebUI's `modules`.
NOT_CORE = {"vidstyle.ui", "vidstyle.backends.webui_local"}
# Never imported by the core, not even inside a function...
FORBIDDEN = {"gradio", "modules"}
# ...except by the host that starts the standalone tab (`vidstyle ui`), which needs gradio's queue.
FORBIDDEN_ALLOWED_LAZILY = {"vidstyle.standalone": {"gradio"}}
# Optional extras the core may import only when a function needs them (never at import time).
LAZY_ONLY = {"torch", "diffusers", "transformers", "ray", "onnxruntime"}


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def core_modules() -> dict[str, Path]:
    found = {}
    for package in PACKAGES:
        for path in sorted((ROOT / package).rglob("*.py")):
            name = module_name(path)
            if name not in NOT_CORE:
                found[name] = path
    return found


def imported_packages(node: ast.stmt) -> set[str]:
    """Top-level package names an import statement brings in (relative imports are our own)."""
    if isinstance(node, ast.Import):
        return {alias.name.split(".")[0] for alias in node.names}
    if isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
        return {node.module.split(".")[0]}
    return set()


def is_type_checking_block(node: ast.stmt) -> bool:
    test = node.test if isinstance(node, ast.If) else None
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def guards_import_error(node: ast.stmt) -> bool:
    """`try: import x` / `except ImportError:`: an optional package, absent in some environments."""
    names = {"ImportError", "ModuleNotFoundError"}
    for handler in getattr(node, "handlers", []):
        caught = handler.type.elts if isinstance(handler.type, ast.Tuple) else [handler.type]
        if any(isinstance(kind, ast.Name) and kind.id in names for kind in caught):
            return True
    return False


def import_time_imports(body: list[ast.stmt], guarded: bool = False) -> set[tuple[str, bool]]:
    """(package, guarded) for what importing the module imports: module level, also inside
    if/try/with and class bodies, but not inside functions or `if TYPE_CHECKING:` blocks.
    `guarded`: inside a `try` that catches ImportError (the module still imports without it)."""
    found: set[tuple[str, bool]] = set()
    for node in body:
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            continue
        if is_type_checking_block(node):
            found |= import_time_imports(getattr(node, "orelse", []), guarded)
            continue
        found |= {(package, guarded) for package in imported_packages(node)}
        inner = guarded or (isinstance(node, ast.Try) and guards_import_error(node))
        for field in ("body", "orelse", "finalbody", "handlers"):
            children = getattr(node, field, None)
            if isinstance(children, list):
                for child in children:
                    nested = child.body if isinstance(child, ast.ExceptHandler) else [child]
                    found |= import_time_imports(nested, inner if field == "body" else guarded)
    return found


def any_imports(tree: ast.Module) -> set[str]:
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            found |= imported_packages(node)
    return found


def test_the_core_is_found() -> None:
    modules = core_modules()
    # Fails loudly if the walk breaks (a test that checks nothing would pass forever).
    assert {"vidstyle.render", "vidstyle.job", "vidstyle.backends.base", "trainer.launch"} <= set(modules)
    assert not NOT_CORE & set(modules)


@pytest.mark.parametrize("name", sorted(core_modules()))
def test_core_module_imports_no_gradio_or_webui_and_heavy_extras_lazily(name: str) -> None:
    path = core_modules()[name]
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    forbidden = (any_imports(tree) & FORBIDDEN) - FORBIDDEN_ALLOWED_LAZILY.get(name, set())
    assert not forbidden, (
        f"{name} imports {sorted(forbidden)}; only vidstyle/ui.py (gradio) and "
        "vidstyle/backends/webui_local.py (the WebUI's modules) may"
    )
    # An extra imported at import time must at least be optional (try/except ImportError), so the
    # module imports where it is absent; gradio and `modules` not even that way.
    at_import = {
        package
        for package, guarded in import_time_imports(tree.body)
        if package in FORBIDDEN or (package in LAZY_ONLY and not guarded)
    }
    assert not at_import, (
        f"{name} imports {sorted(at_import)} at import time; import it inside the function that needs it"
    )


IMPORT_ALL = """
import importlib, json, sys
for blocked in {blocked!r}:
    sys.modules[blocked] = None  # `import gradio` now raises ImportError, as where it is absent
failed = {{}}
for name in {names!r}:
    try:
        importlib.import_module(name)
    except BaseException as exc:  # noqa: BLE001  (report every failure, whatever it is)
        failed[name] = f"{{type(exc).__name__}}: {{exc}}"
print(json.dumps(failed))
"""


def test_core_imports_without_gradio_webui_modules_or_torch() -> None:
    # `python -m` entry points run their command when imported; their imports are checked statically.
    names = sorted(name for name in core_modules() if not name.endswith("__main__"))
    script = IMPORT_ALL.format(blocked=sorted(FORBIDDEN | LAZY_ONLY), names=names)
    done = subprocess.run([sys.executable, "-c", script], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    failed = json.loads(done.stdout.strip().splitlines()[-1])
    assert failed == {}, f"core modules that need gradio, the WebUI or torch at import time: {failed}"
