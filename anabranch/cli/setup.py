"""`anabranch setup`: the embedded LLM, built and installed once per machine."""

from __future__ import annotations

from typing import Any

import typer


def setup() -> None:
    """Build and install the embedded local LLM (llama.cpp server + SmolLM2), once per machine."""
    from rich.progress import BarColumn, Progress, TimeElapsedColumn

    from anabranch.llm import local_setup

    if local_setup.status().ready:
        typer.echo("local LLM ready (llama.cpp server and SmolLM2 model installed)")
        return
    typer.echo("setting up the local LLM; the llama.cpp build takes about 5 minutes, once")
    with Progress(
        "{task.description}", BarColumn(), "{task.percentage:>3.0f}%", TimeElapsedColumn()
    ) as bar:
        stages: dict[str, Any] = {}

        def progress(stage: str, percent: int | None) -> None:
            if stage not in stages:
                stages[stage] = bar.add_task(stage, total=100)
            if percent is not None:
                bar.update(stages[stage], completed=percent)

        local_setup.install(progress)  # a SetupError says why, and exits 2
    typer.echo("local LLM ready")
