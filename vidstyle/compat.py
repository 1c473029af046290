"""Import shim: one pydantic API (the v1 one) on both pydantic 1.10 and 2.x.

Inside the WebUI, sd-webui-controlnet pins pydantic 1.10.x; standalone installs get 2.x.
pydantic 2 ships the v1 API as `pydantic.v1` (and 1.10.17+ ships the same alias), so every
model in this project is written once against that surface.
"""

from __future__ import annotations

try:  # pydantic >= 1.10.17 (both major versions) expose the v1 API here
    from pydantic.v1 import (  # type: ignore[no-redef]
        BaseModel,
        Extra,
        Field,
        ValidationError,
        root_validator,
        validator,
    )
except ImportError:  # pragma: no cover - pydantic 1.10 before .17
    from pydantic import (  # type: ignore[no-redef,assignment]
        BaseModel,
        Extra,
        Field,
        ValidationError,
        root_validator,
        validator,
    )

try:
    import tomllib  # Python 3.11+
except ModuleNotFoundError:  # pragma: no cover - Python 3.10 (the WebUI's)
    import tomli as tomllib  # type: ignore[no-redef]

__all__ = [
    "BaseModel",
    "Extra",
    "Field",
    "ValidationError",
    "root_validator",
    "validator",
    "tomllib",
    "describe_validation_error",
]


def describe_validation_error(err: ValidationError, what: str) -> str:
    """Turn a pydantic error into one sentence that names the bad key and value."""
    first = err.errors()[0]
    location = ".".join(str(part) for part in first["loc"] if part != "__root__")
    message = first["msg"]
    if first["type"] == "value_error.extra":
        return f"{what}: unknown setting '{location}' (check its spelling and section)."
    if location:
        return f"{what}: invalid value for '{location}': {message}."
    return f"{what}: {message}."
