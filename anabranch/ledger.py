"""A run's ledger: what the runner asks of the journal while a batch runs (is this task done,
may this subtask be reused) and the writer that records what finishes.

Kept apart from `journal.py`, which opens, locks, lists and reads journals: the ledger is the
part on the batch's hot path, written to from the event loop and flushed by a writer thread.
"""

from __future__ import annotations

import hashlib
import json
import sqlite3
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

from anabranch.store import Writer
from anabranch.types import RunReport, Subtask, SubtaskResult, Task, TaskResult, Usage


def task_key(task: Task, fingerprint: str) -> str:
    """The task's identity in the journal: what it is and what runs it."""
    payload = [task.id, task.text, task.instruction, task.metadata, fingerprint]
    return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()[:32]


@dataclass
class RunLedger:
    """One run's view of the journal while it runs: what is done, what may be reused, and the
    writer for what finishes. The batch runner uses it; agent nodes reach it through the run
    context."""

    db: sqlite3.Connection
    """The journal's connection, to read a delivered task back."""
    release: Callable[[], None]
    """Gives the journal's lock back, once every write is flushed."""
    run_id: str
    fingerprint: str
    done: dict[str, str]
    """Task key -> status of the tasks already delivered (and not to be retried)."""
    known_ids: dict[str, str]
    """Task id -> key of every task the journal has for this run, to tell a changed task."""
    reusable: dict[tuple[str, str, int], SubtaskResult]
    """(task key, kind, chunk) -> a finished subtask result of an unfinished task."""
    writer: LedgerWriter
    """Writes what finishes, on its own thread."""
    running: dict[str, str] = field(default_factory=dict)
    """Task id -> key of the tasks in flight, so a subtask result finds its task."""
    reused: int = 0
    """Subtask results taken from the journal instead of recomputed."""
    reused_usage: Usage = field(default_factory=Usage)
    """What those had cost when they ran; not spent again by this run."""

    def key(self, task: Task) -> str:
        return task_key(task, self.fingerprint)

    def changed(self, task: Task, key: str) -> bool:
        """The journal has this id for another text or configuration."""
        return self.known_ids.get(task.id, key) != key

    def start(self, task: Task, key: str) -> None:
        self.running[task.id] = key

    def reuse(self, subtask: Subtask) -> SubtaskResult | None:
        """The journal's result for this subtask, if an earlier attempt finished it."""
        key = self.running.get(subtask.task_id)
        found = self.reusable.get((key, subtask.kind, subtask.chunk)) if key else None
        if found is not None:
            self.reused += 1
            self.reused_usage += found.usage
        return found

    def record_subtask(self, result: SubtaskResult) -> None:
        key = self.running.get(result.task_id)
        if key is not None:
            self.writer.put(_Subtask(self.run_id, key, result))

    def record_task(self, key: str, position: int, result: TaskResult) -> None:
        self.running.pop(result.task_id, None)
        self.writer.put(_Task(self.run_id, key, position, result))

    def delivered(self, key: str) -> TaskResult:
        """A task result the journal already holds (read off the event loop by the caller)."""
        row = self.db.execute(
            "SELECT result FROM tasks WHERE run_id = ? AND task_key = ?", (self.run_id, key)
        ).fetchone()
        return TaskResult.model_validate_json(row[0])

    def finish(self, report: RunReport | None) -> None:
        """Flush every write; store the report if the run went to its end; release the lock."""
        if report is not None:
            self.writer.put((
                "UPDATE runs SET report = ?, updated = ? WHERE run_id = ?",
                (report.model_dump_json(), time.time(), self.run_id),
            ))  # fmt: skip
        self.writer.close()
        self.release()


@dataclass(frozen=True, slots=True)
class _Subtask:
    run_id: str
    key: str
    result: SubtaskResult


@dataclass(frozen=True, slots=True)
class _Task:
    run_id: str
    key: str
    position: int
    result: TaskResult


class LedgerWriter(Writer):
    """The journal's writer. A subtask's row only matters while its task is unfinished, or for
    `retry_failed` when the task failed in part: a subtask whose task was delivered whole in the
    same batch is not written at all, which spares most of the writes (and their serialisation)
    of a batch whose tasks finish quickly."""

    def statements(self, batch: list[Any]) -> Iterator[tuple[str, tuple[Any, ...]]]:
        whole = {i.key for i in batch if isinstance(i, _Task) and i.result.status == "ok"}
        for item in batch:
            if isinstance(item, _Subtask):
                if item.key not in whole:
                    done = item.result
                    yield ("INSERT OR REPLACE INTO subtasks VALUES (?, ?, ?, ?, ?)",
                           (item.run_id, item.key, done.kind, done.chunk,
                            done.model_dump_json()))  # fmt: skip
            elif isinstance(item, _Task):
                task = item.result
                yield ("INSERT OR REPLACE INTO tasks VALUES (?, ?, ?, ?, ?, ?)",
                       (item.run_id, item.key, task.task_id, item.position, task.status,
                        task.model_dump_json()))  # fmt: skip
            else:
                yield item
