"""`anabranch chain`: specialists one after another, streamed, with a report."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Literal

import typer

from anabranch.cli.codes import EXIT_OK, EXIT_PARTIAL, UsageError
from anabranch.cli.options import Deadline, Llm, Model, Timeout, llm_options

if TYPE_CHECKING:
    from anabranch.llm.connect import LLMOptions


def chain(
    prompt: Annotated[str, typer.Argument(help="The initial prompt.")],
    specialists: Annotated[
        str | None,
        typer.Option(
            help="Comma-separated specialist names, in order (built-in or from --file). "
            "Default: the file's specialists, or the built-in three."
        ),
    ] = None,
    file: Annotated[
        Path | None, typer.Option("--file", "-f", help="Specialists defined in TOML or YAML.")
    ] = None,
    context: Annotated[
        Literal["previous", "all"],
        typer.Option(help="What each step sees besides the prompt: the previous output, or all."),
    ] = "previous",
    llm: Llm = "local",
    model: Model = None,
    timeout: Timeout = 120.0,
    deadline: Deadline = None,
    out: Annotated[Path, typer.Option("--out", "-o", help="Where to write the report.")] = Path(
        "report.md"
    ),
) -> None:
    """Run a chain of specialists, streaming each step; write a Chain Execution Results report."""
    from anabranch.agents.specialists import DEFAULT_CHAIN, load_specialists, resolve_specialists
    from anabranch.chain_report import render_chain_report

    if file is not None and not file.is_file():
        raise UsageError(f"no such specialists file: {file}")
    defined = load_specialists(file) if file else []
    if specialists is not None:
        names = [n.strip() for n in specialists.split(",") if n.strip()]
    else:  # a file given alone is the chain to run
        names = [s.name for s in defined or DEFAULT_CHAIN]
    chosen = resolve_specialists(names, defined)
    # One request at a time: a chain is sequential, and the local server then gives it the whole
    # context window for the growing prompt.
    options = llm_options(llm, model, concurrency=1, timeout=timeout, deadline=deadline,
                          default_deadline=600.0)  # fmt: skip
    result = asyncio.run(_run_chain(prompt, chosen, context, options))
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(render_chain_report(result), encoding="utf-8")
    except OSError as exc:
        raise UsageError(f"cannot write the report to {out}: {exc.strerror or exc}") from exc
    typer.echo(f"\nreport: {out}")
    raise typer.Exit(EXIT_OK if result.complete else EXIT_PARTIAL)


async def _run_chain(prompt, specialists, context, options: LLMOptions):  # type: ignore[no-untyped-def]
    from anabranch.events import Event, StepEnded, StepStarted, TextDelta
    from anabranch.graphs.chain import run_specialists
    from anabranch.llm.connect import open_endpoint

    def show(event: Event) -> None:
        if isinstance(event, StepStarted):
            typer.secho(f"\n## Step {event.step}: {event.specialist}\n", bold=True)
        elif isinstance(event, TextDelta):
            typer.echo(event.text, nl=False)
        elif isinstance(event, StepEnded):
            status = "" if event.status == "ok" else " - FAILED"
            typer.secho(f"\n[{event.seconds:.1f} s{status}]", dim=True)

    async with open_endpoint(options, typer.echo) as endpoint:
        return await run_specialists(prompt, specialists, endpoint, context=context, on_event=show)
