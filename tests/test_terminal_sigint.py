"""Ctrl-C around a render in a terminal (`vidstyle stylize`, `vidstyle demo`): the first SIGINT
cancels the job cleanly, and a SIGINT the process was started to ignore (a background job of a
shell script) stays ignored, since a Ctrl-C typed then is meant for the foreground command."""

from __future__ import annotations

import signal
from collections.abc import Iterator
from typing import Any

import pytest

import vidstyle.render
from vidstyle.terminal import run_in_terminal


class _Stop(Exception):
    pass


@pytest.fixture
def seen(monkeypatch: pytest.MonkeyPatch) -> dict[str, Any]:
    """run_job replaced by a probe: records the SIGINT disposition during the run and its cancel token."""
    record: dict[str, Any] = {}

    def probe(job: Any, **options: Any) -> None:
        record["handler"] = signal.getsignal(signal.SIGINT)
        record["cancel"] = options["cancel"]
        raise _Stop

    monkeypatch.setattr(vidstyle.render, "run_job", probe)
    return record


@pytest.fixture
def restore_sigint() -> Iterator[None]:
    previous = signal.getsignal(signal.SIGINT)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)


def test_first_ctrl_c_cancels_the_job(seen: dict[str, Any], restore_sigint: None) -> None:
    signal.signal(signal.SIGINT, signal.default_int_handler)
    with pytest.raises(_Stop):
        run_in_terminal(object(), quiet=True)
    handler = seen["handler"]
    assert callable(handler) and handler is not signal.default_int_handler
    handler(signal.SIGINT, None)
    assert seen["cancel"].cancelled
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler  # a second Ctrl-C is immediate


def test_ignored_sigint_stays_ignored(seen: dict[str, Any], restore_sigint: None) -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    with pytest.raises(_Stop):
        run_in_terminal(object(), quiet=True)
    assert seen["handler"] is signal.SIG_IGN
    assert signal.getsignal(signal.SIGINT) is signal.SIG_IGN
