"""A graph as a recipe: what a Ray worker builds its own graph from.

A compiled graph holding a live endpoint cannot be pickled, so a batch on a cluster ships the
recipe instead: `GraphSpec("package.module:function", {...})`. Each worker imports the function
and calls it with the keyword arguments, and with `share=Share(index, count)` when the function
takes a `share`: a quota given to the recipe (requests or tokens per minute, a concurrency cap) is
the whole cluster's, and `share.limits(limits)` is one worker's part of it.
"""

from __future__ import annotations

import importlib
import inspect
import math
from dataclasses import dataclass, field, replace
from typing import Any

from pydantic import SecretStr

from anabranch.errors import ConfigError
from anabranch.graphs.state import Graph
from anabranch.llm.settings import Limits, Timeouts


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

    def build(self, share: Share | None = None) -> Graph:
        """The graph, built here (in a worker, or in this process)."""
        module_name, _, name = self.factory.partition(":")
        try:
            factory = getattr(importlib.import_module(module_name), name)
        except (ImportError, AttributeError, ValueError) as exc:
            raise ConfigError(
                f"cannot import the graph factory {self.factory!r} (expected package.module:"
                f"function, importable here): {exc}"
            ) from exc
        kwargs = dict(self.kwargs)
        if "share" in inspect.signature(factory).parameters:
            kwargs["share"] = share or Share()
        graph: Graph = factory(**kwargs)
        return graph


def analysis_graph(
    *,
    base_url: str | None,
    model: str | None,
    api_key: SecretStr | None = None,
    timeouts: Timeouts | None = None,
    limits: Limits | None = None,
    backend: str | None = None,
    planner: str = "rule",
    chunk_tokens: int = 256,
    share: Share | None = None,
) -> Graph:
    """The built-in analysis graph (what `anabranch run` builds), with its own endpoint on this
    worker's share of the limits; no endpoint when `base_url` is None (local backends only)."""
    from anabranch.analysis import build_analysis_graph
    from anabranch.llm.endpoint import Endpoint

    endpoint = None
    if base_url is not None:
        endpoint = Endpoint(
            base_url,
            model or "",
            api_key=api_key or SecretStr("not-needed"),
            timeouts=timeouts or Timeouts(),
            limits=(share or Share()).limits(limits or Limits()),
        )
    return build_analysis_graph(
        endpoint,
        backend=backend,
        planner="llm" if planner == "llm" else "rule",
        chunk_tokens=chunk_tokens,
    )
