"""The batch runner: one small graph run per task, many at once, results as they complete.

C workers pull tasks from the input and push results to a bounded queue, so the cost per task
stays flat however large the batch (no `asyncio.wait` over every pending run) and memory holds
only the runs in flight and the results not yet taken. Tasks in == results out: a graph run
that raises, or an input line that was rejected, still yields a TaskResult that says what
happened.
"""

from __future__ import annotations

import asyncio
import hashlib
import sys
from collections import Counter
from collections.abc import AsyncIterator, Iterable, Iterator
from dataclasses import dataclass, field

from anabranch.errors import ConfigError, InputError
from anabranch.graphs.cluster import RayExecutor
from anabranch.graphs.spec import GraphSpec
from anabranch.graphs.state import Graph, RunContext, StageClock, now
from anabranch.graphs.sync import iterate
from anabranch.journal import Journal
from anabranch.llm.adaptive import SlotStats
from anabranch.llm.endpoint import Endpoint
from anabranch.types import (
    ConcurrencyReport,
    RunReport,
    StageReport,
    SubtaskError,
    Task,
    TaskResult,
    Usage,
)


@dataclass
class BatchRun:
    """`async for result in run_batch(...)` yields TaskResults; `.report` is ready once it ends."""

    tasks: Iterable[Task | InputError]
    graph: Graph | GraphSpec
    """The graph run once per task: input `{"task": Task}`, output `{"result": TaskResult}`; or
    its recipe, which an executor's workers build it from (or this process, without one)."""
    concurrency: int = 16
    progress: bool | None = None
    """Show a progress bar on stderr; None means only when stderr is a terminal."""
    total: int | None = None
    """Tasks expected, for the progress bar (taken from `len(tasks)` when it has one)."""
    journal: Journal | None = None
    """Where finished work is recorded as it happens, so a re-run resumes; None keeps none."""
    run_id: str = "default"
    """The run's name in the journal: the same name resumes it."""
    fingerprint: str = ""
    """The graph's configuration (agents, backends, model, prompts), hashed into each task's
    identity: a task run under another configuration is run again."""
    fresh: bool = False
    """Forget what the journal holds for this run and start over."""
    retry_failed: bool = False
    """Run again the failed subtasks of tasks an earlier attempt delivered partial or failed."""
    description: str = ""
    """Shown by `anabranch runs` beside the run id."""
    watch: Endpoint | None = None
    """An endpoint whose concurrency and 429s the progress bar and the report show."""
    executor: RayExecutor | None = None
    """Where the graph runs: None for this process; a `RayExecutor` for a Ray cluster's workers
    (then `graph` is a GraphSpec and the concurrency is the executor's)."""
    replayed: set[str] = field(default_factory=set, init=False, repr=False)
    """Ids of the results delivered from the journal (done by an earlier attempt), so that a
    consumer which already has them, the CLI's output file, skips them."""
    _report: RunReport | None = field(default=None, init=False, repr=False)

    @property
    def report(self) -> RunReport:
        """The run's trace and counts; there is none before the iteration has ended."""
        if self._report is None:
            raise ConfigError("the report is ready once the batch has been iterated to its end")
        return self._report

    def __aiter__(self) -> AsyncIterator[TaskResult]:
        return self._run()

    def __iter__(self) -> Iterator[TaskResult]:
        """The same results from sync code: `for result in run_batch(...)` (the batch runs on
        the sync portal's event loop meanwhile)."""
        return iterate(self._run())

    async def _run(self) -> AsyncIterator[TaskResult]:
        if self.concurrency < 1:
            raise ConfigError(f"concurrency must be at least 1, got {self.concurrency}")
        executor, graph = self.executor, self.graph
        if executor is not None:
            if not isinstance(graph, GraphSpec):
                raise ConfigError(
                    "a compiled graph cannot travel to Ray workers: give run_batch a "
                    "GraphSpec('package.module:factory', {...}) instead"
                )
            await executor.start(graph)
            concurrency = executor.concurrency
        else:
            if isinstance(graph, GraphSpec):
                graph = await asyncio.to_thread(graph.build)
            concurrency = self.concurrency
        try:
            async for result in self._deliver(graph, executor, concurrency):
                yield result
        finally:
            if executor is not None:
                await executor.close()

    async def _deliver(
        self, graph: Graph | GraphSpec, executor: RayExecutor | None, concurrency: int
    ) -> AsyncIterator[TaskResult]:
        clock = StageClock()
        started = now()
        ledger = None
        if self.journal is not None:
            ledger = await asyncio.to_thread(
                self.journal.begin, self.run_id, description=self.description,
                fingerprint=self.fingerprint, fresh=self.fresh, retry_failed=self.retry_failed,
            )  # fmt: skip
        context = RunContext(clock=clock, ledger=ledger)
        source = iter(self.tasks)
        # Bounded: a slow consumer holds back the workers, so memory holds only the runs in
        # flight and at most `concurrency` results waiting to be taken.
        queue: asyncio.Queue[tuple[TaskResult, bool] | Exception | None] = asyncio.Queue(
            maxsize=concurrency
        )
        counts: Counter[str] = Counter()

        if executor is None:
            assert not isinstance(graph, GraphSpec)  # built in _run
            here = graph

            async def run_one(task: Task) -> TaskResult:
                return await run_task(here, task, context)

        else:
            there = executor

            async def run_one(task: Task) -> TaskResult:
                start = now()  # remote: the stages of the task's graph show as one span
                result = await there.run(task)
                for stage in ("split", "execute", "aggregate"):
                    clock.record(stage, start, now())
                return result

        async def work() -> None:
            for item in source:  # a shared iterator: each next() hands out a distinct task
                position = counts["received"]
                counts["received"] += 1
                clock.record("input", started, now())
                if isinstance(item, InputError):
                    counts["rejected"] += 1
                    rejected = _rejected(item)
                    if ledger is not None:
                        ledger.record_task(_rejected_key(item), position, rejected)
                    await queue.put((rejected, False))
                    continue
                if ledger is None:
                    counts["tasks"] += 1
                    await queue.put((await run_one(item), False))
                    continue
                key = ledger.key(item)
                if key in ledger.done:  # delivered by an earlier attempt: delivered again as is
                    counts["from_journal"] += 1
                    self.replayed.add(item.id)
                    await queue.put((await asyncio.to_thread(ledger.delivered, key), True))
                    continue
                counts["tasks"] += 1
                counts["changed"] += ledger.changed(item, key)
                ledger.start(item, key)
                result = await run_one(item)
                ledger.record_task(key, position, result)
                await queue.put((result, False))

        async def worker() -> None:
            try:
                await work()
            except Exception as exc:  # noqa: BLE001 - raised by the loop below
                # Not data: the batch cannot go on (the input cannot be read, a cluster keeps
                # losing its workers). Before, the worker died silently and the batch hung.
                await queue.put(exc)
                return
            await queue.put(None)  # this worker is done

        workers = [asyncio.create_task(worker()) for _ in range(concurrency)]
        bar = _ProgressBar.open(self.progress, self.total or _length(self.tasks), self.watch)
        watched = self.watch.slot_stats if self.watch is not None else None
        base = (watched.requests, watched.overloads) if watched is not None else (0, 0)
        results: Counter[str] = Counter()
        subtasks = received = 0
        usage = Usage()
        error_types: Counter[str] = Counter()
        running = len(workers)
        ended = False
        try:
            while running:
                item = await queue.get()
                if item is None:
                    running -= 1
                    continue
                if isinstance(item, Exception):
                    raise item
                result, from_journal = item
                results[result.status] += 1
                error_types.update(e.type for e in result.errors)
                if not from_journal:  # what this attempt did; the rest was done before
                    subtasks += result.subtasks
                    received += result.results
                    usage += result.usage
                bar.advance(result)
                delivered_at = now()
                yield result
                clock.record("deliver", delivered_at, now())
            ended = True
        finally:
            bar.close()
            for w in workers:
                w.cancel()
            await asyncio.gather(*workers, return_exceptions=True)
            if ledger is not None and not ended:  # stopped early: keep what was done
                await asyncio.to_thread(ledger.finish, None)

        delivered = sum(results.values())
        graph_results = delivered - counts["rejected"] - counts["from_journal"]
        stages = [
            StageReport(name="Input Task Queue", description="Receive tasks to be processed "
                        "asynchronously", input_count=counts["received"], input_unit="tasks",
                        output_count=counts["tasks"], output_unit="tasks",
                        seconds=clock.seconds("input")),
            StageReport(name="Task Splitting", description="Divide tasks into smaller subtasks "
                        "for parallel execution", input_count=counts["tasks"], input_unit="tasks",
                        output_count=subtasks, output_unit="subtasks",
                        seconds=clock.seconds("split")),
            StageReport(name="Async Execution", description="Run subtasks concurrently using "
                        "async calls", input_count=subtasks, input_unit="subtasks",
                        output_count=received, output_unit="subtasks with results",
                        seconds=clock.seconds("execute")),
            StageReport(name="Result Aggregation", description="Combine subtask results back "
                        "into full task results", input_count=received,
                        input_unit="subtasks with results", output_count=graph_results,
                        output_unit="task results", seconds=clock.seconds("aggregate")),
            StageReport(name="Output Delivery", description="Send completed task results to "
                        "user or next system", input_count=delivered, input_unit="task results",
                        output_count=delivered, output_unit="task results delivered",
                        seconds=clock.seconds("deliver")),
        ]  # fmt: skip
        self._report = RunReport(
            stages=stages,
            wall_seconds=now() - started,
            tasks_ok=results["ok"],
            tasks_partial=results["partial"],
            tasks_failed=results["error"],
            tasks_rejected=results["rejected"],
            subtask_errors=dict(error_types),
            usage=usage if ledger is None else _minus(usage, ledger.reused_usage),
            journal_run=ledger.run_id if ledger is not None else None,
            tasks_from_journal=counts["from_journal"],
            tasks_changed=counts["changed"],
            subtasks_reused=ledger.reused if ledger is not None else 0,
            concurrency=_concurrency(watched, base, now() - started),
        )
        if ledger is not None:
            await asyncio.to_thread(ledger.finish, self._report)


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


def run_batch(
    tasks: Iterable[Task | InputError],
    graph: Graph | GraphSpec,
    *,
    concurrency: int = 16,
    progress: bool | None = None,
    total: int | None = None,
    journal: Journal | None = None,
    run_id: str = "default",
    fingerprint: str = "",
    fresh: bool = False,
    retry_failed: bool = False,
    description: str = "",
    watch: Endpoint | None = None,
    executor: RayExecutor | None = None,
) -> BatchRun:
    """Run `graph` once per task, `concurrency` runs at a time; iterate the result for TaskResults.

    `tasks` may hold InputErrors (as `read_tasks` yields them): each becomes a rejected TaskResult.
    With a `journal`, finished work is recorded as it happens and the same `run_id` resumes:
    delivered tasks come back from the journal, finished subtasks are reused (see `Journal`).
    With a `RayExecutor`, `graph` is a GraphSpec and the graph runs on the cluster's workers.
    """
    return BatchRun(tasks, graph, concurrency=concurrency, progress=progress, total=total,
                    journal=journal, run_id=run_id, fingerprint=fingerprint, fresh=fresh,
                    retry_failed=retry_failed, description=description,
                    watch=watch, executor=executor)  # fmt: skip


def _concurrency(
    stats: SlotStats | None, base: tuple[int, int], seconds: float
) -> ConcurrencyReport | None:
    if stats is None:
        return None
    requests, overloads = stats.requests - base[0], stats.overloads - base[1]
    return ConcurrencyReport(low=stats.low, high=stats.high, final=stats.limit,
                             overloaded=overloads, requests=requests,
                             per_second=(requests - overloads) / max(seconds, 1e-9))  # fmt: skip


def _minus(spent: Usage, earlier: Usage) -> Usage:
    """This attempt's usage: reused subtasks carry what they cost when they ran."""
    return Usage(
        requests=spent.requests - earlier.requests,
        prompt_tokens=spent.prompt_tokens - earlier.prompt_tokens,
        completion_tokens=spent.completion_tokens - earlier.completion_tokens,
        cached=spent.cached - earlier.cached,
    )


def _rejected_key(error: InputError) -> str:
    """A rejected line's place in the journal, so the output keeps one record per line."""
    return "rejected:" + hashlib.sha256(str(error).encode()).hexdigest()[:24]


def _rejected(error: InputError) -> TaskResult:
    return TaskResult(
        task_id=error.task_id,
        status="rejected",
        errors=[SubtaskError(kind="input", type=type(error).__name__, message=str(error))],
    )


def _length(tasks: Iterable) -> int | None:
    try:
        return len(tasks)  # type: ignore[arg-type]
    except TypeError:
        return None


class _ProgressBar:
    """A rich progress bar on stderr, or nothing when it would only clutter a log."""

    def __init__(self, total: int | None, watch: Endpoint | None) -> None:
        self._watch = watch
        from rich.console import Console
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TimeElapsedColumn

        self._progress = Progress(
            "[progress.description]{task.description}",
            BarColumn(),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
            "{task.fields[status]}",
            console=Console(stderr=True),
            transient=True,
        )
        self._task = self._progress.add_task("tasks", total=total, status="")
        self._errors = 0
        self._progress.start()

    @classmethod
    def open(
        cls, wanted: bool | None, total: int | None, watch: Endpoint | None
    ) -> _ProgressBar | _NoBar:
        show = sys.stderr.isatty() if wanted is None else wanted
        return cls(total, watch) if show else _NoBar()

    def advance(self, result: TaskResult) -> None:
        self._errors += result.status != "ok"
        status = f"[yellow]{self._errors} with errors" if self._errors else ""
        if self._watch is not None:
            slots = self._watch.slot_stats
            status += f" LLM concurrency {slots.limit:.0f}, {slots.overloads} x 429/503"
        self._progress.update(self._task, advance=1, status=status)

    def close(self) -> None:
        self._progress.stop()


class _NoBar:
    def advance(self, result: TaskResult) -> None:
        pass

    def close(self) -> None:
        pass
