"""Modules that used to import each other no longer do (not even inside functions or under TYPE_CHECKING)."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def imported_modules(module: str) -> set[str]:
    """Every module `module` imports anywhere in its source, as dotted names ('from . import x' gives pkg.x)."""
    path = ROOT / (module.replace(".", "/") + ".py")
    package = module.rsplit(".", 1)[0]
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parts = package.split(".")
                anchor = ".".join(parts[: len(parts) - node.level + 1])
                base = f"{anchor}.{base}" if base else anchor
            found.add(base)
            found.update(f"{base}.{alias.name}" for alias in node.names)
    return found


@pytest.mark.parametrize(
    "first, second",
    [("vidstyle.cli", "vidstyle.demo"), ("trainer.dataset", "trainer.prep_report")],
)
def test_no_import_circle(first: str, second: str) -> None:
    assert not (second in imported_modules(first) and first in imported_modules(second))


def test_the_helper_sees_function_level_and_relative_imports() -> None:
    # cli runs the demo through a function-level `from .demo import run_demo`.
    assert "vidstyle.demo" in imported_modules("vidstyle.cli")
    assert "trainer.prep_report" in imported_modules("trainer.dataset")
