"""The journal's memory of what endpoints learnt of their servers (`llm/learnt.py`).

Why the journal and not the response cache: the cache is opt-in (`--cache`), while a journal is
kept by default and opened by both runs that must not probe again: a resumed run (the same
command) and the next run written to the same journal. The table `servers` holds one row per
server and model, never per run: `fresh` starts a run over, not what is known of its server.
The key is the server's public URL and the model (`learnt.server_key`), never the API key.

Writes are a handful per process (each fact changes once), queued to a writer thread of their
own, so the endpoint that learns never waits on the disk.
"""

from __future__ import annotations

import json
import sqlite3
import time
from pathlib import Path

from anabranch.llm.learnt import Learnt
from anabranch.store import Writer

SERVERS_SCHEMA = """
CREATE TABLE IF NOT EXISTS servers (
    server TEXT PRIMARY KEY, learnt TEXT NOT NULL, updated REAL NOT NULL
);
"""
"""The table, created by the journal with its own."""


class ServerMemory:
    """A journal's `Memory` (`llm/learnt.py`): what was learnt of each server, by key."""

    def __init__(self, db: sqlite3.Connection, path: Path) -> None:
        self._db = db
        self._path = path
        self._writer: Writer | None = None

    def recall(self, server: str) -> Learnt | None:
        row = self._db.execute("SELECT learnt FROM servers WHERE server = ?", (server,)).fetchone()
        if row is None:
            return None
        try:
            return Learnt.of(json.loads(row[0]))
        except (ValueError, TypeError):  # written by another version: found out again
            return None

    def keep(self, server: str, learnt: Learnt) -> None:
        if self._writer is None:
            self._writer = Writer(self._path)
        self._writer.put((
            "INSERT OR REPLACE INTO servers VALUES (?, ?, ?)",
            (server, json.dumps(learnt.as_json()), time.time()),
        ))  # fmt: skip

    def close(self) -> None:
        """Write what is pending."""
        if self._writer is not None:
            self._writer.close()
            self._writer = None
