"""The SQLite files the package writes (the journal, the response cache): one way to open them
and one writer thread each, so the event loop never waits on the disk.

WAL lets readers work while the writer writes; `synchronous = NORMAL` skips the fsync of each
commit, so a killed process loses nothing committed (only a power cut could lose the last few).
"""

from __future__ import annotations

import contextlib
import queue
import sqlite3
import threading
import time
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from anabranch.errors import StoreError

COMMIT_EVERY = 0.1
"""Seconds the writer gathers statements before it commits them together. Waking for every
statement hands the GIL back and forth with the event loop thousands of times a second, which
cost a CPU-bound batch 12 % (bench, N = 10,000); at 25 ms it cost 5-8 %, at 100 ms 3 %. A crash
loses at most this much finished work."""


class Writer:
    """One thread, one connection: takes statements from a queue and commits what has queued up
    every `COMMIT_EVERY` seconds, so writes are batched and never wait on the event loop."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._queue: queue.Queue[Any] = queue.Queue()
        self._failure: BaseException | None = None
        self._thread = threading.Thread(
            target=self._run, args=(path,), name=f"anabranch-writer-{path.name}", daemon=True
        )
        self._thread.start()

    def put(self, item: Any) -> None:
        """Queue an item: a `(sql, params)` statement, or whatever `statements` turns into some."""
        if self._failure is not None:
            raise StoreError(f"{self.path} cannot be written: {self._failure}")
        self._queue.put(item)

    def statements(self, batch: list[Any]) -> Iterable[tuple[str, tuple[Any, ...]]]:
        """The statements for one batch of items, run on the writer's thread: a subclass may
        skip what the batch makes moot and serialise only what is kept."""
        return batch

    def close(self) -> None:
        self._queue.put(None)
        self._thread.join()
        if self._failure is not None:
            raise StoreError(f"{self.path} cannot be written: {self._failure}")

    def _run(self, path: Path) -> None:
        db = connect(path)
        try:
            while True:
                item = self._queue.get()
                if item is not None:
                    time.sleep(COMMIT_EVERY)  # let the batch gather
                batch = [item]
                with contextlib.suppress(queue.Empty):
                    while item is not None:
                        item = self._queue.get_nowait()
                        batch.append(item)
                with db:
                    for statement in self.statements([i for i in batch if i is not None]):
                        db.execute(*statement)
                if batch[-1] is None:
                    return
        except BaseException as exc:  # noqa: BLE001 - reported to the run by put() and close()
            self._failure = exc
        finally:
            db.close()


def connect(path: Path) -> sqlite3.Connection:
    """A connection usable from any thread (SQLite serializes it), in WAL mode."""
    db = sqlite3.connect(path, timeout=30, check_same_thread=False)
    db.execute("PRAGMA journal_mode = WAL")
    db.execute("PRAGMA synchronous = NORMAL")
    return db
