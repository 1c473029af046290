"""The frame ledger: one SQLite row per frame, one per attempt.

SQLite (WAL) is the crash-safe record of what is done: a frame counts as done only after
its PNG was renamed into place and its row committed, so a crash loses at most the frames
in flight. Only the render loop's main thread writes; worker threads never touch it.
"""

from __future__ import annotations

import json
import sqlite3
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, Iterable, List, Optional, Sequence

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
    PRIMARY KEY (idx, attempt)
);
"""


@dataclass
class FrameRow:
    idx: int
    source_index: int
    time: float
    status: str
    attempt: int
    overrides: Dict[str, Any]
    seed: Optional[int]
    backend: Optional[str]
    render_ms: Optional[float]
    info: Dict[str, Any]
    error: Optional[str]


class Ledger:
    def __init__(self, path: Path) -> None:
        self.path = path
        try:
            self.db = sqlite3.connect(str(path), timeout=5.0, isolation_level=None)
            self.db.execute("PRAGMA journal_mode=WAL")
            # NORMAL in WAL mode is durable across application crashes; only a power loss
            # can drop the newest commits, and those frames are simply rendered again.
            self.db.execute("PRAGMA synchronous=NORMAL")
            self.db.executescript(SCHEMA)
        except sqlite3.DatabaseError as exc:
            raise JobStateError(f"The job ledger {path} is unreadable ({exc}); the job folder is damaged.") from None

    def close(self) -> None:
        self.db.close()

    # -- meta -------------------------------------------------------------------------
    def get_meta(self, key: str, default: Any = None) -> Any:
        row = self.db.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
        return json.loads(row[0]) if row else default

    def set_meta(self, key: str, value: Any) -> None:
        self.db.execute("INSERT OR REPLACE INTO meta (key, value) VALUES (?, ?)", (key, json.dumps(value)))

    # -- frames -----------------------------------------------------------------------
    def add_frames(self, rows: Iterable[Sequence[Any]]) -> None:
        """Insert (idx, source_index, time) rows; existing frames are left as they are."""
        with self.db:
            self.db.executemany(
                "INSERT OR IGNORE INTO frames (idx, source_index, time) VALUES (?, ?, ?)", list(rows)
            )

    def frame_count(self) -> int:
        return int(self.db.execute("SELECT COUNT(*) FROM frames").fetchone()[0])

    def counts(self) -> Dict[str, int]:
        counts = {"pending": 0, "done": 0, "failed": 0}
        for status, n in self.db.execute("SELECT status, COUNT(*) FROM frames GROUP BY status"):
            counts[status] = int(n)
        return counts

    def todo(self) -> List[int]:
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

    def frames(self) -> List[FrameRow]:
        return [self.frame(int(r[0])) for r in self.db.execute("SELECT idx FROM frames ORDER BY idx")]

    def mark_done(self, idx: int, seed: int, backend: str, render_ms: float, info: Dict[str, Any]) -> None:
        now = time.time()
        with self.db:
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
        with self.db:
            self.db.execute("UPDATE frames SET status='failed', error=? WHERE idx=?", (error, idx))

    def start_redo(self, idx: int, overrides: Dict[str, Any], kept_as: Optional[str]) -> int:
        """Open a new attempt for a frame; the previous attempt's file is recorded as kept."""
        with self.db:
            current = self.frame(idx)
            if current.status == "done":
                self.db.execute(
                    "UPDATE attempts SET kept_as=? WHERE idx=? AND attempt=?", (kept_as, idx, current.attempt)
                )
            attempt = current.attempt + 1 if current.status == "done" else current.attempt
            self.db.execute(
                "UPDATE frames SET status='pending', attempt=?, overrides=?, error=NULL WHERE idx=?",
                (attempt, json.dumps(overrides), idx),
            )
        return attempt

    def set_scores(self, idx: int, scores: Dict[str, float]) -> None:
        with self.db:
            self.db.execute("UPDATE frames SET scores=? WHERE idx=?", (json.dumps(scores), idx))

    def attempts(self, idx: int) -> List[Dict[str, Any]]:
        cursor = self.db.execute(
            "SELECT attempt, overrides, seed, backend, render_ms, kept_as FROM attempts WHERE idx=? ORDER BY attempt",
            (idx,),
        )
        keys = ("attempt", "overrides", "seed", "backend", "render_ms", "kept_as")
        return [dict(zip(keys, row)) for row in cursor]
