"""A first-come, first-served gate whose room is a rule, not a fixed count.

The endpoint's concurrency slots (`llm/adaptive.py`: a limit that moves with the server) and a
batch's places at work (`work.py`: a bound that grows while runs wait) are the same line with
different rules for when one more may enter. The line, its wake-ups and its cancellations are
written once, here: they were two copies, each of which had needed the same fix (a waiter
cancelled after a wake-up had passed it raised `ValueError` on its way out).
"""

from __future__ import annotations

import asyncio
import collections
from abc import ABC, abstractmethod


class Gate(ABC):
    """Lets one more in while `has_room()` says so, in the order they came."""

    def __init__(self) -> None:
        self.taken = 0
        """Places held now."""
        self._line: collections.deque[asyncio.Future[None]] = collections.deque()

    @property
    def queued(self) -> int:
        """How many wait in line."""
        return len(self._line)

    @abstractmethod
    def has_room(self) -> bool:
        """Whether one more may enter now."""

    async def take(self, *, first: bool = False) -> None:
        """Take a place, in line behind those already waiting; `first` goes to the front (one
        coming back after a wait of its own, which already waited its turn once)."""
        if self.has_room() and (first or not self._line):
            self.taken += 1
            return
        waiter = asyncio.get_running_loop().create_future()
        if first:
            self._line.appendleft(waiter)
        else:
            self._line.append(waiter)
        try:
            await waiter
        except BaseException:
            if waiter.done() and not waiter.cancelled():
                self.give_back()  # it was handed a place it will not use
            elif waiter in self._line:  # else a wake-up passed it by, cancelled
                self._line.remove(waiter)
            raise

    def give_back(self) -> None:
        """Leave a place taken."""
        self.taken -= 1
        self.wake()

    def wake(self) -> None:
        """Let in those waiting while there is room: after a place is left, and whenever the
        rule's room grows."""
        while self._line and self.has_room():
            waiter = self._line.popleft()
            if not waiter.done():
                self.taken += 1
                waiter.set_result(None)
