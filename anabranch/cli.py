"""The `anabranch` command. Environment settings are read here, at the edge, and nowhere else."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import os
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Annotated, Literal

import typer
from pydantic import SecretStr

from anabranch.errors import SetupError
from anabranch.graphs.fanout import build_fanout_graph
from anabranch.graphs.runner import BatchRun, run_batch
from anabranch.inputs import read_tasks
from anabranch.llm.endpoint import Endpoint
from anabranch.llm.settings import Limits, Timeouts
from anabranch.redact import redact
from anabranch.report import render_trace
from anabranch.types import RunReport

app = typer.Typer(
    help="anabranch: multi-agent graphs whose agents call LLMs concurrently and lose nothing.",
    no_args_is_help=True,
    add_completion=False,
)

EXIT_OK, EXIT_ERRORS, EXIT_USAGE = 0, 1, 2
DEMO_TASKS = Path(__file__).resolve().parent.parent / "examples" / "tasks.jsonl"
API_KEY_VARIABLES = ("ANABRANCH_LLM_API_KEY", "OPENAI_API_KEY")

Out = Annotated[Path, typer.Option("--out", "-o", help="Where to write results (JSONL).")]
Concurrency = Annotated[
    int, typer.Option("--concurrency", "-c", min=1, help="Graph runs (tasks) in flight at once.")
]
ChunkTokens = Annotated[
    int, typer.Option(min=16, help="Token budget of one chunk; longer texts are cut.")
]
Llm = Annotated[
    str | None,
    typer.Option(
        help="`local` for the embedded llama.cpp server, or the base URL of any "
        "OpenAI-compatible server (Ollama's http://localhost:11434 works as is)."
    ),
]
Model = Annotated[str | None, typer.Option(help="Model name to ask the server for.")]
Backend = Annotated[
    str | None,
    typer.Option(
        help="Where the analysts run: `local` (tiktoken, YAKE, VADER), `llm`, or per agent, "
        "e.g. `keywords=llm,sentiment=local`. Default: llm when --llm is given, else local."
    ),
]
Planner = Annotated[
    Literal["rule", "llm"],
    typer.Option(help="`rule`: every agent for every task; `llm`: the model picks the agents."),
]
LlmConcurrency = Annotated[int, typer.Option(min=1, help="LLM requests in flight at once.")]
Timeout = Annotated[float, typer.Option(min=0.1, help="Seconds one LLM attempt may take.")]
Rpm = Annotated[float | None, typer.Option(min=0.001, help="LLM requests per minute, at most.")]
Tpm = Annotated[float | None, typer.Option(min=1, help="LLM tokens per minute, at most.")]


@app.command()
def run(
    input: Annotated[Path, typer.Argument(help="Tasks, one JSON object per line.")],
    out: Out = Path("results.jsonl"),
    concurrency: Concurrency = 16,
    chunk_tokens: ChunkTokens = 256,
    llm: Llm = None,
    model: Model = None,
    backend: Backend = None,
    planner: Planner = "rule",
    llm_concurrency: LlmConcurrency = 8,
    timeout: Timeout = 60.0,
    rpm: Rpm = None,
    tpm: Tpm = None,
) -> None:
    """Run the fan-out analysis (tokens, keywords, sentiment) over a JSONL file of tasks."""
    if not input.is_file():
        _fail(f"no such input file: {input}")
    options = _LlmOptions(llm, model, llm_concurrency, timeout, rpm, tpm)
    raise typer.Exit(_run_file(input, out, concurrency, chunk_tokens, backend, planner, options))


@app.command()
def demo(
    out: Out = Path("results.jsonl"),
    concurrency: Concurrency = 16,
    chunk_tokens: ChunkTokens = 256,
    llm: Llm = "local",
    model: Model = None,
    backend: Backend = None,
    planner: Planner = "rule",
    llm_concurrency: LlmConcurrency = 8,
    timeout: Timeout = 60.0,
) -> None:
    """Run the 100 example tasks (examples/tasks.jsonl) on the embedded local LLM."""
    options = _LlmOptions(llm, model, llm_concurrency, timeout, None, None)
    raise typer.Exit(
        _run_file(DEMO_TASKS, out, concurrency, chunk_tokens, backend, planner, options)
    )


@app.command()
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
        stages: dict[str, int] = {}

        def progress(stage: str, percent: int | None) -> None:
            if stage not in stages:
                stages[stage] = bar.add_task(stage, total=100)
            if percent is not None:
                bar.update(stages[stage], completed=percent)

        try:
            local_setup.install(progress)
        except SetupError as exc:
            bar.stop()
            _fail(str(exc))
    typer.echo("local LLM ready")


@app.command()
def chain(
    prompt: Annotated[str, typer.Argument(help="The initial prompt.")],
    specialists: Annotated[
        str,
        typer.Option(help="Comma-separated specialist names, in order (built-in or from --file)."),
    ] = "system_specialist,agent_enforcer,decision_simplifier",
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
    out: Annotated[Path, typer.Option("--out", "-o", help="Where to write the report.")] = Path(
        "report.md"
    ),
) -> None:
    """Run a chain of specialists, streaming each step; write a Chain Execution Results report."""
    from anabranch.agents.specialists import load_specialists, resolve_specialists
    from anabranch.errors import InputError

    try:
        defined = load_specialists(file) if file else []
        chosen = resolve_specialists(
            [n.strip() for n in specialists.split(",") if n.strip()], defined
        )
    except (InputError, OSError) as exc:
        _fail(str(exc))
    # One request at a time: a chain is sequential, and the local server then gives it the whole
    # context window for the growing prompt.
    options = _LlmOptions(llm, model, 1, timeout, None, None)
    try:
        result = asyncio.run(_run_chain(prompt, chosen, context, options))
    except (SetupError, ValueError) as exc:
        _fail(str(exc))
    from anabranch.chain_report import render_chain_report

    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(render_chain_report(result), encoding="utf-8")
    typer.echo(f"\nreport: {out}")
    raise typer.Exit(EXIT_OK if result.complete else EXIT_ERRORS)


async def _run_chain(prompt, specialists, context, options):
    from anabranch.graphs.chain import build_chain_graph, chain_result

    async with contextlib.AsyncExitStack() as stack:
        endpoint = await stack.enter_async_context(_endpoint(options))
        own = {
            s.name: await stack.enter_async_context(
                Endpoint(s.base_url, s.model or endpoint.model, timeouts=endpoint.timeouts)
            )
            for s in specialists
            if s.base_url
        }
        graph = build_chain_graph(specialists, endpoint, context=context, endpoints=own)
        state = None
        async for mode, chunk in graph.astream(
            {"prompt": prompt}, stream_mode=["custom", "values"]
        ):
            if mode == "values":
                state = chunk
            elif chunk["event"] == "step_start":
                typer.secho(f"\n## Step {chunk['step']}: {chunk['specialist']}\n", bold=True)
            elif chunk["event"] == "text":
                typer.echo(chunk["text"], nl=False)
            elif chunk["event"] == "step_end":
                status = "" if chunk["status"] == "ok" else " - FAILED"
                typer.secho(f"\n[{chunk['seconds']:.1f} s{status}]", dim=True)
        return chain_result(state, specialists)


@app.command()
def serve(
    graph: Annotated[
        list[str] | None,
        typer.Option(
            help="Graphs to serve: analyze, chain, or module:attr (repeatable). "
            "Default: analyze and chain."
        ),
    ] = None,
    host: Annotated[str, typer.Option(help="Address to listen on.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port to listen on.")] = 8000,
    llm: Llm = "local",
    model: Model = None,
    backend: Backend = None,
    llm_concurrency: LlmConcurrency = 8,
    timeout: Timeout = 120.0,
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
) -> None:
    """Serve graphs as OpenAI-compatible chat models (POST /v1/chat/completions)."""
    from anabranch.chat.app import is_loopback

    given = api_token if api_token is not None else os.environ.get("ANABRANCH_API_TOKEN")
    token = given.strip() if given and given.strip() else None  # an empty token is no token
    if token is None and not is_loopback(host):
        why = "the token given is empty" if given is not None else "neither is set"
        _fail(
            f"serving on {host} needs --api-token or ANABRANCH_API_TOKEN ({why}): the host is "
            "not loopback, so anyone who reaches it could use the server"
        )
    if token is None and given is not None:
        typer.echo("warning: the API token is empty, so none is required (loopback only)", err=True)
    options = _LlmOptions(llm, model, llm_concurrency, timeout, None, None)
    try:
        asyncio.run(
            _serve(graph or ["analyze", "chain"], host, port, backend, options, token,
                   str(threads_db), max_runs)
        )  # fmt: skip
    except (SetupError, ValueError) as exc:
        _fail(str(exc))


async def _serve(names, host, port, backend, options, token, threads_db, max_runs) -> None:
    import uvicorn

    from anabranch.chat import create_app

    async with _endpoint(options) as endpoint:
        chats = [_chat_graph(name, backend, endpoint) for name in names]
        app = create_app(chats, api_token=token, threads_db=threads_db,
                         max_concurrent_runs=max_runs)  # fmt: skip
        typer.echo(f"serving {', '.join(c.name for c in chats)} at http://{host}:{port}/v1")
        server = uvicorn.Server(uvicorn.Config(app, host=host, port=port, log_level="warning"))
        await server.serve()


def _chat_graph(name: str, backend: str | None, endpoint: Endpoint | None):
    """A served graph by name: a built-in, or `module:attr` naming a ChatGraph or a graph."""
    import importlib

    from anabranch.agents.analysts import make_agents
    from anabranch.agents.specialists import DEFAULT_CHAIN
    from anabranch.chat import AnalyzeChat, ChainChat, MessagesChat
    from anabranch.graphs.chain import build_chain_graph

    if name == "analyze":
        agents = make_agents(_parse_backend(backend, endpoint is not None), endpoint)
        return AnalyzeChat(build_fanout_graph(agents=agents, checkpointer=False))
    if name == "chain":
        if endpoint is None:
            raise ValueError("the chain graph needs --llm (local or a URL)")
        graph = build_chain_graph(DEFAULT_CHAIN, endpoint, checkpointer=False)
        return ChainChat(graph, DEFAULT_CHAIN)
    module, _, attr = name.partition(":")
    if not attr:
        raise ValueError(f"unknown graph {name!r}: use analyze, chain or module:attr")
    target = getattr(importlib.import_module(module), attr)
    return target if hasattr(target, "start") else MessagesChat(target, name=attr)


@app.command("fault-server")
def fault_server(
    port: Annotated[int, typer.Option(help="Port on 127.0.0.1.")] = 8001,
    config: Annotated[
        str, typer.Option(help='FaultConfig as JSON, e.g. \'{"rates": {"429": 0.2}}\'.')
    ] = "{}",
) -> None:
    """Serve the fault-injecting OpenAI-compatible endpoint, for testing your own graphs."""
    from anabranch.testing.fault_server import main

    main(["--port", str(port), "--config", config])


# -- running a file -----------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True, slots=True)
class _LlmOptions:
    """The LLM options every command shares, gathered at the edge."""

    llm: str | None
    model: str | None
    concurrency: int
    timeout: float
    rpm: float | None
    tpm: float | None


def _fail(message: str) -> None:
    typer.echo(f"error: {redact(message)}", err=True)
    raise typer.Exit(EXIT_USAGE)


def _parse_backend(spec: str | None, has_llm: bool) -> str | dict[str, str]:
    if spec is None:
        return "llm" if has_llm else "local"
    if "=" not in spec:
        return spec
    pairs = [part.split("=", 1) for part in spec.split(",") if part.strip()]
    return {name.strip(): value.strip() for name, value in pairs}


@contextlib.asynccontextmanager
async def _endpoint(options: _LlmOptions) -> AsyncIterator[Endpoint | None]:
    """The endpoint the options ask for, starting (and finally stopping) the local server."""
    if options.llm is None:
        yield None
        return
    limits = {
        "limits": Limits(options.concurrency, options.rpm, options.tpm),
        "timeouts": Timeouts(attempt=options.timeout),
    }
    if options.llm == "local":
        from anabranch.llm.local_server import LocalLLMServer

        async with LocalLLMServer(parallel=options.concurrency) as server:
            typer.echo(f"LLM: embedded llama.cpp server, {server.model} at {server.url}")
            async with Endpoint(server.url, options.model or server.model, **limits) as endpoint:
                yield endpoint
        return
    if not options.model:
        _fail("--model is required with --llm URL (the name the server knows the model by)")
    key = next((os.environ[v] for v in API_KEY_VARIABLES if os.environ.get(v)), "not-needed")
    async with Endpoint(options.llm, options.model, api_key=SecretStr(key), **limits) as endpoint:
        typer.echo(f"LLM: {options.model} at {endpoint.public_url}")
        yield endpoint


def _run_file(
    input: Path,
    out: Path,
    concurrency: int,
    chunk_tokens: int,
    backend: str | None,
    planner: str,
    options: _LlmOptions,
) -> int:
    try:
        report, rejections = asyncio.run(
            _run_async(input, out, concurrency, chunk_tokens, backend, planner, options)
        )
    except (SetupError, ValueError) as exc:
        _fail(str(exc))
    for message in rejections:
        typer.echo(f"rejected: {message}", err=True)
    typer.echo(render_trace(report))
    typer.echo(f"results: {out}")
    if report.tasks_rejected:
        return EXIT_USAGE
    return EXIT_ERRORS if report.tasks_partial or report.tasks_failed else EXIT_OK


async def _run_async(input, out, concurrency, chunk_tokens, backend, planner, options):
    from anabranch.agents.analysts import DESCRIPTIONS, make_agents
    from anabranch.agents.planner import LLMPlanner, RulePlanner

    choice = _parse_backend(backend, options.llm is not None)
    wants_llm = planner == "llm" or "llm" in (
        [choice] if isinstance(choice, str) else choice.values()
    )
    if wants_llm and options.llm is None:
        raise ValueError("the llm backend and the llm planner need --llm (local or a URL)")
    if not wants_llm:  # nothing will call an LLM: do not start or reach one
        options = dataclasses.replace(options, llm=None)
    async with _endpoint(options) as endpoint:
        agents = make_agents(choice, endpoint)
        names = [a.name for a in agents]
        rule = RulePlanner(kinds=names, chunk_tokens=chunk_tokens)
        plan = rule if planner == "rule" else LLMPlanner(endpoint, DESCRIPTIONS, rule=rule)
        graph = build_fanout_graph(plan, agents)
        tasks = list(read_tasks(input))
        return await _write_results(run_batch(tasks, graph, concurrency=concurrency), out)


async def _write_results(batch: BatchRun, out: Path) -> tuple[RunReport, list[str]]:
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
