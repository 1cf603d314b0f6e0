"""The `anabranch` command: thin commands that parse options, call the library and print.
Environment settings are read here, at the edge, and nowhere else.

Each command is a module of its own and imports the heavy parts (LangGraph, the openai SDK, Ray,
tiktoken) only when it runs, so `anabranch --help` answers at once (`bench/bench_startup.py`).

Exit codes keep results and crashes apart (docs/architecture.md, rule 9):
0 every task complete; 4 every task delivered, some with error records; 2 bad usage, a setup
problem, rejected input lines, or a file that cannot be written (with its cause); 3 an
unexpected failure, with its traceback; 130 and 143 a run stopped by Ctrl-C or SIGTERM (the
journal keeps what it finished: the same command resumes).
"""

from __future__ import annotations

import atexit
import gc
import re
import sys
import traceback
from typing import Annotated

import typer

from anabranch.cli import chain, evaluate, fault, run, runs, serve, setup
from anabranch.cli.codes import EXIT_CRASH, EXIT_USAGE, UsageError

app = typer.Typer(
    help="anabranch: multi-agent graphs whose agents call LLMs concurrently and lose nothing.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,  # main() decides what an exception means
    # Plain help: Rich markup would take `[ray]` in `pip install 'anabranch[ray]'` for a tag
    # and print nothing, and loading Rich costs `--help` a third of its time.
    rich_markup_mode=None,
)


def _version(asked: bool) -> None:
    if asked:
        from anabranch import __version__

        typer.echo(f"anabranch {__version__}")
        raise typer.Exit()


@app.callback()
def _options(
    version: Annotated[
        bool,
        typer.Option("--version", is_eager=True, callback=_version, help="Print the version."),
    ] = False,
) -> None:
    """anabranch: multi-agent graphs whose agents call LLMs concurrently and lose nothing."""


app.command()(run.run)
app.command("demo")(run.demo)
app.command()(runs.runs)
app.command("eval")(evaluate.eval_)
app.command()(setup.setup)
app.command()(chain.chain)
app.command()(serve.serve)
app.command("fault-server")(fault.fault_server)

FLAGS = {"llm", "model", "backend", "journal", "fresh", "max_line_bytes", "port", "out"}
"""Library options whose CLI flag a message names instead: the library writes `model`, the
command line reads --model."""


def in_cli_terms(message: str) -> str:
    """A library message in the command line's terms: each option it names becomes its flag."""
    return re.sub(r"`([a-z_]+)`", lambda m: "--" + m.group(1).replace("_", "-")
                  if m.group(1) in FLAGS else m.group(0), message)  # fmt: skip


def main() -> None:
    """The console entry point: runs the command and maps what escapes it to an exit code."""
    # The interpreter's last garbage collections at exit walk every object the command's
    # libraries made: 0.45 s for openai alone, 1.3 s for a run, after its work was done (and
    # after a hung server's give-up). Frozen, they are skipped; the command closed its files.
    atexit.register(gc.freeze)
    try:
        app(prog_name="anabranch")
    except Exception as exc:  # noqa: BLE001 - sorted below: ours are exit 2, a bug exit 3
        from anabranch.errors import AnabranchError
        from anabranch.redact import redact

        if isinstance(exc, AnabranchError | UsageError):
            typer.echo(f"error: {redact(in_cli_terms(str(exc)))}", err=True)
            sys.exit(EXIT_USAGE)
        trace = redact("".join(traceback.format_exc()))
        typer.echo(f"{trace}\nanabranch crashed: this is a bug, please report it", err=True)
        sys.exit(EXIT_CRASH)
