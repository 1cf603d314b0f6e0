"""The SQLite files the package writes (the journal, the response cache): one way to open them
and one writer thread each, so the event loop never waits on the disk.

WAL lets readers work while the writer writes; `synchronous = NORMAL` skips the fsync of each
commit, so a killed process loses nothing committed (only a power cut could lose the last few).
"""

from __future__ import annotations

import contextlib
import errno
import os
import queue
import resource
import sqlite3
import threading
import time
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from anabranch.errors import StoreError

_CAUSES = {
    errno.ENOSPC: "disk full",
    errno.EDQUOT: "disk quota exceeded",
    errno.EROFS: "read-only file system",
    errno.EACCES: "permission denied",
    errno.EPERM: "operation not permitted",
    errno.EFBIG: "file too large for the file-size limit",
    errno.EPIPE: "the reader closed the pipe",
}
"""What a write error means, in the words a user looks for."""


def cause(exc: BaseException, path: Path | None = None) -> str:
    """Why a file could not be written, in a few words: "disk full", "read-only file system".

    SQLite says less than the OS ("unable to open database file", "disk I/O error"): given the
    file's `path`, a read-only file system or a file this user may not write is named, and a
    file-size limit (`ulimit -f`) when there is one."""
    if isinstance(exc, OSError):
        return _CAUSES.get(exc.errno or 0) or exc.strerror or str(exc)
    text = str(exc)
    if path is not None and (unwritable := _unwritable(path)):
        return unwritable
    if "readonly" in text:
        return "read-only (the file or its file system cannot be written)"
    if "disk is full" in text:
        return "disk full"
    if "disk I/O error" in text:
        limit = resource.getrlimit(resource.RLIMIT_FSIZE)[0]
        if limit != resource.RLIM_INFINITY:
            return f"disk I/O error (the file-size limit is {limit} bytes)"
    return text


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
            raise StoreError(f"{self.path} cannot be written: {cause(self._failure, self.path)}")
        self._queue.put(item)

    def statements(self, batch: list[Any]) -> Iterable[tuple[str, tuple[Any, ...]]]:
        """The statements for one batch of items, run on the writer's thread: a subclass may
        skip what the batch makes moot and serialise only what is kept."""
        return batch

    def close(self) -> None:
        self._queue.put(None)
        self._thread.join()
        if self._failure is not None:
            raise StoreError(f"{self.path} cannot be written: {cause(self._failure, self.path)}")

    def _run(self, path: Path) -> None:
        try:
            db = connect(path)
        except BaseException as exc:  # noqa: BLE001 - reported to the run by put() and close()
            self._failure = exc
            return
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


def _unwritable(path: Path) -> str | None:
    """Why `path` (or the folder it would be made in) cannot be written, if it cannot."""
    where = path if path.exists() else path.parent
    try:
        if os.statvfs(where).f_flag & os.ST_RDONLY:
            return _CAUSES[errno.EROFS]
    except OSError:
        return None
    return None if os.access(where, os.W_OK) else _CAUSES[errno.EACCES]


def connect(path: Path) -> sqlite3.Connection:
    """A connection usable from any thread (SQLite serializes it), in WAL mode."""
    db = sqlite3.connect(path, timeout=30, check_same_thread=False)
    db.execute("PRAGMA journal_mode = WAL")
    db.execute("PRAGMA synchronous = NORMAL")
    return db
