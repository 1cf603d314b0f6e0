"""Where a batch's graph runs: the `Executor` protocol, and the in-process executor.

The batch runner (`run_batch`) reads the input, keeps the journal, shows progress and builds the
report; an executor only runs one task's graph when asked, wherever that is. `InProcess` (the
default) runs it on the caller's event loop; `RayExecutor` (graphs/cluster.py) on the workers of
a Ray cluster. Both turn a graph that raises into a result that says so (errors are data).
"""

from __future__ import annotations

import asyncio
import contextlib
from dataclasses import dataclass, field
from typing import Protocol

from anabranch.errors import StateError
from anabranch.graphs.spec import GraphSpec
from anabranch.graphs.state import Graph, RunContext
from anabranch.types import SubtaskError, Task, TaskResult


class Executor(Protocol):
    """Where `run_batch` runs the graph. The runner calls `start` once, then `run` for each task
    (up to `concurrency` at work at once, and more while runs in this process wait between two
    attempts of a call: `anabranch.work`), then `close`, also when the batch stops early. An
    executor that runs tasks elsewhere and counts their waits there says `gates_work = True`,
    and is handed up to `WAITING` times `concurrency` at once."""

    async def start(self, graph: Graph | GraphSpec, concurrency: int) -> None:
        """Get ready to run `graph` (a compiled graph, or its recipe) for up to `concurrency`
        tasks in flight at once."""
        ...

    async def run(self, task: Task, context: RunContext) -> TaskResult:
        """The task's result. A graph that raises gives an error result; only a failure of the
        executor itself (a cluster that keeps losing its workers) raises, and ends the batch."""
        ...

    async def close(self) -> None:
        """Release what `start` took."""
        ...


@dataclass
class InProcess:
    """The graph runs in this process, on the caller's event loop: `run_batch`'s default."""

    _graph: Graph | None = field(default=None, init=False, repr=False)
    _resources: contextlib.AsyncExitStack | None = field(default=None, init=False, repr=False)

    async def start(self, graph: Graph | GraphSpec, concurrency: int) -> None:
        """Take the graph, or build it from its recipe (off the event loop: building may load
        files)."""
        if isinstance(graph, GraphSpec):
            self._resources = contextlib.AsyncExitStack()
            graph = await asyncio.to_thread(graph.build, None, self._resources)
        self._graph = graph

    async def run(self, task: Task, context: RunContext) -> TaskResult:
        """The task through the graph, here."""
        if self._graph is None:
            raise StateError("an executor runs tasks between its start and its close")
        return await run_task(self._graph, task, context)

    async def close(self) -> None:
        """Forget the graph; close what a recipe's graph opened."""
        self._graph = None
        if self._resources is not None:
            await self._resources.aclose()
            self._resources = None


async def run_task(graph: Graph, task: Task, context: RunContext) -> TaskResult:
    """One task through the graph; a graph that raises still gives a result that says so."""
    try:
        output = await graph.ainvoke({"task": task}, context=context)
        result: TaskResult = output["result"]
        return result
    except Exception as exc:  # noqa: BLE001 - errors are data (architecture.md, rule 1)
        return TaskResult(
            task_id=task.id,
            status="error",
            errors=[SubtaskError(kind="graph", type=type(exc).__name__, message=str(exc))],
            metadata=task.metadata,
        )
