"""The one filename sanitiser: turn any text into a safe file or folder name.

Rule set (every caller, differing only in the documented parameters):
- every run of characters outside ``[A-Za-z0-9_-]`` (plus ``.`` when ``keep_dots``, plus any
  Unicode letter or digit when ``unicode``) becomes one ``sep``;
- ``-``, ``_`` and ``.`` are trimmed from both ends, so a name is never hidden (``.x``),
  never ``..`` and never starts with an option-like ``-``;
- the result is cut to ``max_len`` characters; an empty result becomes ``fallback``.
"""

from __future__ import annotations

import re
from functools import cache
from re import Pattern

_TRIM = "-_."


@cache
def _unsafe(keep_dots: bool, unicode: bool) -> Pattern[str]:
    word = r"\w" if unicode else "A-Za-z0-9_"
    return re.compile(f"[^{word}{'.' if keep_dots else ''}-]+")


def safe_name(
    text: str,
    *,
    sep: str = "-",
    keep_dots: bool = True,
    unicode: bool = False,
    max_len: int | None = None,
    fallback: str = "",
) -> str:
    """A file-name-safe slug of `text` by the module's rule set (`fallback` when nothing is left)."""
    slug = _unsafe(keep_dots, unicode).sub(sep, text).strip(_TRIM)
    if max_len is not None:
        slug = slug[:max_len]
    return slug or fallback
