"""Runs at work, not runs waiting: what a batch's concurrency counts.

A batch's `concurrency` bounds the graph runs at work. A run whose LLM call waits out a
Retry-After or a backoff between two attempts has nothing at the server and nothing on the CPU,
so while it waits it does not count, and another run starts. Counted as at work, runs waiting
out whole-second Retry-Afters held most of the places: 300 tasks under 10 % 429s and 10 % 500s
on a 2-worker Ray cluster ran 3.9 times their fault-free time at 16 in flight (2.2 times at 64).
At most `WAITING` times the concurrency runs are under way at once, so memory stays bounded
however many wait.

The endpoint says when a call waits (`waiting()`); the gate of the run it belongs to hears it
through a context variable, which the run's graph nodes inherit. A call outside a gated run (a
chat request, a notebook's own call) waits the same and tells no one.
"""

from __future__ import annotations

import contextlib
import contextvars
from collections.abc import AsyncIterator, Iterator

from anabranch.gate import Gate

WAITING = 16
"""Runs under way, at most, per run at work: enough that the places of runs waiting out a
whole-second Retry-After go to others, and a bound on what a batch holds (16 tasks at work:
256 under way, at most 1 MiB each). On a 10 ms server, 10 % 429s and 10 % 500s keep about nine
runs in ten waiting: the Ray batch above ran 2.3 times its fault-free time at 4, 1.8 at 16."""

_GATE: contextvars.ContextVar[WorkGate | None] = contextvars.ContextVar("gate", default=None)


class WorkGate(Gate):
    """Lets a run start while fewer than `concurrency` runs are at work: under way (`taken`),
    less the calls that wait between attempts (a run whose two calls both wait counts as two,
    and one whose call waits while another is out counts as none: an estimate, never past
    `most`)."""

    def __init__(self, concurrency: int, most: int | None = None) -> None:
        super().__init__()
        self.concurrency = concurrency
        self.most = most if most is not None else WAITING * concurrency
        self.waiting = 0
        """Calls of the runs under way waiting between two attempts."""

    def has_room(self) -> bool:
        return self.taken < min(self.most, self.concurrency + self.waiting)

    @contextlib.asynccontextmanager
    async def working(self) -> AsyncIterator[None]:
        """Hold a place for one run, waiting for one first if none is free."""
        await self.take()
        token = _GATE.set(self)
        try:
            yield
        finally:
            _GATE.reset(token)
            self.give_back()


@contextlib.contextmanager
def waiting() -> Iterator[None]:
    """Around a call's wait between two attempts: its run's place may go to another."""
    gate = _GATE.get()
    if gate is None:
        yield
        return
    gate.waiting += 1
    gate.wake()
    try:
        yield
    finally:
        gate.waiting -= 1
