"""`anabranch serve`: graphs as OpenAI-compatible chat models.

The port is bound before anything else happens, so a bad or busy port is a clear exit 2, never
a traceback after "serving at"; the embedded LLM starts only when a served graph calls one; a
graph named `module:attr` is found from the working directory, as `python -m` finds modules.
"""

from __future__ import annotations

import asyncio
import enum
import errno
import ipaddress
import os
import signal
import socket
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from anabranch.cli.codes import UsageError
from anabranch.cli.options import (
    Backend,
    Deadline,
    Llm,
    LlmConcurrency,
    Model,
    Otel,
    Timeout,
    llm_options,
)

if TYPE_CHECKING:
    from anabranch.llm.connect import LLMOptions
    from anabranch.telemetry.setup import Exporting


class Progress(enum.StrEnum):
    """Where a served run's progress goes (`anabranch.chat.wire.Progress`)."""

    comments = "comments"
    reasoning = "reasoning"


DEFAULT_GRAPHS = ("analyze", "chain")
"""What is served without `--graph`: the analysis, and the chain when there is an LLM."""


def serve(
    graph: Annotated[
        list[str] | None,
        typer.Option(
            help="Graphs to serve: analyze, chain, assistant (the analysers as tools), or "
            "module:attr (repeatable; the module is found from the working directory). "
            "Default: analyze and chain."
        ),
    ] = None,
    host: Annotated[str, typer.Option(help="Address to listen on.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(min=1, max=65535, help="Port to listen on.")] = 8000,
    llm: Llm = "local",
    model: Model = None,
    backend: Backend = None,
    llm_concurrency: LlmConcurrency = 8,
    timeout: Timeout = 120.0,
    deadline: Deadline = None,
    api_token: Annotated[
        str | None,
        typer.Option(
            help="Bearer token clients must send (or set ANABRANCH_API_TOKEN).", show_default=False
        ),
    ] = None,
    threads_db: Annotated[
        Path, typer.Option(help="SQLite file that keeps conversations by thread id.")
    ] = Path("anabranch-threads.sqlite"),
    max_runs: Annotated[int, typer.Option(min=1, help="Graph runs at once; more get 429.")] = 8,
    progress: Annotated[
        Progress,
        typer.Option(
            help="Where progress goes: SSE comments only, or also reasoning_content (the "
            "thinking block of Open WebUI and LibreChat). A request can ask with the "
            "X-Anabranch-Progress header."
        ),
    ] = Progress.comments,
    otel: Otel = False,
) -> None:
    """Serve graphs as OpenAI-compatible chat models (POST /v1/chat/completions, /v1/responses)."""
    given = api_token if api_token is not None else os.environ.get("ANABRANCH_API_TOKEN")
    token = given.strip() if given and given.strip() else None  # an empty token is no token
    if token is None and not _is_loopback(host):
        why = "the token given is empty" if given is not None else "neither is set"
        raise UsageError(
            f"serving on {host} needs --api-token or ANABRANCH_API_TOKEN ({why}): the host is "
            "not loopback, so anyone who reaches it could use the server"
        )
    if token is None and given is not None:
        typer.echo("warning: the API token is empty, so none is required (loopback only)", err=True)
    from anabranch.analysis import needs_llm, parse_backend  # after the checks: seconds to load
    from anabranch.llm.connect import without_llm

    options = llm_options(llm, model, concurrency=llm_concurrency, timeout=timeout,
                          deadline=deadline, default_deadline=600.0)  # fmt: skip
    analysis_needs_llm = needs_llm(parse_backend(backend, options.llm is not None))
    names = list(graph or DEFAULT_GRAPHS)
    if graph is None and not analysis_needs_llm:  # the analysts are local: no LLM is wanted
        names.remove("chain")
        typer.echo("note: the chain graph needs an LLM backend; serving analyze only", err=True)
    if not {"chain", "assistant"} & set(names) and not (analysis_needs_llm and "analyze" in names):
        options = without_llm(options)  # a user's graph brings its own
    if os.getcwd() not in sys.path:  # `module:attr` from here, as `python -m` finds modules
        sys.path.insert(0, os.getcwd())
    listener = _bind(host, port)
    from anabranch.telemetry import setup as telemetry

    exporting = telemetry.start_exporting() if telemetry.wanted(otel) else None
    if exporting is not None:
        _flush_before_sigterm(exporting)
    try:
        asyncio.run(_serve(listener, names, host, port, backend, options, token, str(threads_db),
                           max_runs, progress.value))  # fmt: skip
    finally:
        if exporting is not None:
            exporting.close()  # the spans still buffered are sent when the server stops


def _flush_before_sigterm(exporting: Exporting) -> None:
    """Send the buffered spans before SIGTERM ends the process. uvicorn stops gracefully on
    SIGTERM, then raises it again with the handler it found, and the default handler ends the
    process there, past any `finally`: this one flushes first, then ends it as SIGTERM does."""

    def flush_then_end(signum: int, frame: object) -> None:
        exporting.close()
        signal.signal(signum, signal.SIG_DFL)
        signal.raise_signal(signum)

    signal.signal(signal.SIGTERM, flush_then_end)


def _is_loopback(host: str) -> bool:
    """Only this machine can reach `host` (127.0.0.0/8, ::1, localhost)."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def _bind(host: str, port: int) -> socket.socket:
    """The listening socket, bound now: a busy or forbidden port is said before anything runs."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    listener = socket.socket(family, socket.SOCK_STREAM)
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        listener.bind((host, port))
    except OSError as exc:
        listener.close()
        why = ("is in use (another server listens there)" if exc.errno == errno.EADDRINUSE
               else f"cannot be bound: {exc.strerror or exc}")  # fmt: skip
        raise UsageError(f"port {port} on {host} {why}; choose another with --port") from exc
    return listener


async def _serve(  # type: ignore[no-untyped-def]
    listener: socket.socket,
    names,
    host,
    port,
    backend,
    options: LLMOptions,
    token,
    threads_db,
    max_runs,
    progress,
) -> None:
    import uvicorn

    from anabranch.chat import create_app
    from anabranch.chat.adapters import chat_graph
    from anabranch.llm.connect import maybe_endpoint

    async with maybe_endpoint(options, typer.echo) as endpoint:
        chats = [chat_graph(name, endpoint, backend=backend) for name in names]
        app = create_app(chats, api_token=token, threads_db=threads_db,
                         max_concurrent_runs=max_runs, progress=progress)  # fmt: skip
        typer.echo(f"serving {', '.join(c.name for c in chats)} at http://{host}:{port}/v1")
        server = uvicorn.Server(uvicorn.Config(app, log_level="warning"))
        try:
            await server.serve(sockets=[listener])
        finally:
            await app.aclose()
