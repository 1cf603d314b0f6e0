"""`anabranch run` and `anabranch demo`: the fan-out analysis over a file of tasks."""

from __future__ import annotations

import asyncio
import inspect
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, get_type_hints

import typer

from anabranch.cli.batch import BatchOptions, run_file
from anabranch.cli.codes import UsageError
from anabranch.cli.options import (
    Backend,
    ChunkTokens,
    Concurrency,
    Deadline,
    Llm,
    LlmConcurrency,
    Model,
    Otel,
    Planner,
    Rpm,
    Timeout,
    Tpm,
    llm_options,
)

if TYPE_CHECKING:
    from anabranch.llm.settings import BatchSettings

MAX_LINE_BYTES = 1024 * 1024
"""`anabranch.inputs.MAX_LINE_BYTES`, named without importing the readers (a test keeps them
equal)."""


def run(
    input: Annotated[
        str,
        typer.Argument(
            metavar="INPUT", help="Tasks, one JSON object per line; `-` for standard input."
        ),
    ],
    out: Annotated[
        str,
        typer.Option(
            "--out",
            "-o",
            help="Where to write results (JSONL): a file, or `-` for standard output (the "
            "trace then goes to standard error). A device or a FIFO is written in place.",
        ),
    ] = "results.jsonl",
    concurrency: Concurrency = 16,
    chunk_tokens: ChunkTokens = 256,
    llm: Llm = None,
    model: Model = None,
    backend: Backend = None,
    planner: Planner = "rule",
    llm_concurrency: LlmConcurrency = 8,
    timeout: Timeout = 60.0,
    deadline: Deadline = None,
    rpm: Rpm = None,
    tpm: Tpm = None,
    journal: Annotated[
        Path | None,
        typer.Option(
            help="The run's journal (SQLite). Default: OUT.journal beside the output, or in the "
            "working directory when OUT is not a regular file."
        ),
    ] = None,
    no_journal: Annotated[
        bool, typer.Option("--no-journal", help="Keep no journal: an interrupted run starts over.")
    ] = False,
    resume: Annotated[
        bool,
        typer.Option(
            "--resume/--fresh",
            help="Resume from the journal what an interrupted run of the same INPUT and OUT "
            "finished (the default), or start over (a file that is not a journal is replaced).",
        ),
    ] = True,
    retry_failed: Annotated[
        bool,
        typer.Option(
            help="Re-run only the failed subtasks of tasks an earlier run delivered with errors."
        ),
    ] = False,
    cache: Annotated[
        Path | None,
        typer.Option(
            help="A response cache (SQLite): deterministic LLM requests answered once are not "
            "sent again, in this run or the next."
        ),
    ] = None,
    adaptive: Annotated[
        bool,
        typer.Option(
            "--adaptive/--static",
            help="Find the server's capacity up to --llm-concurrency (the default), or always "
            "send --llm-concurrency requests at once.",
        ),
    ] = True,
    give_up_after: Annotated[
        float,
        typer.Option(
            min=1,
            help="Seconds a server may keep failing before the remaining subtasks fail fast "
            "(the journal resumes them later).",
        ),
    ] = 300.0,
    executor: Annotated[
        str,
        typer.Option(
            help="Where the graphs run: `local` (this process) or `ray` (the workers of a Ray "
            "cluster; pip install 'anabranch[ray]'). Limits are the whole cluster's."
        ),
    ] = "local",
    ray_address: Annotated[
        str | None,
        typer.Option(help="The Ray cluster: `auto`, `ray://host:10001`; default a local one."),
    ] = None,
    workers: Annotated[int, typer.Option(min=1, help="Ray workers (with --executor ray).")] = 2,
    batch_api: Annotated[
        bool,
        typer.Option(
            "--batch-api",
            help="Send the LLM calls through the server's Batch API (OpenAI's: half the price, "
            "answers within 24 hours), every task in flight at once; the journal keeps the "
            "batches, so after a crash the same command polls them instead of paying again.",
        ),
    ] = False,
    batch_poll: Annotated[
        float,
        typer.Option(min=0.01, help="With --batch-api: the longest wait between two polls."),
    ] = 60.0,
    prices: Annotated[
        str | None,
        typer.Option(
            help="With --batch-api: live prices as `INPUT,OUTPUT` dollars per million tokens "
            "(e.g. 2.5,10), for the report's batch against live cost."
        ),
    ] = None,
    max_line_bytes: Annotated[
        int,
        typer.Option(
            min=1, help="The longest task line read; a longer one is rejected by its number."
        ),
    ] = MAX_LINE_BYTES,
    report: Annotated[
        Path | None, typer.Option(help="Also write the run report as one HTML file (offline).")
    ] = None,
    otel: Otel = False,
) -> None:
    """Run the fan-out analysis (tokens, keywords, sentiment) over a JSONL file of tasks.

    Finished work is journaled as it happens: after a crash or Ctrl-C, the same command resumes."""
    if executor not in ("local", "ray"):
        raise UsageError(f"unknown executor {executor!r}; use local or ray")
    if executor == "ray" and llm == "local" and (ray_address or "").startswith("ray://"):
        raise UsageError(
            "the embedded LLM runs on this machine, out of a remote cluster's reach: give its "
            "workers a server they can reach (--llm URL)"
        )
    if batch_api and (executor == "ray" or llm == "local"):
        raise UsageError("--batch-api needs a server with the Batch API (--llm URL), run here "
                         "(not --executor ray)")  # fmt: skip
    if no_journal and (retry_failed or not resume):
        raise UsageError("--retry-failed and --fresh work on a journal: drop --no-journal")
    options = BatchOptions(
        input=input,
        out=out,
        concurrency=concurrency,
        chunk_tokens=chunk_tokens,
        backend=backend,
        planner=planner,
        llm=replace(
            llm_options(
                llm,
                model,
                concurrency=llm_concurrency,
                timeout=timeout,
                deadline=deadline,
                rpm=rpm,
                tpm=tpm,
                cache=cache,
                adaptive=adaptive,
                give_up_after=give_up_after,
            ),
            batch=_batch_settings(batch_poll, prices) if batch_api else None,
        ),
        journal=journal,
        keep_journal=not no_journal,
        fresh=not resume,
        retry_failed=retry_failed,
        executor="ray" if executor == "ray" else "local",
        ray_address=ray_address,
        workers=workers,
        max_line_bytes=max_line_bytes,
        report=report,
    )
    from anabranch.telemetry import setup as telemetry

    exporting = telemetry.start_exporting() if telemetry.wanted(otel) else None
    try:
        code = asyncio.run(run_file(options))
    finally:
        if exporting is not None:
            exporting.close()  # what is still buffered is sent before the command ends
    raise typer.Exit(code)


def _batch_settings(poll: float, prices: str | None) -> BatchSettings:
    """`--batch-api`'s settings (the journal and the run id are the batch's to give)."""
    from anabranch.errors import ConfigError
    from anabranch.llm.settings import BatchSettings, Prices

    table = None
    if prices is not None:
        try:
            given, taken = (float(p) for p in prices.split(","))
            table = Prices(given, taken)
        except (ValueError, ConfigError) as exc:
            raise UsageError(f"--prices takes INPUT,OUTPUT dollars per million tokens, "
                             f"e.g. 2.5,10; got {prices!r}") from exc  # fmt: skip
    return BatchSettings(poll_initial=min(1.0, poll), poll_max=poll, prices=table)


def demo(**options: Any) -> None:
    """Run the 100 example tasks on the embedded local LLM (or `--backend local`)."""
    from anabranch.inputs import example_tasks

    run(str(example_tasks()), **options)


def _demo_signature() -> None:
    """`demo` takes run's options, all but the input file, with the embedded LLM by default."""
    hints = get_type_hints(run, include_extras=True)
    parameters = [
        p.replace(annotation=hints[p.name], default="local" if p.name == "llm" else p.default)
        for p in inspect.signature(run).parameters.values()
        if p.name != "input"
    ]
    demo.__signature__ = inspect.Signature(parameters)  # type: ignore[attr-defined]
    demo.__annotations__ = {p.name: p.annotation for p in parameters}


_demo_signature()
