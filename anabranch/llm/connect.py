"""Opening an endpoint from options: what the CLI does, as a function a notebook can call too.

`local` starts the embedded llama.cpp server; a URL is checked once before any work starts, so a
wrong address fails in a second with the address in the message, not after every task has spent
its retries. Without a model name the server is asked which models it serves: one is used (and
said), several are listed.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field, replace
from pathlib import Path

import openai
from pydantic import SecretStr

from anabranch.errors import ConfigError, SetupError
from anabranch.llm.cache import ResponseCache
from anabranch.llm.endpoint import Endpoint
from anabranch.llm.learnt import Memory
from anabranch.llm.retry import short
from anabranch.llm.settings import STRETCH, BatchSettings, Limits, RetryPolicy, Timeouts
from anabranch.llm.url import normalize_base_url

LOCAL = "local"
"""The `llm` value that means the embedded llama.cpp server."""


@dataclass(frozen=True, slots=True)
class LLMOptions:
    """Which LLM to use and how to treat it (the CLI's `--llm`, `--model` and their friends)."""

    llm: str | None = None
    """`local` for the embedded server, the base URL of an OpenAI-compatible server, or None
    for no LLM at all."""
    model: str | None = None
    """The model to ask for; None asks the server and uses the one model it serves."""
    api_key: SecretStr | None = field(default=None, repr=False)
    """Sent as the bearer token; None sends a placeholder (local servers need none)."""
    timeouts: Timeouts = field(default_factory=lambda: Timeouts(stretch=STRETCH))
    """Per attempt and per call; as the commands' defaults, longer while the server is slow."""
    limits: Limits = field(default_factory=Limits)
    """Concurrency, requests and tokens per minute."""
    retry: RetryPolicy = field(default_factory=RetryPolicy)
    """What is retried, how often."""
    check_timeout: float = 10.0
    """Seconds the one check of a remote server before the work starts may take."""
    cache: Path | None = None
    """A response cache file: deterministic requests already answered are not sent again."""
    batch: BatchSettings | None = None
    """Send chat calls through the provider's Batch API instead of live (`Endpoint.batch`)."""

    def __post_init__(self) -> None:
        if self.llm not in (None, LOCAL):
            normalize_base_url(self.llm)  # refuses `notaurl`, `ftp://...` here, up front


Say = Callable[[str], None]
"""Where start-up lines go (the CLI prints them; a library caller may drop them)."""


@asynccontextmanager
async def open_endpoint(options: LLMOptions, say: Say = lambda _: None) -> AsyncIterator[Endpoint]:
    """The endpoint `options` ask for, ready to use; the embedded server, if started, stops on
    exit. Raises ConfigError for a model the server cannot settle, SetupError for a server that
    cannot be reached or refuses the key."""
    if options.llm is None:
        raise ConfigError("no LLM was asked for (llm is None)")

    cache = ResponseCache(options.cache) if options.cache else None

    def endpoint_at(url: str, model: str) -> Endpoint:
        return build_endpoint(options, url=url, model=model, cache=cache)

    with contextlib.closing(cache) if cache else contextlib.nullcontext():
        async with _opened(options, endpoint_at, say) as endpoint:
            yield endpoint


def build_endpoint(
    options: LLMOptions,
    *,
    url: str | None = None,
    model: str | None = None,
    limits: Limits | None = None,
    cache: ResponseCache | None = None,
) -> Endpoint:
    """The one way an `Endpoint` is made from options: in this process, on a Ray worker, for a
    chain's specialist, in a benchmark. Nothing is checked or started (`open_endpoint` does that).

    `url` is where the server is (the embedded server's address for `local`; default the `llm`
    URL), `model` the model settled on (default `options.model`), `limits` this endpoint's part
    of `options.limits` (a worker's share), `cache` the open `ResponseCache` of `options.cache`
    (its opener closes it: one file may serve several endpoints). The embedded server keeps a
    static cap: its slots are ours to set, so the cap is exact, not a guess to adapt.
    """
    where = url or (options.llm if options.llm != LOCAL else None)
    if where is None:
        raise ConfigError("an endpoint needs a server: the llm URL, or the embedded server's")
    if options.cache is not None and cache is None:
        raise ConfigError(f"the options ask for the cache {options.cache}: give it open")
    held, key = limits or options.limits, options.api_key
    if options.llm == LOCAL:  # and its key is none: a key given for a remote server stays there
        held, key = replace(held, adaptive=False), None
    return Endpoint(where, model if model is not None else options.model or "",
                    api_key=key or SecretStr("not-needed"),
                    timeouts=options.timeouts, limits=held,
                    retry=options.retry, cache=cache, batch=options.batch)  # fmt: skip


@asynccontextmanager
async def _opened(
    options: LLMOptions, endpoint_at: Callable[..., Endpoint], say: Say
) -> AsyncIterator[Endpoint]:
    assert options.llm is not None
    if options.llm == LOCAL:
        from anabranch.llm.local_server import LocalLLMServer

        async with LocalLLMServer(parallel=options.limits.concurrency) as server:
            model = options.model or server.model
            say(f"LLM: embedded llama.cpp server, {model} at {server.url}")
            async with endpoint_at(server.url, model) as endpoint:
                yield endpoint
        return
    async with endpoint_at(options.llm, options.model or "") as endpoint:
        served = await _served_models(endpoint, options.check_timeout)
        if not options.model:
            endpoint.model = _only_model(served, endpoint.public_url)
            say(f"LLM: {endpoint.model} at {endpoint.public_url} (the one model it serves)")
        else:
            say(f"LLM: {endpoint.model} at {endpoint.public_url}")
        yield endpoint


@asynccontextmanager
async def maybe_endpoint(
    options: LLMOptions, say: Say = lambda _: None, memory: Memory | None = None
) -> AsyncIterator[Endpoint | None]:
    """`open_endpoint`, or None when the options ask for no LLM. A server's endpoint keeps what
    it learns in `memory` (llm/learnt.py); the embedded server is new on each run, on a new
    port, and takes everything: nothing to remember of it."""
    if options.llm is None:
        yield None
        return
    async with open_endpoint(options, say) as endpoint:
        if memory is not None and options.llm != LOCAL:
            endpoint.remember(memory)
        yield endpoint


def by_batch(options: LLMOptions, journal: Path | None, run_id: str) -> LLMOptions:
    """The options with their Batch API settings (if any) recording the run's batches in its
    journal, so a re-run of the run polls them instead of paying again."""
    if options.batch is None or options.llm is None:
        return options
    return replace(options, batch=replace(options.batch, journal=journal, run_id=run_id))


def in_flight(options: LLMOptions, concurrency: int, total: int | None) -> int:
    """Graph runs at once: `concurrency`, or by batch every task (a wave carries what waits)."""
    batched = options.batch is not None and options.llm is not None
    return max(concurrency, total or 0) if batched else concurrency


def without_llm(options: LLMOptions) -> LLMOptions:
    """The same options with no LLM: nothing will call one, so none is started or reached."""
    return replace(options, llm=None)


async def _served_models(endpoint: Endpoint, timeout: float) -> list[str] | None:
    """The models the server lists at /v1/models; None if it has no such route. Reaching it is
    also the check that the server is there and takes the key."""
    where = endpoint.public_url
    try:
        async with asyncio.timeout(timeout):
            page = await endpoint.client.models.list()
    except openai.NotFoundError:
        return None
    except openai.AuthenticationError as exc:
        raise SetupError(f"the LLM server at {where} refused the API key: {short(exc)}") from exc
    except openai.APIStatusError as exc:
        if exc.status_code in (405, 501):
            return None
        raise SetupError(
            f"the LLM server at {where} answered HTTP {exc.status_code}: {short(exc)}"
        ) from exc
    except (openai.APIConnectionError, TimeoutError) as exc:
        raise SetupError(
            f"cannot reach the LLM server at {where}: {short(exc) or type(exc).__name__} "
            "(is it running, and is the URL right?)"
        ) from exc
    return [m.id for m in page.data]


def _only_model(served: list[str] | None, where: str) -> str:
    if served is None:
        raise ConfigError(f"the server at {where} does not list its models: give `model`")
    if len(served) != 1:
        offered = ", ".join(served) or "none"
        raise ConfigError(f"the server at {where} serves {len(served)} models ({offered}): "
                          "choose one with `model`")  # fmt: skip
    return served[0]
