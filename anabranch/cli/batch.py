"""What `run` and `demo` do once their options are read: lock, start, deliver, say where.

The order keeps a user's files safe: the journal's lock, then the output's, before anything is
truncated; the LLM is reached before the output is touched, so a run that cannot start leaves
the files as they were (and removes those it created). Ctrl-C and SIGTERM stop the batch where
it is: the journal is flushed, the output rewritten from it, and the run says how to resume.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
from collections.abc import Coroutine
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import typer

from anabranch.cli.codes import EXIT_OK, EXIT_PARTIAL, EXIT_SIGNALLED, EXIT_USAGE, UsageError
from anabranch.cli.options import PlannerKind, server_failure

if TYPE_CHECKING:
    from anabranch.graphs.cluster import RayExecutor
    from anabranch.graphs.runner import BatchRun
    from anabranch.graphs.spec import GraphSpec
    from anabranch.graphs.state import Graph
    from anabranch.journal import Journal
    from anabranch.llm.connect import LLMOptions
    from anabranch.llm.endpoint import Endpoint
    from anabranch.outputs import ResultsFile


@dataclass(frozen=True, slots=True)
class BatchOptions:
    """Everything `run` and `demo` are told, gathered once."""

    input: str
    """The tasks file, or `-` for standard input."""
    out: str
    """Where the results go, one JSON line per task; `-` for standard output."""
    concurrency: int
    """Graph runs in flight at once."""
    chunk_tokens: int
    """Token budget of one chunk."""
    backend: str | None
    """Where the analysts run (see `--backend`)."""
    planner: PlannerKind
    """`rule` or `llm`."""
    llm: LLMOptions
    """The LLM, if any."""
    journal: Path | None
    """Where finished work is recorded; None picks the default place for the output."""
    keep_journal: bool
    """Keep a journal at all (`--no-journal` keeps none: an interrupted run starts over)."""
    fresh: bool
    """Forget what the journal holds for this run and start over."""
    retry_failed: bool
    """Run again the failed subtasks of tasks an earlier run delivered with errors."""
    executor: Literal["local", "ray"] = "local"
    """Where the graphs run: this process, or the workers of a Ray cluster."""
    ray_address: str | None = None
    """The Ray cluster: None starts a local one; `auto`, or `ray://host:10001`."""
    workers: int = 2
    """Ray workers."""
    max_line_bytes: int = 1024 * 1024
    """The longest task line read."""
    report: Path | None = None
    """Where to write the HTML run report; None writes none."""


def journal_path(options: BatchOptions, out: ResultsFile) -> Path | None:
    """`--journal`, else OUT.journal beside a regular output, else NAME.journal in the working
    directory (a device, a FIFO or standard output has no folder of its own to write in)."""
    if not options.keep_journal:
        return None
    if options.journal is not None:
        return options.journal
    given = Path(options.out)
    if out.path is None:
        return Path("stdout.journal")
    if out.streamed:
        return Path(given.name + ".journal")
    return given.with_name(given.name + ".journal")


async def run_file(options: BatchOptions) -> int:
    """The batch, from the file to the output; the exit code."""
    from anabranch.analysis import needs_llm, parse_backend
    from anabranch.inputs import input_path
    from anabranch.journal import Journal
    from anabranch.llm.connect import without_llm
    from anabranch.outputs import ResultsFile

    source = input_path(options.input)
    if not source.exists():
        raise UsageError(f"no such input file: {options.input}")
    if source.is_dir():
        raise UsageError(f"the input {options.input} is a folder, not a file of tasks")
    from anabranch.analysis.records import analysis_line

    out = ResultsFile(options.out, input=source, line=analysis_line)
    llm = options.llm
    choice = parse_backend(options.backend, llm.llm is not None)
    wants_llm = options.planner == "llm" or needs_llm(choice)
    if wants_llm and llm.llm is None:
        raise UsageError("the llm backend and the llm planner need --llm (local or a URL)")
    if not wants_llm:  # nothing will call an LLM: do not start or reach one
        llm = without_llm(llm)
    path = journal_path(options, out)
    created = path is not None and not path.exists()
    journal = None
    try:
        # Both locks before anything is truncated: a busy output or journal leaves all as it was.
        out.lock()
        if path is not None:
            journal = Journal(path, replace_corrupt=options.fresh)
            journal.lock()
        run = _Run(options, source, out, journal)
        return await _interruptible(run, run.deliver(llm, choice))
    except BaseException:
        _undo_start(out, journal, path if created else None)
        raise
    finally:
        if journal is not None:
            journal.close()


def _undo_start(out: ResultsFile, journal: Journal | None, created: Path | None) -> None:
    """A run that could not start leaves no files behind: those it created go again."""
    if out.started:
        out.close_quietly()
        return
    out.discard()
    if journal is not None and created is not None:
        journal.close()
        for name in (created, *(created.with_name(created.name + s) for s in ("-wal", "-shm"))):
            name.unlink(missing_ok=True)


async def _interruptible(run: _Run, work: Coroutine[Any, Any, int]) -> int:
    """Run `work`; Ctrl-C and SIGTERM cancel it where it is, and the run says what it kept."""
    task = asyncio.ensure_future(work)
    loop = asyncio.get_running_loop()

    def stop(sig: signal.Signals) -> None:
        run.signalled = sig
        task.cancel()

    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop, sig)
    try:
        return await task
    except asyncio.CancelledError:
        if run.signalled is None:
            raise
        return run.interrupted()  # before the batch began
    finally:
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.remove_signal_handler(sig)


@dataclass
class _Run:
    """One run of the command: what it was given, and what it did so far."""

    options: BatchOptions
    source: Path
    out: ResultsFile
    journal: Journal | None
    run_id: str = ""
    total: int | None = None
    delivered: int = 0
    signalled: signal.Signals | None = None
    failure: str | None = None

    def say(self, line: str) -> None:
        """Progress lines go to standard output, unless the results do."""
        typer.echo(line, err=self.out.path is None)

    async def deliver(self, llm: LLMOptions, choice: object) -> int:
        from anabranch import __version__
        from anabranch.graphs.progress import Display
        from anabranch.graphs.runner import Resume, run_batch
        from anabranch.inputs import count_task_lines, read_tasks
        from anabranch.journal import fingerprint, run_id_for
        from anabranch.llm.connect import by_batch, in_flight, maybe_endpoint

        options, out, journal = self.options, self.out, self.journal
        limit = options.max_line_bytes
        self.run_id = run_id_for(self.source, Path(options.out))
        llm = by_batch(llm, journal.path if journal else None, self.run_id)  # in the journal
        async with maybe_endpoint(llm, self.say, journal) as endpoint:  # it keeps what it learns
            config = {
                "backend": choice, "planner": options.planner, "version": __version__,
                "chunk_tokens": options.chunk_tokens, "model": endpoint and endpoint.model,
            }  # fmt: skip
            if self.source.is_file():
                self.total = await asyncio.to_thread(count_task_lines, self.source,
                                                     max_line_bytes=limit)  # fmt: skip
            resumed = journal is not None and not options.fresh and not out.streamed
            # What earlier attempts delivered stays in the output while this one runs (but for
            # the tasks it is about to retry, which it will write again).
            kept = journal.results(self.run_id, complete_only=options.retry_failed) if (
                journal is not None and resumed) else ()  # fmt: skip
            await asyncio.to_thread(out.start, kept)
            executor, target = _where(options, endpoint)
            resume = None
            if journal is not None:
                resume = Resume(journal, self.run_id, fingerprint=fingerprint(config),
                                fresh=options.fresh, retry_failed=options.retry_failed,
                                description=f"{options.input} -> {options.out}")  # fmt: skip
            display = Display(total=self.total, watch=endpoint if executor is None else None)
            batch = run_batch(read_tasks(self.source, max_line_bytes=limit), target,
                              concurrency=in_flight(llm, options.concurrency, self.total),
                              executor=executor, resume=resume, display=display)  # fmt: skip
            try:
                rejections = await self._write(batch, skip_replayed=resumed)
                key = llm.api_key.get_secret_value() if llm.api_key else None
                self.failure = None if executor else server_failure(endpoint, key)
            except asyncio.CancelledError:
                if self.signalled is None:
                    raise
                rejections = None
        if journal is not None and not out.streamed:  # the output: the journal's view, in order
            await asyncio.to_thread(journal.export, self.run_id, out)
        out.close()
        if rejections is None:
            return self.interrupted()
        return self._finished(batch, rejections)

    async def _write(self, batch: BatchRun, *, skip_replayed: bool) -> list[str]:
        """Stream results to the output as they complete (on a thread: the event loop never
        waits on the disk), so an interrupted run keeps what it finished. Returns the messages
        of rejected input lines, to show the user."""
        rejections: list[str] = []
        async with contextlib.aclosing(aiter(batch)) as results:  # closed: the journal flushed
            async for result in results:
                self.delivered += 1
                if not (skip_replayed and result.task_id in batch.replayed):  # not in the file
                    await asyncio.to_thread(self.out.write, result)
                if result.status == "rejected":
                    rejections.extend(e.message for e in result.errors)
        return rejections

    def _finished(self, batch: BatchRun, rejections: list[str]) -> int:
        from anabranch.report import render_trace

        for message in rejections:
            typer.echo(f"rejected: {message}", err=True)
        report = batch.report
        if report.stages[0].input_count == 0:
            typer.echo(f"{self.options.input}: 0 tasks", err=True)
        self.say(render_trace(report))
        self.say(f"results: {'standard output' if self.out.path is None else self.options.out}")
        if self.journal is not None:
            self.say(f"journal: {self.journal.path} (run {self.run_id})")
        if self.options.report is not None:
            from anabranch.report import write_html

            write_html(report, self.options.report, title=f"anabranch run {self.run_id}")
            self.say(f"report: {self.options.report}")
        if report.tasks_rejected:
            return EXIT_USAGE
        if self.failure is not None:
            typer.echo(f"error: {self.failure}", err=True)
            return EXIT_USAGE
        return EXIT_PARTIAL if report.tasks_partial or report.tasks_failed else EXIT_OK

    def interrupted(self) -> int:
        """Say what the stopped run kept and how to go on; the exit code, 128 + the signal."""
        assert self.signalled is not None
        held = self.delivered
        if self.journal is not None and self.run_id:
            held = sum(sum(info.tasks.values()) for info in self.journal.runs()
                       if info.run_id == self.run_id)  # fmt: skip
        total = "?" if self.total is None else self.total
        then = ("run the same command to resume" if self.journal is not None
                else "no journal was kept: the same command starts over")  # fmt: skip
        typer.echo(f"interrupted: {held} of {total} delivered; {then}", err=True)
        return EXIT_SIGNALLED + self.signalled.value


def _where(
    options: BatchOptions, endpoint: Endpoint | None
) -> tuple[RayExecutor | None, Graph | GraphSpec]:
    """Where the batch runs: the analysis graph here, or its recipe on a Ray cluster's workers
    (each with its own endpoint to the same server, on its share of the limits)."""
    from anabranch.analysis import build_analysis_graph
    from anabranch.analysis.recipe import analysis_spec
    from anabranch.graphs.cluster import RayExecutor

    if options.executor == "local":
        graph = build_analysis_graph(endpoint, backend=options.backend, planner=options.planner,
                                     chunk_tokens=options.chunk_tokens)  # fmt: skip
        return None, graph
    spec = analysis_spec(options.llm, endpoint, backend=options.backend,
                         planner=options.planner, chunk_tokens=options.chunk_tokens)  # fmt: skip
    return RayExecutor(options.ray_address, options.workers), spec
