"""The built-in analysis as a recipe for Ray workers, as `anabranch run --executor ray` ships it.

Its workers build their endpoints from the same `LLMOptions` as the driver's, with the one
constructor (`build_endpoint`), so that a cache, a retry policy or the embedded server's static
cap hold on the workers as they do in one process.
"""

from __future__ import annotations

import contextlib
from dataclasses import replace
from typing import Any

from anabranch.graphs.spec import GraphSpec, Share
from anabranch.graphs.state import Graph
from anabranch.llm.connect import LLMOptions, build_endpoint
from anabranch.llm.endpoint import Endpoint
from anabranch.llm.learnt import Given, Learnt


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
    the same cache file (its path made absolute: a worker's directory is not the driver's), and
    what the driver's endpoint knows of the server (`llm/learnt.py`), so no worker probes it."""
    options = None
    if endpoint is not None:
        cache = llm.cache.resolve() if llm.cache is not None else None
        options = replace(llm, model=endpoint.model, cache=cache)
    return GraphSpec("anabranch.analysis.recipe:analysis_graph", {
        "llm": options, "url": endpoint.base_url if endpoint else None, "backend": backend,
        "planner": planner, "chunk_tokens": chunk_tokens,
        "learnt": endpoint.knowledge.now.as_json() if endpoint else None,
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
    learnt: dict[str, Any] | None = None,
) -> Graph:
    """The built-in analysis graph (what `anabranch run` builds), with its own endpoint to `url`
    built from `llm` on this worker's share of the limits, starting from what the driver had
    `learnt` of the server; no endpoint when `llm` is None (local backends only). The endpoint
    and its cache go on `resources`."""
    from anabranch.analysis.graph import build_analysis_graph
    from anabranch.llm.cache import ResponseCache

    endpoint = None
    if llm is not None:
        stack = resources or contextlib.AsyncExitStack()
        cache = ResponseCache(llm.cache) if llm.cache else None
        if cache is not None:
            stack.callback(cache.close)
        limits = (share or Share()).limits(llm.limits)
        endpoint = build_endpoint(llm, url=url, limits=limits, cache=cache)
        if (known := Learnt.of(learnt)) is not None:
            endpoint.remember(Given(known))
        stack.push_async_callback(endpoint.aclose)
    return build_analysis_graph(
        endpoint,
        backend=backend,
        planner="llm" if planner == "llm" else "rule",
        chunk_tokens=chunk_tokens,
    )
