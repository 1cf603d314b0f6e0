"""The batch runner: one small graph run per task, many at once, results as they complete.

Workers pull tasks from the input and push results to a bounded queue, so the cost per task
stays flat however large the batch (no `asyncio.wait` over every pending run) and memory holds
only the runs in flight and the results not yet taken. A worker takes a place at work before a
task (`anabranch.work`): C runs at work, and more while some wait out a Retry-After. Tasks in
== results out: a graph run that raises, or an input line that was rejected, still yields a
TaskResult that says what happened.

What a batch is told comes by concern: how many tasks run at once and where (`concurrency`, an
`Executor`), what it keeps (`Resume`: a journal), what it shows (`Display`). `BatchRun` is only
the results as they come; each iteration's state lives in a `_Delivery`, and what a finished
run reports is its `RunReport`.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
from collections import Counter
from collections.abc import AsyncGenerator, Iterable, Iterator, Set
from dataclasses import dataclass

from anabranch.errors import ConfigError, InputError, StateError
from anabranch.graphs.executor import Executor, InProcess
from anabranch.graphs.progress import Display, ProgressBar
from anabranch.graphs.spec import GraphSpec
from anabranch.graphs.state import Graph, RunContext, StageClock, now
from anabranch.graphs.sync import iterate
from anabranch.journal import Journal
from anabranch.llm.adaptive import SlotStats
from anabranch.report import fallback_lines
from anabranch.telemetry.tracing import BatchTelemetry
from anabranch.types import (
    ConcurrencyReport,
    RunReport,
    StageReport,
    SubtaskError,
    Task,
    TaskResult,
    Usage,
)
from anabranch.work import WAITING, WorkGate

logger = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class Resume:
    """A journal for the batch: finished work is recorded as it happens, so that a batch under
    the same run id resumes where the last one stopped (see `Journal`)."""

    journal: Journal
    """Where the work is recorded."""
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
    """Shown beside the run id in the journal's list of runs."""


def run_batch(
    tasks: Iterable[Task | InputError],
    graph: Graph | GraphSpec,
    *,
    concurrency: int = 16,
    executor: Executor | None = None,
    resume: Resume | None = None,
    display: Display | None = None,
) -> BatchRun:
    """Run `graph` once per task, `concurrency` runs at work at a time; iterate the result for
    TaskResults (`async for`, or `for` from sync code), then read its `report`. A run whose LLM
    call waits out a Retry-After or a backoff is not at work meanwhile: another starts, up to
    `anabranch.work.WAITING` times `concurrency` under way.

    `tasks` may hold InputErrors (as `read_tasks` yields them): each becomes a rejected TaskResult.
    `graph` is a compiled graph (input `{"task": Task}`, output `{"result": TaskResult}`) or its
    recipe, a GraphSpec. The `executor` runs it: in this process by default (`InProcess`), or on a
    Ray cluster's workers (`RayExecutor`, which takes a GraphSpec). With `resume`, finished work
    is recorded as it happens and the same run id resumes: delivered tasks come back from the
    journal, finished subtasks are reused. `display` says what it shows while it runs (default: a
    progress bar when stderr is a terminal).
    """
    if concurrency < 1:
        raise ConfigError(f"concurrency must be at least 1, got {concurrency}")
    return BatchRun(tasks, graph, concurrency, executor, resume, display or Display())


class BatchRun:
    """The results of `run_batch` as they complete; `report` once they have all come."""

    def __init__(
        self,
        tasks: Iterable[Task | InputError],
        graph: Graph | GraphSpec,
        concurrency: int,
        executor: Executor | None,
        resume: Resume | None,
        display: Display,
    ) -> None:
        self._tasks, self._graph, self._concurrency = tasks, graph, concurrency
        self._executor, self._resume, self._display = executor, resume, display
        self._replayed: set[str] = set()
        self._report: RunReport | None = None

    @property
    def report(self) -> RunReport:
        """The run's trace and counts; there is none before the iteration has ended."""
        if self._report is None:
            raise StateError("the report is ready once the batch has been iterated to its end")
        return self._report

    @property
    def replayed(self) -> Set[str]:
        """Ids of the results delivered from the journal so far (done by an earlier attempt), so
        that a consumer which already has them (an output file rebuilt from the journal) skips
        them."""
        return self._replayed

    def __aiter__(self) -> AsyncGenerator[TaskResult, None]:
        return self._run()

    def __iter__(self) -> Iterator[TaskResult]:
        """The same results from sync code: `for result in run_batch(...)` (the batch runs on
        the sync portal's event loop meanwhile)."""
        return iterate(self._run())

    async def _run(self) -> AsyncGenerator[TaskResult, None]:
        executor = self._executor or InProcess()
        try:  # closed also when it failed to start (a cluster joined, some workers up)
            await executor.start(self._graph, self._concurrency)
            delivery = _Delivery(self._tasks, executor, self._concurrency, self._resume,
                                 self._display, self._replayed)  # fmt: skip
            # Closed explicitly: a consumer that stops early (Ctrl-C) gets the journal flushed
            # before it goes on, not whenever the garbage collector finalizes the generator.
            async with contextlib.aclosing(delivery.results()) as results:
                async for result in results:
                    yield result
            self._report = delivery.report
        finally:
            await executor.close()


class _Delivery:
    """One iteration of a batch: the workers, the queue, the counts, and at the end the report."""

    def __init__(
        self,
        tasks: Iterable[Task | InputError],
        executor: Executor,
        concurrency: int,
        resume: Resume | None,
        display: Display,
        replayed: set[str],
    ) -> None:
        self.tasks, self.executor, self.concurrency = tasks, executor, concurrency
        self.resume, self.display, self.replayed = resume, display, replayed
        self.clock = StageClock()
        self.counts: Counter[str] = Counter()
        self.report: RunReport | None = None

    async def results(self) -> AsyncGenerator[TaskResult, None]:
        started = now()
        resume = self.resume
        ledger = None
        if resume is not None:
            ledger = await asyncio.to_thread(
                resume.journal.begin, resume.run_id, description=resume.description,
                fingerprint=resume.fingerprint, fresh=resume.fresh,
                retry_failed=resume.retry_failed,
            )  # fmt: skip
        context = RunContext(clock=self.clock, ledger=ledger)
        source = iter(self.tasks)
        # Bounded: a slow consumer holds back the workers, so memory holds only the runs in
        # flight and at most `concurrency` results waiting to be taken.
        queue: asyncio.Queue[tuple[TaskResult, bool] | Exception | None] = asyncio.Queue(
            maxsize=self.concurrency
        )
        counts, clock, run = self.counts, self.clock, self.executor.run
        # Runs at work, the rest waiting between attempts; an executor that runs them elsewhere
        # holds its own gate, where the waits are heard, and is handed all it may hold.
        most = WAITING * self.concurrency
        elsewhere = getattr(self.executor, "gates_work", False)
        gate = WorkGate(most if elsewhere else self.concurrency, most)
        # The workflow span and the run's timeline (the HTML report's data).
        telemetry = BatchTelemetry(resume.run_id if resume is not None else "batch")

        async def work() -> None:
            while True:  # a place at work first, then a task: memory holds what runs
                async with gate.working():
                    item = next(source, None)  # shared: each next() hands out a distinct task
                    if item is None:
                        return
                    await one(item)

        async def one(item: Task | InputError) -> None:
            position = counts["received"]
            counts["received"] += 1
            clock.record("input", started, now())
            if isinstance(item, InputError):
                counts["rejected"] += 1
                rejected = _rejected(item)
                if ledger is not None:
                    ledger.record_task(_rejected_key(item), position, rejected)
                await queue.put((rejected, False))
                return
            if ledger is None:
                counts["tasks"] += 1
                await queue.put((await run(item, context), False))
                return
            key = ledger.key(item)
            if key in ledger.done:  # delivered by an earlier attempt: delivered again as is
                counts["from_journal"] += 1
                self.replayed.add(item.id)
                await queue.put((await asyncio.to_thread(ledger.delivered, key), True))
                return
            counts["tasks"] += 1
            counts["changed"] += ledger.changed(item, key)
            ledger.start(item, key)
            result = await run(item, context)
            ledger.record_task(key, position, result)
            await queue.put((result, False))

        async def worker() -> None:
            try:
                with telemetry.inside():
                    await work()
            except Exception as exc:  # noqa: BLE001 - raised by the loop below
                # Not data: the batch cannot go on (the input cannot be read, a cluster keeps
                # losing its workers). Before, the worker died silently and the batch hung.
                await queue.put(exc)
                return
            await queue.put(None)  # this worker is done

        workers = [asyncio.create_task(worker()) for _ in range(gate.most)]
        bar = ProgressBar.open(self.display, _length(self.tasks))
        watched = self.display.watch.slot_stats if self.display.watch is not None else None
        base = (watched.requests, watched.overloads) if watched is not None else (0, 0)
        tally = _Tally()
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
                tally.add(result, from_journal)
                bar.advance(result)
                telemetry.delivered(result)
                delivered_at = now()
                yield result
                clock.record("deliver", delivered_at, now())
            ended = True
        finally:
            bar.close()
            for w in workers:
                w.cancel()
            await asyncio.gather(*workers, return_exceptions=True)
            timeline = telemetry.end()
            if ledger is not None and not ended:  # stopped early: keep what was done
                await asyncio.to_thread(ledger.finish, None)

        seconds = now() - started
        self.report = RunReport(
            stages=self._stages(tally),
            wall_seconds=seconds,
            tasks_ok=tally.statuses["ok"],
            tasks_partial=tally.statuses["partial"],
            tasks_failed=tally.statuses["error"],
            tasks_rejected=tally.statuses["rejected"],
            subtask_errors=dict(tally.error_types),
            usage=tally.usage if ledger is None else _minus(tally.usage, ledger.reused_usage),
            journal_run=ledger.run_id if ledger is not None else None,
            tasks_from_journal=counts["from_journal"],
            tasks_changed=counts["changed"],
            subtasks_reused=ledger.reused if ledger is not None else 0,
            concurrency=_concurrency(watched, base, seconds),
            timeline=timeline,
            batches=self.display.watch.batch_report if self.display.watch is not None else None,
        )
        for line in fallback_lines(self.report):  # said at the end, not only in the trace
            logger.warning("%s", line)
        if ledger is not None:
            await asyncio.to_thread(ledger.finish, self.report)

    def _stages(self, tally: _Tally) -> list[StageReport]:
        counts, clock = self.counts, self.clock
        delivered = sum(tally.statuses.values())
        graph_results = delivered - counts["rejected"] - counts["from_journal"]
        return [
            StageReport(name="Input Task Queue", description="Receive tasks to be processed "
                        "asynchronously", input_count=counts["received"], input_unit="tasks",
                        output_count=counts["tasks"], output_unit="tasks",
                        seconds=clock.seconds("input")),
            StageReport(name="Task Splitting", description="Divide tasks into smaller subtasks "
                        "for parallel execution", input_count=counts["tasks"], input_unit="tasks",
                        output_count=tally.subtasks, output_unit="subtasks",
                        seconds=clock.seconds("split")),
            StageReport(name="Async Execution", description="Run subtasks concurrently using "
                        "async calls", input_count=tally.subtasks, input_unit="subtasks",
                        output_count=tally.received, output_unit="subtasks with results",
                        seconds=clock.seconds("execute")),
            StageReport(name="Result Aggregation", description="Combine subtask results back "
                        "into full task results", input_count=tally.received,
                        input_unit="subtasks with results", output_count=graph_results,
                        output_unit="task results", seconds=clock.seconds("aggregate")),
            StageReport(name="Output Delivery", description="Send completed task results to "
                        "user or next system", input_count=delivered, input_unit="task results",
                        output_count=delivered, output_unit="task results delivered",
                        seconds=clock.seconds("deliver")),
        ]  # fmt: skip


class _Tally:
    """What the delivered results add up to."""

    def __init__(self) -> None:
        self.statuses: Counter[str] = Counter()
        self.error_types: Counter[str] = Counter()
        self.subtasks = self.received = 0
        self.usage = Usage()

    def add(self, result: TaskResult, from_journal: bool) -> None:
        self.statuses[result.status] += 1
        self.error_types.update(e.type for e in result.errors)
        if not from_journal:  # what this attempt did; the rest was done before
            self.subtasks += result.subtasks
            self.received += result.results
            self.usage += result.usage


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


def _length(tasks: Iterable[Task | InputError]) -> int | None:
    try:
        return len(tasks)  # type: ignore[arg-type]
    except TypeError:
        return None
