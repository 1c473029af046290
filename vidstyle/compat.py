"""Import shim: one pydantic API (the v1 one) on both pydantic 1.10 and 2.x.

Inside the WebUI, sd-webui-controlnet pins pydantic 1.10.x; standalone installs get 2.x.
pydantic 2 ships the v1 API as `pydantic.v1` (and 1.10.17+ ships the same alias), so every
model in this project is written once against that surface.
"""

from __future__ import annotations

import sys

try:  # pydantic >= 1.10.17 (both major versions) expose the v1 API here
    from pydantic.v1 import (
        BaseModel,
        Extra,
        Field,
        SecretStr,
        ValidationError,
        root_validator,
        validator,
    )
except ImportError:  # pragma: no cover - pydantic 1.10 before .17
    from pydantic import (  # type: ignore[no-redef,assignment]
        BaseModel,
        Extra,
        Field,
        SecretStr,
        ValidationError,
        root_validator,
        validator,
    )

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - Python 3.10 (the WebUI's)
    import tomli as tomllib

__all__ = [
    "BaseModel",
    "Extra",
    "Field",
    "SecretStr",
    "ValidationError",
    "root_validator",
    "validator",
    "tomllib",
]
