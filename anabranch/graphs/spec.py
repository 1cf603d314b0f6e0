"""A graph as a recipe: what a Ray worker builds its own graph from.

A compiled graph holding a live endpoint cannot be pickled, so a batch on a cluster ships the
recipe instead: `GraphSpec("package.module:function", {...})`. Each worker imports the function
and calls it with the keyword arguments, and with two more when the function takes them:
`share=Share(index, count)`, since a quota given to the recipe (requests or tokens per minute, a
concurrency cap) is the whole cluster's and `share.limits(limits)` is one worker's part of it;
and `resources`, an `AsyncExitStack` for what the graph opens (an endpoint, a cache file), closed
when the worker is done with the graph.

`analysis_spec` is the recipe of the built-in analysis, as `anabranch run --executor ray` ships
it: its workers build their endpoints from the same `LLMOptions` as the driver's, with the one
constructor (`build_endpoint`), so that a cache, a retry policy or the embedded server's static
cap hold on the workers as they do in one process.
"""

from __future__ import annotations

import contextlib
import importlib
import inspect
import math
from dataclasses import dataclass, field, replace
from typing import Any

from anabranch.errors import ConfigError
from anabranch.graphs.state import Graph
from anabranch.llm.connect import LLMOptions, build_endpoint
from anabranch.llm.endpoint import Endpoint
from anabranch.llm.settings import Limits


@dataclass(frozen=True, slots=True)
class Share:
    """Which of how many workers is building the graph."""

    index: int = 0
    """This worker's number, from 0."""
    count: int = 1
    """How many workers share the quota."""

    def limits(self, limits: Limits) -> Limits:
        """One worker's part of limits meant for the whole cluster: the concurrency cap, rpm and
        tpm divided evenly (the cap rounded up, so that no worker gets none)."""
        return replace(
            limits,
            concurrency=max(1, math.ceil(limits.concurrency / self.count)),
            rpm=limits.rpm / self.count if limits.rpm else None,
            tpm=limits.tpm / self.count if limits.tpm else None,
        )


@dataclass(frozen=True)
class GraphSpec:
    """A function that returns a compiled graph, named so that any worker can import it."""

    factory: str
    """`package.module:function`, importable wherever the graph is built."""
    kwargs: dict[str, Any] = field(default_factory=dict)
    """Keyword arguments for the factory; they travel to the workers, so they must pickle."""

    def build(
        self, share: Share | None = None, resources: contextlib.AsyncExitStack | None = None
    ) -> Graph:
        """The graph, built here (in a worker, or in this process). What it opens goes on
        `resources`, for the caller to close; without one, it stays open while the process
        lives."""
        module_name, _, name = self.factory.partition(":")
        try:
            factory = getattr(importlib.import_module(module_name), name)
        except (ImportError, AttributeError, ValueError) as exc:
            raise ConfigError(
                f"cannot import the graph factory {self.factory!r} (expected package.module:"
                f"function, importable here): {exc}"
            ) from exc
        kwargs = dict(self.kwargs)
        parameters = inspect.signature(factory).parameters
        if "share" in parameters:
            kwargs["share"] = share or Share()
        if "resources" in parameters:
            kwargs["resources"] = resources or contextlib.AsyncExitStack()
        graph: Graph = factory(**kwargs)
        return graph


def analysis_spec(
    llm: LLMOptions,
    endpoint: Endpoint | None,
    *,
    backend: str | None = None,
    planner: str = "rule",
    chunk_tokens: int = 256,
) -> GraphSpec:
    """The built-in analysis as a recipe for workers. `endpoint` is the one this process opened
    from `llm` (None when no agent calls an LLM): the workers reach the same server (the embedded
    one's address) and ask for the model it settled on, each on its share of `llm.limits`, with
    the same cache file (its path made absolute: a worker's directory is not the driver's)."""
    options = None
    if endpoint is not None:
        cache = llm.cache.resolve() if llm.cache is not None else None
        options = replace(llm, model=endpoint.model, cache=cache)
    return GraphSpec("anabranch.graphs.spec:analysis_graph", {
        "llm": options, "url": endpoint.base_url if endpoint else None, "backend": backend,
        "planner": planner, "chunk_tokens": chunk_tokens,
    })  # fmt: skip


def analysis_graph(
    *,
    llm: LLMOptions | None,
    url: str | None = None,
    backend: str | None = None,
    planner: str = "rule",
    chunk_tokens: int = 256,
    share: Share | None = None,
    resources: contextlib.AsyncExitStack | None = None,
) -> Graph:
    """The built-in analysis graph (what `anabranch run` builds), with its own endpoint to `url`
    built from `llm` on this worker's share of the limits; no endpoint when `llm` is None (local
    backends only). The endpoint and its cache go on `resources`."""
    from anabranch.analysis import build_analysis_graph
    from anabranch.llm.cache import ResponseCache

    endpoint = None
    if llm is not None:
        stack = resources or contextlib.AsyncExitStack()
        cache = ResponseCache(llm.cache) if llm.cache else None
        if cache is not None:
            stack.callback(cache.close)
        limits = (share or Share()).limits(llm.limits)
        endpoint = build_endpoint(llm, url=url, limits=limits, cache=cache)
        stack.push_async_callback(endpoint.aclose)
    return build_analysis_graph(
        endpoint,
        backend=backend,
        planner="llm" if planner == "llm" else "rule",
        chunk_tokens=chunk_tokens,
    )
