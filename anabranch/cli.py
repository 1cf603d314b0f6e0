"""The `anabranch` command. Environment settings are read here, at the edge, and nowhere else."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Annotated

import typer

from anabranch.graphs.fanout import build_fanout_graph
from anabranch.graphs.runner import run_batch
from anabranch.inputs import read_tasks
from anabranch.report import render_trace
from anabranch.types import RunReport

app = typer.Typer(
    help="anabranch: multi-agent graphs whose agents call LLMs concurrently and lose nothing.",
    no_args_is_help=True,
    add_completion=False,
)

EXIT_OK, EXIT_ERRORS, EXIT_USAGE = 0, 1, 2
DEMO_TASKS = Path(__file__).resolve().parent.parent / "examples" / "tasks.jsonl"

Concurrency = Annotated[
    int, typer.Option("--concurrency", "-c", min=1, help="Graph runs in flight at once.")
]
Backend = Annotated[
    str, typer.Option(help="Where the analysts run: `local` (tiktoken, YAKE, VADER).")
]
ChunkTokens = Annotated[
    int, typer.Option(min=16, help="Token budget of one chunk; longer texts are cut.")
]


@app.command()
def run(
    input: Annotated[Path, typer.Argument(help="Tasks, one JSON object per line.")],
    out: Annotated[
        Path, typer.Option("--out", "-o", help="Where to write results (JSONL).")
    ] = Path("results.jsonl"),
    concurrency: Concurrency = 16,
    chunk_tokens: ChunkTokens = 256,
    backend: Backend = "local",
) -> None:
    """Run the fan-out analysis (tokens, keywords, sentiment) over a JSONL file of tasks."""
    if not input.is_file():
        typer.echo(f"error: no such input file: {input}", err=True)
        raise typer.Exit(EXIT_USAGE)
    raise typer.Exit(_run_file(input, out, concurrency, chunk_tokens, backend))


@app.command()
def demo(
    out: Annotated[Path, typer.Option("--out", "-o")] = Path("results.jsonl"),
    concurrency: Concurrency = 16,
    chunk_tokens: ChunkTokens = 256,
    backend: Backend = "local",
) -> None:
    """Run the bundled 100 example tasks (examples/tasks.jsonl)."""
    raise typer.Exit(_run_file(DEMO_TASKS, out, concurrency, chunk_tokens, backend))


def _run_file(input: Path, out: Path, concurrency: int, chunk_tokens: int, backend: str) -> int:
    from anabranch.agents.analysts import local_agents
    from anabranch.agents.planner import RulePlanner

    if backend != "local":
        typer.echo(f"error: unknown backend {backend!r}; available: local", err=True)
        return EXIT_USAGE
    agents = local_agents()
    graph = build_fanout_graph(
        RulePlanner(kinds=[a.name for a in agents], chunk_tokens=chunk_tokens), agents
    )
    tasks = list(read_tasks(input))
    report, rejections = asyncio.run(
        _write_results(run_batch(tasks, graph, concurrency=concurrency), out)
    )
    for message in rejections:
        typer.echo(f"rejected: {message}", err=True)
    typer.echo(render_trace(report))
    typer.echo(f"results: {out}")
    if report.tasks_rejected:
        return EXIT_USAGE
    return EXIT_ERRORS if report.tasks_partial or report.tasks_failed else EXIT_OK


async def _write_results(batch, out: Path) -> tuple[RunReport, list[str]]:
    """Stream results to disk as they complete, so an interrupted run keeps what it finished.

    Returns the run report and the messages of rejected input lines, to show the user.
    """
    out.parent.mkdir(parents=True, exist_ok=True)
    rejections: list[str] = []
    with out.open("w", encoding="utf-8") as f:
        async for result in batch:
            f.write(result.model_dump_json() + "\n")
            f.flush()
            if result.status == "rejected":
                rejections.extend(e.message for e in result.errors)
    return batch.report, rejections
