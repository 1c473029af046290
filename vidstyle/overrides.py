"""Settings from the command line and from TOML files, shared by the `vidstyle` and `trainer` CLIs:
`--set KEY=VALUE` splitting and value parsing, reading a TOML file, and turning a pydantic
validation error into one sentence that names the bad key.
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any

from .compat import ValidationError, tomllib
from .errors import SpecError, UserInputError

# What may stay unquoted in strict mode: a name or path (letters first), never half of a TOML value.
_BARE = re.compile(r"^[A-Za-z_][A-Za-z0-9_.\-/\\: ]*$")


def split_assignment(text: str, flag: str = "--set") -> tuple[str, str]:
    """`KEY=VALUE` -> (KEY, VALUE), both stripped; the value may itself hold '='."""
    key, sep, value = text.partition("=")
    if not sep or not key.strip():
        raise SpecError(f"{flag} takes KEY=VALUE, got '{text}'.")
    return key.strip(), value.strip()


def parse_value(text: str, strict: bool = False) -> Any:
    """A --set value as TOML (30, 1e-4, true, [1, 2], "x"); anything else is taken as a string.

    `strict`: only a bare name or path may stay unquoted; anything else that is not TOML (`{broken`,
    `[1,`) is a UserInputError rather than silently becoming a string.
    """
    try:
        return tomllib.loads(f"v = {text}")["v"]
    except tomllib.TOMLDecodeError:
        if not strict or _BARE.match(text) or text == "":
            return text
        raise UserInputError(f"Cannot read the value {text!r}; quote strings, e.g. key='\"{text}\"'.") from None


def read_toml(path: Path, what: str, missing: str | None = None) -> dict[str, Any]:
    """The table in a TOML file; one sentence naming `what` and the file when it cannot be read.

    `missing`: what to do when the file does not exist (e.g. "run `python -m trainer config` first").
    """
    try:
        with open(path, "rb") as handle:
            table: dict[str, Any] = tomllib.load(handle)
        return table
    except FileNotFoundError as exc:
        if missing is None:
            raise UserInputError(f"Cannot read {what} {path}: {exc.strerror}.") from None
        raise UserInputError(f"{what.capitalize()} {path} does not exist; {missing}.") from None
    except OSError as exc:
        raise UserInputError(f"Cannot read {what} {path}: {exc.strerror}.") from None
    except tomllib.TOMLDecodeError as exc:
        raise SpecError(f"{what.capitalize()} {path} is not valid TOML: {exc}.") from None


def suggest(word: str, choices: Iterable[str]) -> str:
    """ " (did you mean 'x'?)" for the closest of `choices`, or ''."""
    close = difflib.get_close_matches(word, list(choices), n=1, cutoff=0.6)
    return f" (did you mean '{close[0]}'?)" if close else ""


def error_location(loc: Sequence[Any]) -> str:
    """pydantic's ('datasets', 0, 'subsets', 1, 'x') -> 'datasets[0].subsets[1].x'."""
    parts: list[str] = []
    for part in loc:
        if part == "__root__":
            continue
        if isinstance(part, int) and parts:
            parts[-1] = f"{parts[-1]}[{part}]"
        else:
            parts.append(str(part))
    return ".".join(parts)


# (the unknown key's name, its full pydantic location) -> the rest of the sentence after "what: "
ExplainUnknown = Callable[[str, Sequence[Any]], str]

_EXTRA = "value_error.extra"


def describe_validation_error(err: ValidationError, what: str, explain_unknown: ExplainUnknown | None = None) -> str:
    """One sentence naming the first bad key and why: an unknown key, else a bad value.

    An unknown key wins over a missing one, as a misspelled required key causes both.
    `explain_unknown` lets a caller say more about unknown keys (where they belong, a suggestion).
    """
    errors = err.errors()
    first = next((e for e in errors if e["type"] == _EXTRA), errors[0])
    loc = [part for part in first["loc"] if part != "__root__"]
    where = error_location(loc)
    if first["type"] == _EXTRA:
        if explain_unknown is not None:
            return f"{what}: {explain_unknown(str(loc[-1]) if loc else '', loc)}"
        return f"{what}: unknown setting '{where}' (check its spelling and section)."
    if where:
        return f"{what}: invalid value for '{where}': {first['msg']}."
    return f"{what}: {first['msg']}."
