"""The journal's record of a run's provider batches, so a crash never pays for a batch twice.

Two tables in the run's journal file: `batches` (one row per batch sent: its id, its input file,
its state, its wave) and `batch_requests` (one row per request: its `custom_id`, the batch that
carries it, its state, and its answer once downloaded). A request's `custom_id` is a digest of
the request itself, so the same command run again asks for the same ids: one found in a batch
still running is waited for by polling that batch, one found answered is answered from here, and
only the rest is sent. The input file is recorded before the batch is created, so a crash
between the two is found again by the file's id.

Writes are few and large (a batch's requests at once, a downloaded file's answers at once) and
go through one connection under a lock, from a thread (the event loop never waits on the disk).
"""

from __future__ import annotations

import sqlite3
import threading
import time
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from anabranch.store import connect

BATCH_SCHEMA = """
CREATE TABLE IF NOT EXISTS batches (
    run_id TEXT NOT NULL, input_file TEXT NOT NULL, batch_id TEXT, state TEXT NOT NULL,
    wave INTEGER NOT NULL, requests INTEGER NOT NULL, created REAL NOT NULL, updated REAL NOT NULL,
    PRIMARY KEY (run_id, input_file)
);
CREATE TABLE IF NOT EXISTS batch_requests (
    run_id TEXT NOT NULL, custom_id TEXT NOT NULL, input_file TEXT NOT NULL,
    state TEXT NOT NULL, answer TEXT,
    PRIMARY KEY (run_id, custom_id)
);
"""
"""The tables, created by the journal with its own and by a store opened on its own."""

BATCH_TABLES = ("batches", "batch_requests")
"""What the journal clears with a run started `fresh`."""


@dataclass(frozen=True, slots=True)
class BatchRecord:
    """One batch of a run, as the journal holds it."""

    input_file: str
    """The uploaded input file's id (known before the batch is)."""
    batch_id: str | None
    """The provider's batch id; None while the batch is being created."""
    state: str
    """The provider's last word: validating, in_progress, ..., completed, failed, expired."""
    wave: int
    """Which wave of the run sent it (1 first)."""
    requests: int
    """Requests it carries."""


@dataclass(frozen=True, slots=True)
class RequestRecord:
    """One request of a run sent by batch."""

    input_file: str
    """The input file (so the batch) that carries it."""
    state: str
    """`sent`, `answered` (its answer is here), or `unfinished` (to send again)."""
    answer: str | None
    """The response body's JSON once downloaded."""


class BatchStore:
    """The batches of one run in a journal file (or a file of their own)."""

    def __init__(self, path: str | Path, run_id: str) -> None:
        self.path = Path(path)
        self.run_id = run_id
        self._lock = threading.Lock()
        self._db = connect(self.path)
        with self._db:
            self._db.executescript(BATCH_SCHEMA)

    def close(self) -> None:
        self._db.close()

    def batches(self) -> list[BatchRecord]:
        """The run's batches, in the order they were sent."""
        with self._lock:
            return list_batches(self._db, self.run_id)

    def requests(self) -> dict[str, RequestRecord]:
        """Every request the run sent by batch, by custom_id."""
        with self._lock:
            rows = self._db.execute(
                "SELECT custom_id, input_file, state, answer FROM batch_requests WHERE run_id = ?",
                (self.run_id,),
            ).fetchall()
        return {row[0]: RequestRecord(*row[1:]) for row in rows}

    def uploaded(self, input_file: str, wave: int, custom_ids: list[str]) -> None:
        """An input file is up: its requests are `sent`, the batch yet to be created."""
        now = time.time()
        with self._lock, self._db:
            self._db.execute(
                "INSERT OR REPLACE INTO batches VALUES (?, ?, NULL, 'uploaded', ?, ?, ?, ?)",
                (self.run_id, input_file, wave, len(custom_ids), now, now),
            )
            self._db.executemany(
                "INSERT OR REPLACE INTO batch_requests VALUES (?, ?, ?, 'sent', NULL)",
                ((self.run_id, c, input_file) for c in custom_ids),
            )

    def state(self, input_file: str, state: str, batch_id: str | None = None) -> None:
        """The batch's state as the provider last gave it (and its id, once created)."""
        with self._lock, self._db:
            self._db.execute(
                "UPDATE batches SET state = ?, batch_id = COALESCE(?, batch_id), updated = ? "
                "WHERE run_id = ? AND input_file = ?",
                (state, batch_id, time.time(), self.run_id, input_file),
            )

    def answered(self, answers: Iterable[tuple[str, str]]) -> None:
        """Answers downloaded: (custom_id, response body JSON)."""
        with self._lock, self._db:
            self._db.executemany(
                "UPDATE batch_requests SET state = 'answered', answer = ? "
                "WHERE run_id = ? AND custom_id = ?",
                ((answer, self.run_id, c) for c, answer in answers),
            )

    def unfinished(self, custom_ids: Iterable[str]) -> None:
        """Requests a batch did not finish (failed, expired, lost, transient errors): to send
        again, in the next wave or the next run."""
        with self._lock, self._db:
            self._db.executemany(
                "UPDATE batch_requests SET state = 'unfinished' WHERE run_id = ? AND custom_id = ?",
                ((self.run_id, c) for c in custom_ids),
            )


def list_batches(db: sqlite3.Connection, run_id: str) -> list[BatchRecord]:
    """A run's batches in a journal, for `anabranch runs show` (empty for a journal that never
    sent one, or one made before batches were recorded)."""
    try:
        rows = db.execute(
            "SELECT input_file, batch_id, state, wave, requests FROM batches WHERE run_id = ? "
            "ORDER BY created",
            (run_id,),
        ).fetchall()
    except sqlite3.OperationalError:  # no such table
        return []
    return [BatchRecord(*row) for row in rows]
