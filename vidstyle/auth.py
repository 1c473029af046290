"""HTTP basic auth text, in one place: `user:password` parsing and credential checks.

Used by the API server (`vidstyle serve --auth`), the standalone UI's login, the WebUI client
(--webui-auth / VIDSTYLE_WEBUI_AUTH) and the WebUI extension's routes (the WebUI's --api-auth).
The routes themselves read the Authorization header with FastAPI's `HTTPBasic`.
"""

from __future__ import annotations

import secrets
from collections.abc import Iterable

from .errors import UserInputError


def parse_auth(text: str | None, flag: str | None = None) -> tuple[str, str] | None:
    """`user:pass` -> (user, pass), split at the first ':' (a password may hold ':'); None stays None.

    With `flag` (the option the text came from, e.g. '--auth') the text must have a user and a ':',
    else a UserInputError names the flag; without it (a login we only pass on, which the other
    side judges) '' is None and a text without ':' is a user with an empty password.
    """
    if text is None or (flag is None and not text):
        return None
    user, sep, password = text.partition(":")
    if flag is not None and (not sep or not user):
        raise UserInputError(f"{flag} must look like user:password.")
    return user, password


def parse_credential_list(text: str | None) -> dict[str, str]:
    """The WebUI's --api-auth as modules/api/api.py reads it: comma-separated `user:password`
    pairs, a later pair for the same user replacing an earlier one."""
    credentials: dict[str, str] = {}
    for pair in (text or "").split(","):
        if pair:
            user, password = parse_auth(pair) or ("", "")
            credentials[user] = password
    return credentials


def credentials_match(user: str, password: str, known: Iterable[tuple[str, str]]) -> bool:
    """True when (user, password) is one of `known`; every pair is compared in constant time,
    with no early exit, so the reply time does not tell which part or which user was right."""
    matched = False
    for known_user, known_password in known:
        ok_user = secrets.compare_digest(user.encode(), known_user.encode())
        ok_pass = secrets.compare_digest(password.encode(), known_password.encode())
        matched = matched or (ok_user and ok_pass)
    return matched
