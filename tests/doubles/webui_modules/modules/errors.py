"""TEST DOUBLE of modules/errors.py (A1111 v1.10.1): report() prints to stderr, as upstream."""

from __future__ import annotations

import sys
import traceback

_reported: list[str] = []  # test hook: every message report() printed


def report(message: str, *, exc_info: bool = False) -> None:
    """Print an error message to stderr, with optional traceback."""
    text = message
    if exc_info:
        text += "\n" + traceback.format_exc()
    _reported.append(text)
    print(text, file=sys.stderr)
