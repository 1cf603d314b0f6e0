"""`anabranch runs`: what a journal holds, run by run."""

from __future__ import annotations

import time
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from anabranch.cli.codes import UsageError

if TYPE_CHECKING:
    from anabranch.journal import Journal
    from anabranch.telemetry.timeline import Failure


def runs(
    words: Annotated[
        list[str] | None,
        typer.Argument(
            help="[JOURNAL] to list its runs, or `show ID [JOURNAL]` for one run's trace. "
            "Default journal: results.jsonl.journal."
        ),
    ] = None,
    report: Annotated[
        Path | None, typer.Option(help="With `show`: also write the run's HTML report here.")
    ] = None,
) -> None:
    """List the runs a journal holds, or show one run's trace."""
    words = list(words or [])
    show = words[:1] == ["show"]
    if show and len(words) < 2:
        raise UsageError("usage: anabranch runs show ID [JOURNAL]")
    if show:
        path = Path(words[2] if len(words) > 2 else "results.jsonl.journal")
    else:
        path = Path(words[0] if words else "results.jsonl.journal")
    if not path.is_file():
        raise UsageError(f"no journal at {path}")
    from anabranch.journal import Journal

    with Journal(path) as journal:
        if show:
            _show_run(journal, words[1], report)
            return
        infos = journal.runs()
        if not infos:
            typer.echo(f"{path}: no runs")
        for info in infos:
            when = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(info.updated))
            tasks = ", ".join(f"{n} {status}" for status, n in sorted(info.tasks.items()))
            state = "finished" if info.finished else "interrupted"
            typer.echo(f"{info.run_id}  {when}  {state:<11}  {tasks or 'no tasks'}  "
                       f"{info.usage.requests} requests, {info.usage.total_tokens} tokens  "
                       f"{info.description}")  # fmt: skip


def _show_run(journal: Journal, run_id: str, html: Path | None = None) -> None:
    from anabranch.report import render_trace, write_html

    report = journal.report(run_id)
    if report is not None:
        typer.echo(render_trace(report))
        if html is not None:  # a report of an older anabranch has no timeline: its failures
            failures = None if report.timeline else _failures(journal, run_id)
            write_html(report, html, title=f"anabranch run {run_id}", failures=failures)
            typer.echo(f"report: {html}")
    else:
        (info,) = [r for r in journal.runs() if r.run_id == run_id]
        typer.echo(f"run {run_id} did not finish; re-run its command to resume it")
        typer.echo(f"delivered so far: {info.tasks}")
    for batch in journal.batches(run_id):
        typer.echo(
            f"batch {batch.batch_id or '(being created)'}  wave {batch.wave}  "
            f"{batch.state:<11}  {batch.requests} requests  file {batch.input_file}"
        )


def _failures(journal: Journal, run_id: str) -> list[Failure]:
    """The tasks of a run that did not end ok, as the journal holds them."""
    from anabranch.telemetry.timeline import MAX_FAILURES, Failure

    failed = (r for r in journal.results(run_id) if r.status != "ok")
    return [Failure(task_id=r.task_id, status=r.status,
                    reasons=[f"{e.kind}: {e.type}: {e.message}" for e in r.errors])
            for r, _ in zip(failed, range(MAX_FAILURES), strict=False)]  # fmt: skip
