"""What a batch shows while it runs: a progress bar on stderr, or nothing in a log."""

from __future__ import annotations

import sys
from dataclasses import dataclass

from anabranch.llm.endpoint import Endpoint
from anabranch.types import TaskResult


@dataclass(frozen=True, slots=True)
class Display:
    """How `run_batch` shows its progress."""

    progress: bool | None = None
    """Show a progress bar on stderr; None means only when stderr is a terminal."""
    total: int | None = None
    """Tasks expected, for the progress bar (taken from `len(tasks)` when it has one)."""
    watch: Endpoint | None = None
    """An endpoint whose concurrency and 429s the progress bar and the report show."""


class ProgressBar:
    """A rich progress bar on stderr."""

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
    def open(cls, display: Display, total: int | None) -> ProgressBar | NoBar:
        """The bar `display` asks for, for `total` tasks (or an unknown number)."""
        show = sys.stderr.isatty() if display.progress is None else display.progress
        return cls(display.total or total, display.watch) if show else NoBar()

    def advance(self, result: TaskResult) -> None:
        """One more task delivered."""
        self._errors += result.status != "ok"
        status = f"[yellow]{self._errors} with errors" if self._errors else ""
        if self._watch is not None:
            slots = self._watch.slot_stats
            status += f" LLM concurrency {slots.limit:.0f}, {slots.overloads} x 429/503"
        self._progress.update(self._task, advance=1, status=status)

    def close(self) -> None:
        """Take the bar off the terminal."""
        self._progress.stop()


class NoBar:
    """No bar: stderr is a log, or the caller said so."""

    def advance(self, result: TaskResult) -> None:
        """Nothing to show."""

    def close(self) -> None:
        """Nothing to take away."""
