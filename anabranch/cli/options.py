"""The options several commands share, and the LLM options they build.

Importing this module costs nothing heavy: `anabranch --help` reads it before any command runs,
so what the help text needs to name (the default backends) is written here, and a test keeps it
equal to the library's own constants.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Literal

import typer

if TYPE_CHECKING:
    from anabranch.llm.connect import LLMOptions
    from anabranch.llm.endpoint import Endpoint

API_KEY_VARIABLES = ("ANABRANCH_LLM_API_KEY", "OPENAI_API_KEY")
"""Where the API key is read from, first found wins (a key inside the `--llm` URL wins over
both)."""

DEFAULT_SENTIMENT_WITH_LLM = "llm-blend"
"""`DEFAULT_LLM_BACKEND["sentiment"]` of the analysts, named without importing them."""

KNOWN_SENTIMENT_BACKENDS = ("local", "llm", "llm-probs", "llm-blend")
"""The analysts' `SENTIMENT_BACKENDS`, for the help text."""

PlannerKind = Literal["rule", "llm"]

Concurrency = Annotated[
    int,
    typer.Option(
        "--concurrency", "-c", min=1,
        help="Graph runs (tasks) at work at once; runs waiting out a Retry-After do not count.",
    ),
]  # fmt: skip
ChunkTokens = Annotated[
    int, typer.Option(min=16, help="Token budget of one chunk; longer texts are cut.")
]
Llm = Annotated[
    str | None,
    typer.Option(
        help="`local` for the embedded llama.cpp server, or the base URL of any "
        "OpenAI-compatible server (Ollama's http://localhost:11434 works as is; a key inside "
        "the URL, https://user:KEY@host/v1, is sent as the bearer token)."
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
        f"{DEFAULT_SENTIMENT_WITH_LLM}, the others on llm; without it, local."
    ),
]
Planner = Annotated[
    PlannerKind,
    typer.Option(help="`rule`: every agent for every task; `llm`: the model picks the agents."),
]
LlmConcurrency = Annotated[int, typer.Option(min=1, help="LLM requests in flight at once.")]
Timeout = Annotated[float, typer.Option(min=0.1, help="Seconds one LLM attempt may take.")]
Deadline = Annotated[
    float | None,
    typer.Option(
        min=0.1,
        help="Seconds one LLM call may take, retries included (not its wait for a slot). "
        "Default: 180 (600 for chain and serve), or up to ten times longer while the "
        "server's answers show it is that slow; a deadline given is kept.",
    ),
]
Otel = Annotated[
    bool,
    typer.Option(
        "--otel",
        help="Send OpenTelemetry traces and metrics over OTLP/HTTP where the OTEL_* "
        "variables say (on by itself when OTEL_EXPORTER_OTLP_ENDPOINT is set); "
        "pip install 'anabranch[otel]'.",
    ),
]
Rpm = Annotated[float | None, typer.Option(min=0.001, help="LLM requests per minute, at most.")]
Tpm = Annotated[float | None, typer.Option(min=1, help="LLM tokens per minute, at most.")]


def llm_options(
    llm: str | None,
    model: str | None,
    *,
    concurrency: int = 8,
    timeout: float = 60.0,
    deadline: float | None = None,
    default_deadline: float = 180.0,
    rpm: float | None = None,
    tpm: float | None = None,
    cache: Path | None = None,
    adaptive: bool = True,
    give_up_after: float | None = 300.0,
) -> LLMOptions:
    """The LLM the options name. A key inside the URL is taken out of it and sent as the bearer
    token: left in, httpx would send it as HTTP Basic, which OpenAI-style servers refuse.
    Without a `deadline`, a call may take `default_deadline`, stretched by the server's
    measured speed (`Timeouts.stretch`)."""
    from pydantic import SecretStr

    from anabranch.llm.connect import LOCAL, LLMOptions
    from anabranch.llm.settings import STRETCH, Limits, Timeouts
    from anabranch.redact import split_credentials

    key = next((os.environ[v] for v in API_KEY_VARIABLES if os.environ.get(v)), None)
    if llm is not None and llm != LOCAL:
        llm, in_url = split_credentials(llm)
        key = in_url or key
    return LLMOptions(
        llm=llm,
        model=model,
        api_key=SecretStr(key) if key else None,
        timeouts=Timeouts(
            attempt=min(timeout, deadline or default_deadline),
            call=deadline or default_deadline,
            stretch=STRETCH if deadline is None else 1.0,
        ),
        limits=Limits(concurrency, rpm, tpm, adaptive=adaptive, give_up_after=give_up_after),
        cache=cache,
    )


def server_failure(endpoint: Endpoint | None, api_key: str | None) -> str | None:
    """Why a run's results are not results: the server refused the key (and where the key came
    from, to fix it: `api_key` is the one the run sent), or not one LLM call got an answer."""
    if endpoint is None:
        return None
    if (refused := endpoint.refused_key) is not None:
        given = next((v for v in API_KEY_VARIABLES if os.environ.get(v)), None)
        if api_key and (given is None or os.environ[given] != api_key):
            source = "the URL"  # a key inside `--llm` wins over the variables
        elif given:
            source = f"${given}"
        else:
            source = f"no key was given (set {API_KEY_VARIABLES[0]})"
        return f"{refused}; the key came from {source}"
    stats = endpoint.slot_stats
    if stats.requests and not stats.answered:
        return f"not one LLM call to {endpoint.public_url} got an answer ({stats.requests} sent)"
    return None
