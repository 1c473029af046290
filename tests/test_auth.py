"""vidstyle.auth: the one `user:password` parser and credential check."""

from __future__ import annotations

import pytest

from vidstyle.auth import credentials_match, parse_auth, parse_credential_list
from vidstyle.errors import UserInputError


def test_parse_auth_for_our_own_flags_is_strict() -> None:
    assert parse_auth("a:b:c", "--auth") == ("a", "b:c")  # the password may hold ':'
    assert parse_auth("a:", "--auth") == ("a", "")
    assert parse_auth(None, "--auth") is None
    for bad in ("nocolon", ":pw", ""):
        with pytest.raises(UserInputError, match="^--auth must look like user:password.$"):
            parse_auth(bad, "--auth")


def test_parse_auth_for_a_login_we_pass_on_is_lenient() -> None:
    assert parse_auth("ann:pa:ss") == ("ann", "pa:ss")
    assert parse_auth("nocolon") == ("nocolon", "")
    assert parse_auth("") is None and parse_auth(None) is None


def test_webui_api_auth_list() -> None:
    assert parse_credential_list("a:1,b:2:3") == {"a": "1", "b": "2:3"}
    assert parse_credential_list("a:1,,a:2") == {"a": "2"}  # as the WebUI: the later pair wins
    assert parse_credential_list(None) == {}


def test_credentials_match_needs_both_parts_of_one_pair() -> None:
    known = [("ann", "x"), ("bob", "y")]
    assert credentials_match("bob", "y", known)
    assert not credentials_match("ann", "y", known)  # user of one pair, password of another
    assert not credentials_match("", "", known)
    assert not credentials_match("ann", "x", [])
