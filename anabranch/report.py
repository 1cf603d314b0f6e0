"""The run's report: the five-stage trace printed after a run (docs/architecture.md), and the
HTML page written with `--report` (drawn by `anabranch.telemetry.html`)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from anabranch.errors import ConfigError
from anabranch.telemetry.timeline import Failure
from anabranch.types import RunReport


def write_html(
    report: RunReport, path: Path, *, title: str, failures: Sequence[Failure] | None = None
) -> None:
    """The HTML run report (`RunReport.html`) written to `path`."""
    from anabranch.telemetry.html import render_html

    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(render_html(report, title=title, failures=failures), encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"cannot write the report to {path}: {exc.strerror or exc}") from exc


def render_trace(report: RunReport) -> str:
    """The run's trace as text: each stage with its counts and time, then the one-line flow."""
    lines = [f"Data Flow - {len(report.stages)} Stages"]
    for i, stage in enumerate(report.stages, start=1):
        lines.append(
            f"{i} {stage.name:<20} {stage.input_count} {stage.input_unit} -> "
            f"{stage.output_count} {stage.output_unit}  ({stage.seconds:.2f} s)"
        )
        lines.append(f"  {stage.description}")
    split, execute, aggregate, deliver = report.stages[1:]
    lines.append(
        f"{report.stages[0].input_count} tasks -> {split.output_count} subtasks -> "
        f"{execute.output_count} results -> {aggregate.output_count} task results -> "
        f"{deliver.output_count} delivered"
    )
    if report.journal_run is not None:
        received, ran = report.stages[0].input_count, report.stages[0].output_count
        lines.append(
            f"{received:,} tasks -> "
            f"{report.tasks_from_journal:,} from the journal -> {ran:,} run "
            f"({report.subtasks_reused:,} finished subtasks reused, "
            f"{report.tasks_changed:,} changed since; run {report.journal_run})"
        )
    lines.append(
        f"tasks: {report.tasks_ok} ok, {report.tasks_partial} partial, "
        f"{report.tasks_failed} failed, {report.tasks_rejected} rejected; "
        f"wall time {report.wall_seconds:.2f} s"
    )
    usage = report.usage
    if usage.requests or usage.cached:
        cached = f" ({usage.cached} answered from the cache)" if usage.cached else ""
        lines.append(
            f"LLM usage: {usage.requests} requests{cached}, {usage.prompt_tokens} prompt + "
            f"{usage.completion_tokens} completion = {usage.total_tokens} tokens"
        )
    if (c := report.concurrency) is not None and c.requests:  # none: all went by batch
        lines.append(
            f"LLM concurrency: {c.final:.0f} at the end ({c.low:.0f}-{c.high:.0f} during the run), "
            f"{c.overloaded} overloaded (429/503) of {c.requests} requests, "
            f"{c.per_second:.1f} requests/s answered"
        )
    if (b := report.batches) is not None and (b.batches or b.from_journal):
        per = ", ".join(map(str, b.requests_per_batch[:8])) + (", ..." if b.batches > 8 else "")
        lines.append(
            f"Batch API: waves {b.waves}, batches {b.batches} ({per} requests), "
            f"{b.resubmitted} requests sent again ({b.live} to the live API), "
            f"{b.from_journal} answers from the journal; "
            f"{b.prompt_tokens} prompt + {b.completion_tokens} completion tokens"
        )
        if b.live_cost is not None and b.batch_cost is not None:
            lines.append(f"  cost: ${b.batch_cost:.4f} by batch against ${b.live_cost:.4f} live")
    if report.subtask_errors:
        errors = ", ".join(f"{k} x{v}" for k, v in sorted(report.subtask_errors.items()))
        lines.append(f"errors: {errors}")
    lines.extend(fallback_lines(report))
    return "\n".join(lines)


def fallback_lines(report: RunReport) -> list[str]:
    """Each fallback of the run with its count, one line each: "planner: 12 of 100 tasks fell
    back to the rule plan (invalid JSON)". The trace shows them, and the runner logs them at the
    batch's end (stderr), so a run that did its work another way than asked never does so unsaid."""
    timeline = report.timeline
    if timeline is None:
        return []
    lines = []
    for f in timeline.fallbacks:
        if f.what == "planner":
            of, unit = report.stages[1].input_count, "tasks"
        else:
            of, unit = sum(timeline.latency.get(f.what, ())), f"{f.what} subtasks"
        lines.append(f"{f.what}: {f.count} of {max(of, f.count)} {unit} fell back to {f.to} "
                     f"({f.reason})")  # fmt: skip
    return lines
