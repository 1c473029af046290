"""The frame ledger: one SQLite row per frame, one per attempt.

SQLite (WAL) is the crash-safe record of what is done: a frame counts as done only after
its PNG was renamed into place and its row committed, so a crash loses at most the frames
in flight. Only the render loop's main thread writes; worker threads never touch it.
A change of several statements (a frame done and its attempt row) is one transaction,
so a failure half-way leaves the ledger as it was.
"""

from __future__ import annotations

import contextlib
import json
import sqlite3
import time
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .errors import JobStateError

SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS frames (
    idx INTEGER PRIMARY KEY,
    source_index INTEGER NOT NULL,
    time REAL NOT NULL,
    status TEXT NOT NULL DEFAULT 'pending' CHECK (status IN ('pending', 'done', 'failed')),
    attempt INTEGER NOT NULL DEFAULT 0,
    overrides TEXT NOT NULL DEFAULT '{}',
    seed INTEGER,
    backend TEXT,
    render_ms REAL,
    finished_at REAL,
    info TEXT,
    error TEXT,
    scores TEXT
);
CREATE INDEX IF NOT EXISTS frames_status ON frames (status, idx);
CREATE TABLE IF NOT EXISTS attempts (
    idx INTEGER NOT NULL,
    attempt INTEGER NOT NULL,
    overrides TEXT NOT NULL,
    seed INTEGER,
    backend TEXT,
    render_ms REAL,
    finished_at REAL,
    kept_as TEXT,
    scores TEXT,
    PRIMARY KEY (idx, attempt)
);
"""
# Columns added after ledgers were first written: (table, column, SQL type). Opening an older
# ledger adds them, so a job from an earlier version resumes, redoes and repairs as a new one.
ADDED_COLUMNS = (("frames", "scores", "TEXT"), ("attempts", "scores", "TEXT"))


@dataclass
class FrameRow:
    idx: int
    source_index: int
    time: float
    status: str
    attempt: int
    overrides: dict[str, Any]
    seed: int | None
    backend: str | None
    render_ms: float | None
    info: dict[str, Any]
    error: str | None


class Ledger:
    def __init__(self, path: Path) -> None:
        self.path = path
        try:
            # isolation_level=None: the sqlite3 module starts no transactions of its own (in that
            # mode `with db:` is not one), so every multi-statement change goes through
            # transaction(), which says BEGIN IMMEDIATE ... COMMIT / ROLLBACK itself.
            self.db = sqlite3.connect(str(path), timeout=5.0, isolation_level=None)
            self.db.execute("PRAGMA journal_mode=WAL")
            # NORMAL in WAL mode is durable across application crashes; only a power loss
            # can drop the newest commits, and those frames are simply rendered again.
            self.db.execute("PRAGMA synchronous=NORMAL")
            self.db.executescript(SCHEMA)
            self._migrate()
        except sqlite3.DatabaseError as exc:
            raise JobStateError(f"The job ledger {path} is unreadable ({exc}); the job folder is damaged.") from None

    def _migrate(self) -> None:
        for table, column, kind in ADDED_COLUMNS:
            present = {row[1] for row in self.db.execute(f"PRAGMA table_info({table})")}
            if column not in present:
                self.db.execute(f"ALTER TABLE {table} ADD COLUMN {column} {kind}")

    def close(self) -> None:
        self.db.close()

    @contextlib.contextmanager
    def transaction(self) -> Iterator[None]:
        """All statements inside apply together or not at all.

        IMMEDIATE takes the write lock up front, so a second writer (another process on the
        same job) waits for the busy timeout instead of failing half-way. Nested use joins
        the outer transaction.
        """
        if self.db.in_transaction:
            yield
            return
        self.db.execute("BEGIN IMMEDIATE")
        try:
            yield
        except BaseException:
            if self.db.in_transaction:  # some errors (disk full, I/O) make SQLite roll back by itself
                self.db.execute("ROLLBACK")
            raise
        self.db.execute("COMMIT")

    # -- meta -------------------------------------------------------------------------
    def get_meta(self, key: str, default: Any = None) -> Any:
        row = self.db.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
        return json.loads(row[0]) if row else default

    def set_meta(self, key: str, value: Any) -> None:
        self.set_metas({key: value})

    def set_metas(self, values: dict[str, Any]) -> None:
        """Several meta keys in one transaction (e.g. a state and the message that explains it)."""
        with self.transaction():
            self.db.executemany(
                "INSERT OR REPLACE INTO meta (key, value) VALUES (?, ?)",
                [(key, json.dumps(value)) for key, value in values.items()],
            )

    # -- frames -----------------------------------------------------------------------
    def add_frames(self, rows: Iterable[Sequence[Any]]) -> None:
        """Insert (idx, source_index, time) rows; existing frames are left as they are."""
        with self.transaction():
            self.db.executemany("INSERT OR IGNORE INTO frames (idx, source_index, time) VALUES (?, ?, ?)", list(rows))

    def frame_count(self) -> int:
        return int(self.db.execute("SELECT COUNT(*) FROM frames").fetchone()[0])

    def counts(self) -> dict[str, int]:
        counts = {"pending": 0, "done": 0, "failed": 0}
        for status, n in self.db.execute("SELECT status, COUNT(*) FROM frames GROUP BY status"):
            counts[status] = int(n)
        return counts

    def todo(self) -> list[int]:
        """Frames still to render: pending first, then earlier failures, in index order."""
        rows = self.db.execute("SELECT idx FROM frames WHERE status != 'done' ORDER BY idx")
        return [int(r[0]) for r in rows]

    def frame(self, idx: int) -> FrameRow:
        row = self.db.execute(
            "SELECT idx, source_index, time, status, attempt, overrides, seed, backend, render_ms, info, error "
            "FROM frames WHERE idx = ?",
            (idx,),
        ).fetchone()
        if row is None:
            raise JobStateError(f"Frame {idx} is not part of this job.")
        return FrameRow(
            idx=row[0],
            source_index=row[1],
            time=row[2],
            status=row[3],
            attempt=row[4],
            overrides=json.loads(row[5]),
            seed=row[6],
            backend=row[7],
            render_ms=row[8],
            info=json.loads(row[9]) if row[9] else {},
            error=row[10],
        )

    def frames(self) -> list[FrameRow]:
        return [self.frame(int(r[0])) for r in self.db.execute("SELECT idx FROM frames ORDER BY idx")]

    def mark_done(self, idx: int, seed: int, backend: str, render_ms: float, info: dict[str, Any]) -> None:
        now = time.time()
        with self.transaction():
            self.db.execute(
                "UPDATE frames SET status='done', seed=?, backend=?, render_ms=?, finished_at=?, info=?, error=NULL "
                "WHERE idx=?",
                (seed, backend, render_ms, now, json.dumps(info, default=str), idx),
            )
            self.db.execute(
                "INSERT OR REPLACE INTO attempts (idx, attempt, overrides, seed, backend, render_ms, finished_at) "
                "SELECT idx, attempt, overrides, ?, ?, ?, ? FROM frames WHERE idx=?",
                (seed, backend, render_ms, now, idx),
            )

    def mark_failed(self, idx: int, error: str) -> None:
        with self.transaction():
            self.db.execute("UPDATE frames SET status='failed', error=? WHERE idx=?", (error, idx))

    def start_redo(self, idx: int, overrides: dict[str, Any], kept_as: str | None) -> int:
        """Open a new attempt for a frame; the previous attempt's file is recorded as kept."""
        with self.transaction():
            current = self.frame(idx)
            if current.status == "done":
                self.db.execute(
                    "UPDATE attempts SET kept_as=? WHERE idx=? AND attempt=?", (kept_as, idx, current.attempt)
                )
            # After repair kept an earlier attempt, later attempt numbers are taken: never reuse one
            # (its row and its history/ file would be overwritten).
            highest = self.db.execute("SELECT MAX(attempt) FROM attempts WHERE idx=?", (idx,)).fetchone()[0]
            latest = max(current.attempt, -1 if highest is None else int(highest))
            attempt = latest + 1 if current.status == "done" else current.attempt
            self.db.execute(
                "UPDATE frames SET status='pending', attempt=?, overrides=?, error=NULL WHERE idx=?",
                (attempt, json.dumps(overrides), idx),
            )
        return attempt

    def set_scores(self, idx: int, scores: dict[str, float]) -> None:
        with self.transaction():
            self.db.execute("UPDATE frames SET scores=? WHERE idx=?", (json.dumps(scores), idx))

    def attempts(self, idx: int) -> list[dict[str, Any]]:
        """Every rendered attempt of a frame; `scores` is the parsed JSON (None before scoring)."""
        cursor = self.db.execute(
            "SELECT attempt, overrides, seed, backend, render_ms, kept_as, scores FROM attempts WHERE idx=? ORDER BY "
            "attempt",
            (idx,),
        )
        keys = ("attempt", "overrides", "seed", "backend", "render_ms", "kept_as", "scores")
        rows = [dict(zip(keys, row, strict=True)) for row in cursor]
        for row in rows:
            row["scores"] = json.loads(row["scores"]) if row["scores"] else None
        return rows

    def set_attempt_scores(self, idx: int, attempt: int, scores: dict[str, Any]) -> None:
        with self.transaction():
            self.db.execute(
                "UPDATE attempts SET scores=? WHERE idx=? AND attempt=?", (json.dumps(scores), idx, attempt)
            )

    def set_kept_as(self, idx: int, attempt: int, kept_as: str) -> None:
        with self.transaction():
            self.db.execute("UPDATE attempts SET kept_as=? WHERE idx=? AND attempt=?", (kept_as, idx, attempt))

    def all_scores(self) -> dict[int, tuple[int, dict[str, Any]]]:
        """{frame: (attempt, scores)} for every frame that has scores."""
        cursor = self.db.execute("SELECT idx, attempt, scores FROM frames WHERE scores IS NOT NULL ORDER BY idx")
        return {int(idx): (int(attempt), json.loads(text)) for idx, attempt, text in cursor}

    def keep_attempt(self, idx: int, attempt: int) -> None:
        """Make an earlier rendered attempt the frame's current one (its file is already in out/)."""
        with self.transaction():
            found = self.db.execute(
                "SELECT overrides, seed, backend, render_ms, finished_at, scores FROM attempts WHERE idx=? AND "
                "attempt=?",
                (idx, attempt),
            ).fetchone()
            if found is None:
                raise JobStateError(f"Frame {idx} has no attempt {attempt} to keep.")
            self.db.execute(
                "UPDATE frames SET status='done', attempt=?, overrides=?, seed=?, backend=?, render_ms=?, "
                "finished_at=?, "
                "scores=?, error=NULL WHERE idx=?",
                (attempt, *found, idx),
            )
