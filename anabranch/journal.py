"""The journal: the truth of a batch (docs/architecture.md, rule 9), so a crash costs nothing done.

A SQLite file (WAL) records each finished subtask result and each delivered task result as it
happens, keyed by a run id and by the task's identity: its id plus a hash of its text,
instruction, metadata and the graph's configuration (agents, backends, model, prompts: the
`fingerprint`). Writes go through one writer thread that commits whatever has queued up, so the
event loop never waits on the disk and a crash loses at most what was still in flight.

Re-running the same run finds the journal: a delivered task is delivered again from it, a
finished subtask of an unfinished task is reused, not recomputed, and only the rest runs. A task
whose text or configuration changed is re-run (and counted). `retry_failed` treats tasks that an
earlier run delivered as `partial` or `error` as unfinished: their failed subtasks run again,
their good ones are reused; a plain re-run does the same for tasks whose errors the server
caused (down, slow, overloaded, 5xx, a refused key), which a server that is back can cure. One
run at a time per journal: a second gets `JournalBusyError`.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import sqlite3
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

from anabranch.batches_store import BATCH_SCHEMA, BATCH_TABLES, BatchRecord, list_batches
from anabranch.errors import JournalBusyError, JournalError, failed_because_of_server
from anabranch.ledger import LedgerWriter, RunLedger
from anabranch.llm.learnt import Learnt
from anabranch.outputs import Line, ResultsFile, as_json
from anabranch.servers_store import SERVERS_SCHEMA, ServerMemory
from anabranch.store import cause, connect
from anabranch.types import RunReport, SubtaskResult, TaskResult, Usage

SCHEMA_VERSION = 1
"""Bumped whenever the tables change; a journal of another version is refused, not guessed at."""

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS runs (
    run_id TEXT PRIMARY KEY, created REAL NOT NULL, updated REAL NOT NULL,
    description TEXT NOT NULL, report TEXT
);
CREATE TABLE IF NOT EXISTS tasks (
    run_id TEXT NOT NULL, task_key TEXT NOT NULL, task_id TEXT NOT NULL,
    position INTEGER NOT NULL, status TEXT NOT NULL, result TEXT NOT NULL,
    PRIMARY KEY (run_id, task_key)
);
CREATE INDEX IF NOT EXISTS tasks_by_position ON tasks (run_id, position);
CREATE TABLE IF NOT EXISTS subtasks (
    run_id TEXT NOT NULL, task_key TEXT NOT NULL, kind TEXT NOT NULL, chunk INTEGER NOT NULL,
    result TEXT NOT NULL,
    PRIMARY KEY (run_id, task_key, kind, chunk)
);
"""


def _unusable(path: Path, exc: sqlite3.Error) -> JournalError:
    if isinstance(exc, sqlite3.DatabaseError) and "not a database" in str(exc):
        error = JournalError(f"{path} is not a journal ({exc}): remove it, give the run "
                             "another `journal`, or start over with `fresh` (which replaces "
                             "it)")  # fmt: skip
        error.corrupt = True
        return error
    return JournalError(f"cannot use the journal {path}: {cause(exc, path)}")


@dataclass(frozen=True, slots=True)
class RunInfo:
    """One run in a journal, as `anabranch runs` lists it."""

    run_id: str
    """The run's id: chosen by the caller, or derived from the input and output paths."""
    description: str
    """What the run was started with (the command's input and output, say)."""
    created: float
    """When the run first started (seconds since the epoch)."""
    updated: float
    """When the run last wrote (seconds since the epoch)."""
    tasks: dict[str, int]
    """Delivered tasks by status."""
    usage: Usage
    """What the delivered tasks cost, over every attempt of the run."""
    finished: bool
    """The last attempt of the run went to its end (it has a report)."""


class Journal:
    """A journal file. Reading (runs, results) works while a run writes; running takes a lock.

    `replace_corrupt` starts a new journal in place of a file that is not one (a crash of the
    disk, a file of something else): what it held cannot be read anyway. Without it such a file
    is refused with a message that says how to start over."""

    def __init__(self, path: str | Path, *, replace_corrupt: bool = False) -> None:
        self.path = Path(path)
        self._lock: IO[bytes] | None = None
        self._servers: ServerMemory | None = None
        try:
            self._open()
        except JournalError as exc:
            if not (replace_corrupt and exc.corrupt):
                raise
            for stale in (self.path, *(self.path.with_name(self.path.name + s)
                                       for s in ("-wal", "-shm"))):  # fmt: skip
                stale.unlink(missing_ok=True)
            self._open()

    def _open(self) -> None:
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._db = connect(self.path)
        except OSError as exc:
            raise JournalError(f"cannot open a journal at {self.path}: {cause(exc)}") from exc
        except sqlite3.Error as exc:
            raise _unusable(self.path, exc) from exc
        try:
            self._check_version()
        except BaseException as exc:
            self._db.close()
            if isinstance(exc, sqlite3.Error):
                raise _unusable(self.path, exc) from exc
            raise

    def _check_version(self) -> None:
        with self._db:
            self._db.executescript(_SCHEMA + BATCH_SCHEMA + SERVERS_SCHEMA)
            row = self._db.execute("SELECT value FROM meta WHERE key = 'version'").fetchone()
            if row is None:
                self._db.execute("INSERT INTO meta VALUES ('version', ?)", (str(SCHEMA_VERSION),))
            elif row[0] != str(SCHEMA_VERSION):
                raise JournalError(
                    f"{self.path} is a journal of version {row[0]}; this anabranch reads "
                    f"version {SCHEMA_VERSION}. Give the run another `journal` path"
                )

    def close(self) -> None:
        if self._servers is not None:
            self._servers.close()
        self._db.close()
        self._release()

    # -- what endpoints learnt of their servers (a `Memory`, llm/learnt.py) ---------------------

    def recall(self, server: str) -> Learnt | None:
        """What an endpoint learnt of `server` in an earlier process (`Endpoint.remember`): a
        resumed run, or the next run on this journal, does not probe it again."""
        return self._memory().recall(server)

    def keep(self, server: str, learnt: Learnt) -> None:
        """Remember what an endpoint learnt of `server` (servers_store.py)."""
        self._memory().keep(server, learnt)

    def _memory(self) -> ServerMemory:
        if self._servers is None:
            self._servers = ServerMemory(self._db, self.path)
        return self._servers

    def __enter__(self) -> Journal:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- reading ---------------------------------------------------------------------------------

    def runs(self) -> list[RunInfo]:
        """Every run in the journal, oldest first."""
        infos = []
        for run_id, description, created, updated, report in self._db.execute(
            "SELECT run_id, description, created, updated, report FROM runs ORDER BY created"
        ):
            counts: dict[str, int] = dict(self._db.execute(
                "SELECT status, COUNT(*) FROM tasks WHERE run_id = ? GROUP BY status", (run_id,)
            ).fetchall())  # fmt: skip
            totals = self._db.execute(  # summed by SQLite: no result is parsed to list runs
                "SELECT " + ", ".join(f"COALESCE(SUM(json_extract(result, '$.usage.{f}')), 0)"
                                      for f in Usage.model_fields) +
                " FROM tasks WHERE run_id = ?", (run_id,),
            ).fetchone()  # fmt: skip
            usage = Usage(**dict(zip(Usage.model_fields, totals, strict=True)))
            infos.append(RunInfo(run_id, description, created, updated, counts, usage,
                                 report is not None))  # fmt: skip
        return infos

    def report(self, run_id: str) -> RunReport | None:
        """The trace of the run's last attempt that went to its end, if any."""
        row = self._db.execute("SELECT report FROM runs WHERE run_id = ?", (run_id,)).fetchone()
        if row is None:
            raise JournalError(f"no run {run_id!r} in {self.path}")
        return RunReport.model_validate_json(row[0]) if row[0] else None

    def batches(self, run_id: str) -> list[BatchRecord]:
        """The provider batches the run sent (with `batch` settings), in order."""
        return list_batches(self._db, run_id)

    def results(self, run_id: str, *, complete_only: bool = False) -> Iterator[TaskResult]:
        """The run's delivered task results, in input order (read as they are iterated);
        `complete_only` leaves out those delivered partial or failed."""
        where = " AND status NOT IN ('partial', 'error')" if complete_only else ""
        for (text,) in self._db.execute(
            f"SELECT result FROM tasks WHERE run_id = ?{where} ORDER BY position",
            (run_id,),
        ):
            yield TaskResult.model_validate_json(text)

    def records(self, run_id: str) -> list[dict[str, Any]]:
        """The run's results as flat records (one dict per task), ready for a DataFrame: each
        agent's merged output spread into `agent.field` columns, per-chunk outputs kept whole."""
        return [
            {
                "task_id": r.task_id,
                "status": r.status,
                **_columns(r.outputs),
                "errors": len(r.errors),
                "requests": r.usage.requests,
                "prompt_tokens": r.usage.prompt_tokens,
                "completion_tokens": r.usage.completion_tokens,
                **{f"metadata.{k}": v for k, v in r.metadata.items()},
            }
            for r in self.results(run_id)
        ]

    def export(
        self,
        run_id: str,
        out: str | Path | ResultsFile,
        *,
        complete_only: bool = False,
        line: Line = as_json,
    ) -> int:
        """Write the run's results as JSONL, in input order, to `out` (a path, or an output a
        run holds, which keeps its own `line`): the output file as a view of the journal,
        replaced at once (a device, a FIFO or `-` is written in place). Returns how many
        results were written."""
        results = self.results(run_id, complete_only=complete_only)
        if isinstance(out, ResultsFile):
            return out.rewrite(results)
        with ResultsFile(out, line=line) as file:
            return file.rewrite(results)

    # -- running ---------------------------------------------------------------------------------

    def begin(
        self,
        run_id: str,
        *,
        description: str = "",
        fingerprint: str = "",
        fresh: bool = False,
        retry_failed: bool = False,
    ) -> RunLedger:
        """Start (or resume) a run: take the lock, load what is done, open the writer."""
        self.lock()
        try:
            return self._begin(run_id, description, fingerprint, fresh, retry_failed)
        except sqlite3.Error as exc:
            raise JournalError(f"{self.path} cannot be written: {cause(exc, self.path)}") from exc

    def _begin(
        self, run_id: str, description: str, fingerprint: str, fresh: bool, retry_failed: bool
    ) -> RunLedger:
        now = time.time()
        with self._db:
            if fresh:
                for table in ("tasks", "subtasks", "runs", *BATCH_TABLES):
                    self._db.execute(f"DELETE FROM {table} WHERE run_id = ?", (run_id,))
            self._db.execute(
                "INSERT INTO runs VALUES (?, ?, ?, ?, NULL) ON CONFLICT (run_id) DO UPDATE "
                "SET updated = excluded.updated, report = NULL",
                (run_id, now, now, description),
            )
        done: dict[str, str] = {}
        ids: dict[str, str] = {}
        for key, task_id, status, text in self._db.execute(
            "SELECT task_key, task_id, status, result FROM tasks WHERE run_id = ?", (run_id,)
        ):
            ids[task_id] = key
            failed = status in ("partial", "error")
            if not (failed and (retry_failed or _server_failed(text))):
                done[key] = status
        reusable: dict[tuple[str, str, int], SubtaskResult] = {}
        for key, text in self._db.execute(
            "SELECT task_key, result FROM subtasks WHERE run_id = ? "
            "AND json_extract(result, '$.status') = 'ok'",
            (run_id,),
        ):
            if key not in done:
                result = SubtaskResult.model_validate_json(text)
                reusable[(key, result.kind, result.chunk)] = result
        return RunLedger(self._db, self._release, run_id, fingerprint, done, ids, reusable,
                         LedgerWriter(self.path))  # fmt: skip

    def lock(self) -> None:
        """Take the journal for one run (`begin` does it too); JournalBusyError if it is taken."""
        if self._lock is not None:
            return
        try:
            handle = self.path.open("rb")
        except OSError as exc:
            raise JournalError(f"cannot open a journal at {self.path}: {cause(exc)}") from exc
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.close()
            raise JournalBusyError(
                f"another run is using {self.path} right now; wait for it to end, or give this "
                "run a journal of its own"
            ) from None
        self._lock = handle

    def _release(self) -> None:
        if self._lock is not None:
            self._lock.close()  # closing the file drops the lock
            self._lock = None


def _server_failed(result: str) -> bool:
    """A delivered task with an error the server caused (down, slow, 5xx, 429, a refused key):
    a plain re-run retries it, as it would a task the run never reached."""
    errors = json.loads(result).get("errors") or ()
    return any(failed_because_of_server(e.get("type", ""), e.get("message", "")) for e in errors)


def run_id_for(input: Path, out: Path) -> str:
    """The CLI's run id: the same input and output make the same run, so re-running resumes.
    A stream (`-`, a FIFO) is named as given: resolving it would name this process's pipe."""
    payload = f"{_identity(input)}\n{_identity(out)}"
    return hashlib.sha256(payload.encode()).hexdigest()[:12]


def fingerprint(config: Mapping[str, Any]) -> str:
    """A short hash of a graph's configuration, for `task_key`."""
    return hashlib.sha256(json.dumps(dict(config), sort_keys=True).encode()).hexdigest()[:16]


def _columns(outputs: Mapping[str, Any]) -> dict[str, Any]:
    """An agent's merged output (an object) as `agent.field` columns; per-chunk outputs (a list)
    as one `agent` column."""
    columns: dict[str, Any] = {}
    for agent, output in outputs.items():
        if isinstance(output, dict):
            columns.update({f"{agent}.{key}": value for key, value in output.items()})
        else:
            columns[agent] = output
    return columns


def _identity(path: Path) -> str:
    return str(path.resolve()) if path.is_file() or not path.exists() else str(path)
