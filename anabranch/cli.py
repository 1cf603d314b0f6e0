"""The `anabranch` command: it parses options, calls the library and prints. Environment settings
are read here, at the edge, and nowhere else.

Exit codes keep results and crashes apart (docs/architecture.md, rule 9):
0 every task complete; 4 every task delivered, some with error records; 2 bad usage, a setup
problem or rejected input lines; 3 an unexpected failure, with its traceback.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import os
import random
import sys
import time
import traceback
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Annotated, Any, Literal, get_type_hints

import typer
from pydantic import SecretStr

from anabranch import __version__
from anabranch.analysis import (
    DEFAULT_LLM_BACKEND,
    SENTIMENT_BACKENDS,
    AnalysisRecord,
    PlannerKind,
    build_analysis_graph,
    needs_llm,
    parse_backend,
)
from anabranch.analysis.evaluation import (
    builtin_set,
    evaluate,
    read_labelled,
    render,
    write_figures,
)
from anabranch.errors import AnabranchError, ConfigError
from anabranch.graphs.cluster import RayExecutor
from anabranch.graphs.progress import Display
from anabranch.graphs.runner import BatchRun, Resume, run_batch
from anabranch.graphs.spec import GraphSpec, analysis_spec
from anabranch.graphs.state import Graph
from anabranch.inputs import count_task_lines, example_tasks, read_tasks
from anabranch.journal import Journal, fingerprint, run_id_for
from anabranch.llm.connect import LLMOptions, maybe_endpoint, open_endpoint, without_llm
from anabranch.llm.endpoint import Endpoint
from anabranch.llm.settings import Limits, Timeouts
from anabranch.redact import redact
from anabranch.report import render_trace
from anabranch.types import RunReport

app = typer.Typer(
    help="anabranch: multi-agent graphs whose agents call LLMs concurrently and lose nothing.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,  # main() decides what an exception means
)

EXIT_OK = 0
"""Every task delivered and complete."""
EXIT_USAGE = 2
"""Bad usage, a setup problem, or input lines rejected (the rest still ran)."""
EXIT_CRASH = 3
"""Something unexpected: a bug. The traceback is printed."""
EXIT_PARTIAL = 4
"""Every task delivered, some with error records: a result, not a failure."""

API_KEY_VARIABLES = ("ANABRANCH_LLM_API_KEY", "OPENAI_API_KEY")


def main() -> None:
    """The console entry point: runs the command and maps what escapes it to an exit code."""
    try:
        app(prog_name="anabranch")
    except AnabranchError as exc:
        typer.echo(f"error: {exc}", err=True)
        sys.exit(EXIT_USAGE)
    except Exception:  # noqa: BLE001 - a bug: say so, with the traceback, and never exit 0/4
        trace = redact("".join(traceback.format_exc()))
        typer.echo(f"{trace}\nanabranch crashed: this is a bug, please report it", err=True)
        sys.exit(EXIT_CRASH)


# -- options shared by the commands ---------------------------------------------------------------

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
Model = Annotated[
    str | None,
    typer.Option(help="Model name to ask the server for; default: the one model it serves."),
]
Backend = Annotated[
    str | None,
    typer.Option(
        help="Where the analysts run: `local` (tiktoken, YAKE, VADER), `llm` (sentiment as the "
        "model's JSON judgement), `llm-probs` (llm, sentiment read off token probabilities), "
        "`llm-blend` (llm, those probabilities blended with VADER), or per agent, e.g. "
        "`keywords=llm,sentiment=local`. Default with --llm: sentiment on "
        f"{DEFAULT_LLM_BACKEND['sentiment']}, the others on llm; without it, local."
    ),
]
Planner = Annotated[
    Literal["rule", "llm"],
    typer.Option(help="`rule`: every agent for every task; `llm`: the model picks the agents."),
]
LlmConcurrency = Annotated[int, typer.Option(min=1, help="LLM requests in flight at once.")]
Timeout = Annotated[float, typer.Option(min=0.1, help="Seconds one LLM attempt may take.")]
Deadline = Annotated[
    float,
    typer.Option(
        min=0.1, help="Seconds one LLM call may take, retries included (not its wait for a slot)."
    ),
]
Rpm = Annotated[float | None, typer.Option(min=0.001, help="LLM requests per minute, at most.")]
Tpm = Annotated[float | None, typer.Option(min=1, help="LLM tokens per minute, at most.")]


def _llm_options(
    llm: str | None,
    model: str | None,
    *,
    concurrency: int = 8,
    timeout: float = 60.0,
    deadline: float = 180.0,
    rpm: float | None = None,
    tpm: float | None = None,
    cache: Path | None = None,
    adaptive: bool = True,
    give_up_after: float | None = 300.0,
) -> LLMOptions:
    key = next((os.environ[v] for v in API_KEY_VARIABLES if os.environ.get(v)), None)
    return LLMOptions(
        llm=llm,
        model=model,
        api_key=SecretStr(key) if key else None,
        timeouts=Timeouts(attempt=timeout, call=max(deadline, timeout)),
        limits=Limits(concurrency, rpm, tpm, adaptive=adaptive, give_up_after=give_up_after),
        cache=cache,
    )


# -- run and demo --------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class BatchOptions:
    """Everything `run` and `demo` are told, gathered once."""

    out: Path
    """Where the results go, one JSON line per task."""
    concurrency: int
    """Graph runs in flight at once."""
    chunk_tokens: int
    """Token budget of one chunk."""
    backend: str | None
    """Where the analysts run (see `--backend`)."""
    planner: PlannerKind
    """`rule` or `llm`."""
    llm: LLMOptions
    """The LLM, if any."""
    journal: Path | None
    """Where finished work is recorded, so a re-run resumes; None keeps none."""
    fresh: bool
    """Forget what the journal holds for this run and start over."""
    retry_failed: bool
    """Run again the failed subtasks of tasks an earlier run delivered with errors."""
    executor: Literal["local", "ray"] = "local"
    """Where the graphs run: this process, or the workers of a Ray cluster."""
    ray_address: str | None = None
    """The Ray cluster: None starts a local one; `auto`, or `ray://host:10001`."""
    workers: int = 2
    """Ray workers."""


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
    deadline: Deadline = 180.0,
    rpm: Rpm = None,
    tpm: Tpm = None,
    journal: Annotated[
        Path | None,
        typer.Option(help="The run's journal (SQLite). Default: OUT.journal beside the output."),
    ] = None,
    no_journal: Annotated[
        bool, typer.Option("--no-journal", help="Keep no journal: an interrupted run starts over.")
    ] = False,
    resume: Annotated[
        bool,
        typer.Option(
            "--resume/--fresh",
            help="Resume from the journal what an interrupted run of the same INPUT and OUT "
            "finished (the default), or start over.",
        ),
    ] = True,
    retry_failed: Annotated[
        bool,
        typer.Option(
            help="Re-run only the failed subtasks of tasks an earlier run delivered with errors."
        ),
    ] = False,
    cache: Annotated[
        Path | None,
        typer.Option(
            help="A response cache (SQLite): deterministic LLM requests answered once are not "
            "sent again, in this run or the next."
        ),
    ] = None,
    adaptive: Annotated[
        bool,
        typer.Option(
            "--adaptive/--static",
            help="Find the server's capacity up to --llm-concurrency (the default), or always "
            "send --llm-concurrency requests at once.",
        ),
    ] = True,
    give_up_after: Annotated[
        float,
        typer.Option(
            min=1,
            help="Seconds a server may keep failing before the remaining subtasks fail fast "
            "(the journal resumes them later).",
        ),
    ] = 300.0,
    executor: Annotated[
        str,
        typer.Option(
            help="Where the graphs run: `local` (this process) or `ray` (the workers of a Ray "
            "cluster; pip install 'anabranch[ray]'). Limits are the whole cluster's."
        ),
    ] = "local",
    ray_address: Annotated[
        str | None,
        typer.Option(help="The Ray cluster: `auto`, `ray://host:10001`; default a local one."),
    ] = None,
    workers: Annotated[int, typer.Option(min=1, help="Ray workers (with --executor ray).")] = 2,
) -> None:
    """Run the fan-out analysis (tokens, keywords, sentiment) over a JSONL file of tasks.

    Finished work is journaled as it happens: after a crash, the same command resumes."""
    if not input.is_file():
        raise ConfigError(f"no such input file: {input}")
    options = BatchOptions(
        out=out,
        concurrency=concurrency,
        chunk_tokens=chunk_tokens,
        backend=backend,
        planner=planner,
        llm=_llm_options(
            llm,
            model,
            concurrency=llm_concurrency,
            timeout=timeout,
            deadline=deadline,
            rpm=rpm,
            tpm=tpm,
            cache=cache,
            adaptive=adaptive,
            give_up_after=give_up_after,
        ),
        journal=None if no_journal else journal or out.with_name(out.name + ".journal"),
        fresh=not resume,
        retry_failed=retry_failed,
        executor="ray" if executor == "ray" else "local",
        ray_address=ray_address,
        workers=workers,
    )
    if executor not in ("local", "ray"):
        raise ConfigError(f"unknown executor {executor!r}; use local or ray")
    if executor == "ray" and llm == "local" and (ray_address or "").startswith("ray://"):
        raise ConfigError(
            "the embedded LLM runs on this machine, out of a remote cluster's reach: give its "
            "workers a server they can reach (--llm URL)"
        )
    if no_journal and (retry_failed or not resume):
        raise ConfigError("--retry-failed and --fresh work on a journal: drop --no-journal")
    raise typer.Exit(asyncio.run(_run_file(input, options)))


def demo(**options: Any) -> None:
    """Run the 100 example tasks on the embedded local LLM (or `--backend local`)."""
    run(example_tasks(), **options)


def _demo_signature() -> None:
    """`demo` takes run's options, all but the input file, with the embedded LLM by default."""
    hints = get_type_hints(run, include_extras=True)
    parameters = [
        p.replace(annotation=hints[p.name], default="local" if p.name == "llm" else p.default)
        for p in inspect.signature(run).parameters.values()
        if p.name != "input"
    ]
    demo.__signature__ = inspect.Signature(parameters)  # type: ignore[attr-defined]
    demo.__annotations__ = {p.name: p.annotation for p in parameters}


_demo_signature()
app.command("demo")(demo)


async def _run_file(input: Path, options: BatchOptions) -> int:
    if options.out.resolve() == input.resolve():
        raise ConfigError(f"--out {options.out} is the input file: it would be overwritten")
    llm = options.llm
    choice = parse_backend(options.backend, llm.llm is not None)
    wants_llm = options.planner == "llm" or needs_llm(choice)
    if wants_llm and llm.llm is None:
        raise ConfigError("the llm backend and the llm planner need --llm (local or a URL)")
    if not wants_llm:  # nothing will call an LLM: do not start or reach one
        llm = without_llm(llm)
    try:  # the output's folder first: the journal lives beside it by default
        options.out.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ConfigError(f"cannot write results to {options.out}: {exc.strerror}") from exc
    journal = Journal(options.journal) if options.journal else None
    run_id = run_id_for(input, options.out)
    if journal is not None and not options.fresh:
        # What earlier attempts delivered stays in the output while this one runs (but for the
        # tasks it is about to retry, which it will write again).
        journal.lock()
        await asyncio.to_thread(_rewrite_in_input_order, journal, run_id, options.out,
                                complete_only=options.retry_failed)  # fmt: skip
    sink = _open_out(options.out, append=journal is not None and not options.fresh)
    with sink, contextlib.closing(journal) if journal else contextlib.nullcontext():
        async with maybe_endpoint(llm, typer.echo) as endpoint:
            config = {
                "backend": choice, "planner": options.planner, "version": __version__,
                "chunk_tokens": options.chunk_tokens, "model": endpoint and endpoint.model,
            }  # fmt: skip
            total = await asyncio.to_thread(count_task_lines, input)
            executor, target = _where(options, endpoint)
            resume = None
            if journal is not None:
                resume = Resume(journal, run_id, fingerprint=fingerprint(config),
                                fresh=options.fresh, retry_failed=options.retry_failed,
                                description=f"{input} -> {options.out}")  # fmt: skip
            display = Display(total=total, watch=endpoint if executor is None else None)
            batch = run_batch(
                read_tasks(input),
                target,
                concurrency=options.concurrency,
                executor=executor,
                resume=resume,
                display=display,
            )
            report, rejections = await _write_results(batch, sink, options.out)
        if journal is not None:  # the journal is the truth: the output is its view, in order
            await asyncio.to_thread(_rewrite_in_input_order, journal, run_id, options.out)
    for message in rejections:
        typer.echo(f"rejected: {message}", err=True)
    typer.echo(render_trace(report))
    typer.echo(f"results: {options.out}")
    if journal is not None:
        typer.echo(f"journal: {options.journal} (run {run_id})")
    if report.tasks_rejected:
        return EXIT_USAGE
    return EXIT_PARTIAL if report.tasks_partial or report.tasks_failed else EXIT_OK


def _where(
    options: BatchOptions, endpoint: Endpoint | None
) -> tuple[RayExecutor | None, Graph | GraphSpec]:
    """Where the batch runs: the analysis graph here, or its recipe on a Ray cluster's workers
    (each with its own endpoint to the same server, on its share of the limits)."""
    if options.executor == "local":
        graph = build_analysis_graph(endpoint, backend=options.backend, planner=options.planner,
                                     chunk_tokens=options.chunk_tokens)  # fmt: skip
        return None, graph
    spec = analysis_spec(options.llm, endpoint, backend=options.backend,
                         planner=options.planner, chunk_tokens=options.chunk_tokens)  # fmt: skip
    return RayExecutor(options.ray_address, options.workers), spec


def _open_out(out: Path, *, append: bool = False) -> IO[str]:
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        return out.open("a" if append else "w", encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"cannot write results to {out}: {exc.strerror or exc}") from exc


async def _write_results(batch: BatchRun, sink: IO[str], out: Path) -> tuple[RunReport, list[str]]:
    """Stream results to disk as they complete (on a thread: the event loop never waits on the
    disk), so an interrupted run keeps what it finished.

    Returns the run report and the messages of rejected input lines, to show the user.
    """
    rejections: list[str] = []

    def write(line: str) -> None:
        sink.write(line)
        sink.flush()

    async for result in batch:
        if result.task_id in batch.replayed and sink.mode == "a":
            continue  # already in the output, rebuilt from the journal
        try:
            await asyncio.to_thread(write, AnalysisRecord.of(result).model_dump_json() + "\n")
        except OSError as exc:
            raise ConfigError(f"cannot write results to {out}: {exc.strerror or exc}") from exc
        if result.status == "rejected":
            rejections.extend(e.message for e in result.errors)
    return batch.report, rejections


def _rewrite_in_input_order(
    journal: Journal, run_id: str, out: Path, *, complete_only: bool = False
) -> None:
    """The output as the journal holds it, in input order, replacing the file at once: never a
    partial line, never a task twice, and two runs of one input can be diffed."""
    partial = out.with_name(out.name + ".partial")
    try:
        with partial.open("w", encoding="utf-8") as f:
            for result in journal.results(run_id, complete_only=complete_only):
                f.write(AnalysisRecord.of(result).model_dump_json() + "\n")
        os.replace(partial, out)
    except OSError as exc:
        raise ConfigError(f"cannot write results to {out}: {exc.strerror or exc}") from exc


# -- runs ----------------------------------------------------------------------------------------


@app.command()
def runs(
    words: Annotated[
        list[str] | None,
        typer.Argument(
            help="[JOURNAL] to list its runs, or `show ID [JOURNAL]` for one run's trace. "
            "Default journal: results.jsonl.journal."
        ),
    ] = None,
) -> None:
    """List the runs a journal holds, or show one run's trace."""
    words = list(words or [])
    show = words[:1] == ["show"]
    if show and len(words) < 2:
        raise ConfigError("usage: anabranch runs show ID [JOURNAL]")
    if show:
        path = Path(words[2] if len(words) > 2 else "results.jsonl.journal")
    else:
        path = Path(words[0] if words else "results.jsonl.journal")
    if not path.is_file():
        raise ConfigError(f"no journal at {path}")
    with Journal(path) as journal:
        if show:
            _show_run(journal, words[1])
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


def _show_run(journal: Journal, run_id: str) -> None:
    report = journal.report(run_id)
    if report is not None:
        typer.echo(render_trace(report))
        return
    (info,) = [r for r in journal.runs() if r.run_id == run_id]
    typer.echo(f"run {run_id} did not finish; re-run its command to resume it")
    typer.echo(f"delivered so far: {info.tasks}")


# -- eval ----------------------------------------------------------------------------------------


@app.command("eval")
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
            f"Known: {', '.join(SENTIMENT_BACKENDS)}. Default: local, and "
            f"{DEFAULT_LLM_BACKEND['sentiment']} with --llm."
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
    deadline: Deadline = 180.0,
) -> None:
    """Measure sentiment backends against human labels: agreement with a 95 % interval, per-class
    precision / recall / F1, the confusion matrix, failed outputs, tokens and time."""
    source = labelled or builtin_set()
    if not source.is_file():
        raise ConfigError(f"no such labelled file: {source}")
    if split is None:
        split = "held-out" if labelled is None else "all"
    backends = backend or (["local", DEFAULT_LLM_BACKEND["sentiment"]] if llm else ["local"])
    if unknown := [b for b in backends if b not in SENTIMENT_BACKENDS]:
        raise ConfigError(f"unknown backends {unknown}; known: {', '.join(SENTIMENT_BACKENDS)}")
    if any(b != "local" for b in backends) and llm is None:
        raise ConfigError("the llm backends need --llm (local or a URL)")
    options = _llm_options(llm, model, concurrency=llm_concurrency, timeout=timeout,
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
    source, split, band = asked.source, asked.split, asked.band
    labelled = await asyncio.to_thread(read_labelled, source, band=band, split=split)
    for problem in labelled.problems:
        typer.echo(f"rejected: {source}: {problem}", err=True)
    items = labelled.items
    if asked.sample is not None and asked.sample < len(items):
        drawn = set(random.Random(0).sample(range(len(items)), asked.sample))
        items = [item for i, item in enumerate(items) if i in drawn]
    if not items:
        raise ConfigError(f"{source}: no labelled texts to measure on (split {split}, band {band})")
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


# -- setup ---------------------------------------------------------------------------------------


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
        stages: dict[str, Any] = {}

        def progress(stage: str, percent: int | None) -> None:
            if stage not in stages:
                stages[stage] = bar.add_task(stage, total=100)
            if percent is not None:
                bar.update(stages[stage], completed=percent)

        local_setup.install(progress)  # a SetupError says why, and exits 2
    typer.echo("local LLM ready")


# -- chain ---------------------------------------------------------------------------------------


@app.command()
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
    deadline: Deadline = 600.0,
    out: Annotated[Path, typer.Option("--out", "-o", help="Where to write the report.")] = Path(
        "report.md"
    ),
) -> None:
    """Run a chain of specialists, streaming each step; write a Chain Execution Results report."""
    from anabranch.agents.specialists import DEFAULT_CHAIN, load_specialists, resolve_specialists
    from anabranch.chain_report import render_chain_report

    defined = load_specialists(file) if file else []
    if specialists is not None:
        names = [n.strip() for n in specialists.split(",") if n.strip()]
    else:  # a file given alone is the chain to run
        names = [s.name for s in defined or DEFAULT_CHAIN]
    chosen = resolve_specialists(names, defined)
    # One request at a time: a chain is sequential, and the local server then gives it the whole
    # context window for the growing prompt.
    options = _llm_options(llm, model, concurrency=1, timeout=timeout, deadline=deadline)
    result = asyncio.run(_run_chain(prompt, chosen, context, options))
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(render_chain_report(result), encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"cannot write the report to {out}: {exc.strerror or exc}") from exc
    typer.echo(f"\nreport: {out}")
    raise typer.Exit(EXIT_OK if result.complete else EXIT_PARTIAL)


async def _run_chain(prompt, specialists, context, options: LLMOptions):  # type: ignore[no-untyped-def]
    from anabranch.events import Event, StepEnded, StepStarted, TextDelta
    from anabranch.graphs.chain import run_specialists

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


# -- serve ---------------------------------------------------------------------------------------


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
    deadline: Deadline = 600.0,
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
        raise ConfigError(
            f"serving on {host} needs --api-token or ANABRANCH_API_TOKEN ({why}): the host is "
            "not loopback, so anyone who reaches it could use the server"
        )
    if token is None and given is not None:
        typer.echo("warning: the API token is empty, so none is required (loopback only)", err=True)
    options = _llm_options(llm, model, concurrency=llm_concurrency, timeout=timeout,
                           deadline=deadline)  # fmt: skip
    names = graph or ["analyze", "chain"]
    asyncio.run(_serve(names, host, port, backend, options, token, str(threads_db), max_runs))


async def _serve(  # type: ignore[no-untyped-def]
    names, host, port, backend, options: LLMOptions, token, threads_db, max_runs
) -> None:
    import uvicorn

    from anabranch.chat import create_app
    from anabranch.chat.adapters import chat_graph

    async with maybe_endpoint(options, typer.echo) as endpoint:
        chats = [chat_graph(name, endpoint, backend=backend) for name in names]
        app = create_app(chats, api_token=token, threads_db=threads_db,
                         max_concurrent_runs=max_runs)  # fmt: skip
        typer.echo(f"serving {', '.join(c.name for c in chats)} at http://{host}:{port}/v1")
        server = uvicorn.Server(uvicorn.Config(app, host=host, port=port, log_level="warning"))
        try:
            await server.serve()
        finally:
            await app.aclose()


# -- fault server --------------------------------------------------------------------------------


@app.command("fault-server")
def fault_server(
    port: Annotated[int, typer.Option(help="Port on 127.0.0.1.")] = 8001,
    config: Annotated[
        str, typer.Option(help='FaultConfig as JSON, e.g. \'{"rates": {"429": 0.2}}\'.')
    ] = "{}",
) -> None:
    """Serve the fault-injecting OpenAI-compatible endpoint, for testing your own graphs."""
    from anabranch.testing.fault_server import main as serve_faults

    serve_faults(["--port", str(port), "--config", config])
