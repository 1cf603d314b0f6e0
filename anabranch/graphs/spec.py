"""A graph as a recipe: what a Ray worker builds its own graph from.

A compiled graph holding a live endpoint cannot be pickled, so a batch on a cluster ships the
recipe instead: `GraphSpec("package.module:function", {...})`. Each worker imports the function
and calls it with the keyword arguments, and with two more when the function takes them:
`share=Share(index, count)`, since a quota given to the recipe (requests or tokens per minute, a
concurrency cap) is the whole cluster's and `share.limits(limits)` is one worker's part of it;
and `resources`, an `AsyncExitStack` for what the graph opens (an endpoint, a cache file), closed
when the worker is done with the graph.

The built-in analysis' recipe is `anabranch.analysis.recipe`: an application's recipe lives with
the application.
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
