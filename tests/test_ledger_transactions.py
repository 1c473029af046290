"""The ledger's multi-statement changes apply together or not at all (issue 10, item 7).

A failure is injected inside SQLite itself: a trigger that aborts the second statement of
the change, as a full disk or a crash between the two statements would.
"""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from vidstyle.ledger import Ledger


def _abort_on(ledger: Ledger, event: str, table: str) -> None:
    ledger.db.execute(
        f"CREATE TRIGGER injected_failure BEFORE {event} ON {table} BEGIN SELECT RAISE(ABORT, 'injected failure'); END"
    )


def _fresh(path: Path) -> Ledger:
    ledger = Ledger(path)
    ledger.add_frames([(i, i, i / 30) for i in range(3)])
    return ledger


def test_journal_is_wal(tmp_path: Path) -> None:
    ledger = Ledger(tmp_path / "ledger.sqlite")
    assert ledger.db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    ledger.close()


def test_mark_done_failing_half_way_leaves_the_frame_pending(tmp_path: Path) -> None:
    path = tmp_path / "ledger.sqlite"
    ledger = _fresh(path)
    _abort_on(ledger, "INSERT", "attempts")  # the second of mark_done's two statements
    with pytest.raises(sqlite3.DatabaseError, match="injected failure"):
        ledger.mark_done(1, seed=5, backend="x", render_ms=1.0, info={})
    assert not ledger.db.in_transaction
    ledger.close()

    again = Ledger(path)  # what another process (or a restart) reads
    row = again.frame(1)
    assert (row.status, row.seed, row.backend) == ("pending", None, None)
    assert again.attempts(1) == []
    assert again.todo() == [0, 1, 2]
    again.close()


def test_start_redo_failing_half_way_keeps_the_done_frame(tmp_path: Path) -> None:
    path = tmp_path / "ledger.sqlite"
    ledger = _fresh(path)
    ledger.mark_done(2, seed=5, backend="x", render_ms=1.0, info={})
    _abort_on(ledger, "UPDATE", "frames")  # runs after the attempts row was marked as kept
    with pytest.raises(sqlite3.DatabaseError, match="injected failure"):
        ledger.start_redo(2, {"sampling.denoise": 0.2}, kept_as="history/000002_a0.png")
    ledger.close()

    again = Ledger(path)
    assert again.frame(2).status == "done"
    assert again.attempts(2)[0]["kept_as"] is None
    again.close()


def test_several_meta_keys_apply_together(tmp_path: Path) -> None:
    path = tmp_path / "ledger.sqlite"
    ledger = _fresh(path)
    ledger.set_metas({"manager_state": "running", "manager_message": ""})
    ledger.db.execute(
        "CREATE TRIGGER injected_failure BEFORE INSERT ON meta WHEN NEW.key = 'manager_message' "
        "BEGIN SELECT RAISE(ABORT, 'injected failure'); END"
    )
    with pytest.raises(sqlite3.DatabaseError, match="injected failure"):
        ledger.set_metas({"manager_state": "failed", "manager_message": "boom"})
    assert ledger.get_meta("manager_state") == "running"
    ledger.close()


def test_a_second_writer_waits_instead_of_interleaving(tmp_path: Path) -> None:
    path = tmp_path / "ledger.sqlite"
    first = _fresh(path)
    second = Ledger(path)
    second.db.execute("PRAGMA busy_timeout = 0")
    with first.transaction():
        first.db.execute("UPDATE frames SET status='failed' WHERE idx=0")
        # IMMEDIATE: the write lock is taken at BEGIN, so the other connection cannot start a change now
        with pytest.raises(sqlite3.OperationalError, match="locked"):
            second.mark_done(0, seed=1, backend="x", render_ms=1.0, info={})
    assert second.frame(0).status == "failed"
    first.close()
    second.close()
