"""Sync callers get thin wrappers, never a second implementation (docs/architecture.md, rule 8).

The async code runs on one event loop in a daemon thread of its own (the portal), and a sync
caller blocks until its coroutine there is done. One loop for the whole process, because the
objects a graph holds (an endpoint's HTTP client, say) belong to the loop that first used them:
every sync call must reach them on the same one.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import AsyncIterator, Awaitable, Coroutine, Iterator
from typing import Any, TypeVar

from langgraph.graph.state import CompiledStateGraph

from anabranch.errors import StateError

R = TypeVar("R")

_lock = threading.Lock()
_loop: asyncio.AbstractEventLoop | None = None


def _portal() -> asyncio.AbstractEventLoop:
    global _loop
    with _lock:
        if _loop is None:
            _loop = asyncio.new_event_loop()
            threading.Thread(target=_loop.run_forever, name="anabranch-sync", daemon=True).start()
        return _loop


def call(coroutine: Coroutine[Any, Any, R]) -> R:
    """Run `coroutine` on the portal's loop and wait for its result, from sync code."""
    loop = _portal()
    try:
        running = asyncio.get_running_loop()
    except RuntimeError:
        running = None
    if running is loop:
        coroutine.close()
        raise StateError("a sync wrapper was called from the portal's own loop: await instead")
    return asyncio.run_coroutine_threadsafe(coroutine, loop).result()


class SyncCapableGraph(CompiledStateGraph[Any, Any, Any, Any]):
    """A compiled graph whose async nodes also run from sync code: `invoke` and `stream` drive
    `ainvoke` and `astream` on the portal. LangGraph alone refuses to (its async-only nodes have
    no sync function), and users embed graphs in sync code too."""

    def invoke(self, input: Any, config: Any = None, **kwargs: Any) -> Any:
        return call(self.ainvoke(input, config, **kwargs))

    def stream(self, input: Any, config: Any = None, **kwargs: Any) -> Iterator[Any]:
        return iterate(self.astream(input, config, **kwargs))


def sync_capable(graph: CompiledStateGraph[Any, Any, Any, Any]) -> SyncCapableGraph:
    """`graph`, usable from sync code as well (the same graph object otherwise)."""
    attrs = {k: v for k, v in graph.__dict__.items() if k != "__orig_class__"}
    return SyncCapableGraph(**attrs)


def iterate(items: AsyncIterator[R]) -> Iterator[R]:
    """An async iterator, consumed from sync code through the portal."""
    try:
        while True:
            try:
                yield call(_awaited(anext(items)))
            except StopAsyncIteration:
                return
    finally:
        closing = getattr(items, "aclose", None)
        if closing is not None:
            call(closing())


async def _awaited(awaitable: Awaitable[R]) -> R:
    return await awaitable
