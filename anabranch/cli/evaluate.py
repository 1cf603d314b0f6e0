"""`anabranch eval`: sentiment backends measured against human labels."""

from __future__ import annotations

import asyncio
import random
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from anabranch.cli.codes import EXIT_OK, EXIT_USAGE, UsageError
from anabranch.cli.options import (
    DEFAULT_SENTIMENT_WITH_LLM,
    KNOWN_SENTIMENT_BACKENDS,
    Concurrency,
    Deadline,
    Llm,
    LlmConcurrency,
    Model,
    Timeout,
    llm_options,
)

if TYPE_CHECKING:
    from anabranch.llm.connect import LLMOptions


def eval_(
    labelled: Annotated[
        Path | None,
        typer.Argument(
            help="Labelled texts, one JSON object per line with `id`, `text` and a `label` or a "
            "`human_mean`. Default: the project's own set, its held-out part."
        ),
    ] = None,
    backend: Annotated[
        list[str] | None,
        typer.Option(
            help="A sentiment backend to measure; repeat to compare several side by side. "
            f"Known: {', '.join(KNOWN_SENTIMENT_BACKENDS)}. Default: local, and "
            f"{DEFAULT_SENTIMENT_WITH_LLM} with --llm."
        ),
    ] = None,
    llm: Llm = None,
    model: Model = None,
    split: Annotated[
        str | None,
        typer.Option(help="Only the lines of this split (`tune` or `held-out`); `all` for all."),
    ] = None,
    band: Annotated[
        float,
        typer.Option(
            min=0, help="A `human_mean` counts when at least this far from 0, labelled by sign."
        ),
    ] = 1.0,
    sample: Annotated[
        int | None,
        typer.Option(min=1, help="Measure on this many texts drawn at random (seed 0), not all."),
    ] = None,
    out: Annotated[Path | None, typer.Option(help="Write the figures as JSON here.")] = None,
    concurrency: Concurrency = 16,
    llm_concurrency: LlmConcurrency = 8,
    timeout: Timeout = 60.0,
    deadline: Deadline = None,
) -> None:
    """Measure sentiment backends against human labels: agreement with a 95 % interval, per-class
    precision / recall / F1, the confusion matrix, failed outputs, tokens and time."""
    from anabranch.analysis.evaluation import builtin_set
    from anabranch.llm.connect import without_llm

    source = labelled or builtin_set()
    if not source.is_file():
        raise UsageError(f"no such labelled file: {source}")
    if split is None:
        split = "held-out" if labelled is None else "all"
    backends = backend or (["local", DEFAULT_SENTIMENT_WITH_LLM] if llm else ["local"])
    if unknown := [b for b in backends if b not in KNOWN_SENTIMENT_BACKENDS]:
        known = ", ".join(KNOWN_SENTIMENT_BACKENDS)
        raise UsageError(f"unknown backends {unknown}; known: {known}")
    if any(b != "local" for b in backends) and llm is None:
        raise UsageError("the llm backends need --llm (local or a URL)")
    options = llm_options(llm, model, concurrency=llm_concurrency, timeout=timeout,
                           deadline=deadline)  # fmt: skip
    if all(b == "local" for b in backends):
        options = without_llm(options)
    chosen = None if split == "all" else split
    asked = EvalOptions(source, backends, chosen, band, sample, out, concurrency)
    raise typer.Exit(asyncio.run(_eval(asked, options)))


@dataclass(frozen=True, slots=True)
class EvalOptions:
    """What `eval` is told, gathered once."""

    source: Path
    """The labelled file."""
    backends: list[str]
    """The sentiment backends to compare."""
    split: str | None
    """Only the lines of this split; None for all."""
    band: float
    """How far from 0 a `human_mean` must lie to count."""
    sample: int | None
    """How many texts to draw at random; None for all."""
    out: Path | None
    """Where the figures go as JSON, if anywhere."""
    concurrency: int
    """Texts in flight at once."""


async def _eval(asked: EvalOptions, options: LLMOptions) -> int:
    from anabranch.analysis.evaluation import evaluate, read_labelled, render, write_figures
    from anabranch.llm.connect import maybe_endpoint

    source, split, band = asked.source, asked.split, asked.band
    labelled = await asyncio.to_thread(read_labelled, source, band=band, split=split)
    for problem in labelled.problems:
        typer.echo(f"rejected: {source}: {problem}", err=True)
    items = labelled.items
    if asked.sample is not None and asked.sample < len(items):
        drawn = set(random.Random(0).sample(range(len(items)), asked.sample))
        items = [item for i, item in enumerate(items) if i in drawn]
    if not items:
        raise UsageError(f"{source}: no labelled texts to measure on (split {split}, band {band})")
    results = []
    async with maybe_endpoint(options, typer.echo) as endpoint:
        for name in asked.backends:
            results.append(await evaluate(items, name, endpoint, concurrency=asked.concurrency))
    notes = [f"{labelled.in_band} inside the band left out"] if labelled.in_band else []
    if labelled.other_split:
        notes.append(f"{labelled.other_split} of other splits left out")
    if len(items) < len(labelled.items):
        notes.append(f"a sample of {len(items)} of {len(labelled.items)}")
    title = f"{source.name}" + (f", {split}" if split else "") + (
        f" ({'; '.join(notes)})" if notes else "")  # fmt: skip
    typer.echo(render(results, title))
    if asked.out is not None:
        write_figures(asked.out, results, str(source), split, band)
        typer.echo(f"figures: {asked.out}")
    return EXIT_USAGE if labelled.problems else EXIT_OK
