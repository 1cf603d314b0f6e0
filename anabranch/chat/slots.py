"""The cap on graph runs at once, and the slot each run holds until its answer is sent.

A streamed answer outlives its route: the slot travels with the response and is released when
the last byte is out or the client has gone, whichever comes first.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

from fastapi.responses import StreamingResponse
from starlette.types import Receive, Scope, Send


class RunSlots:
    """The cap on graph runs at once: a slot is taken without waiting, or refused (429)."""

    def __init__(self, size: int) -> None:
        self.free = size

    def take(self) -> Slot | None:
        if self.free <= 0:
            return None
        self.free -= 1
        return Slot(self)


class Slot:
    """One run's place; released once, whichever of its owners gets there first."""

    def __init__(self, slots: RunSlots) -> None:
        self._slots: RunSlots | None = slots

    def release(self) -> None:
        if self._slots is not None:
            self._slots.free += 1
            self._slots = None


class SlotStream(StreamingResponse):
    """A streamed reply that frees its run's slot even when its body never starts (a client
    that leaves before the first byte)."""

    def __init__(self, slot: Slot, content: AsyncIterator[str], **kwargs: Any) -> None:
        super().__init__(content, **kwargs)
        self.slot = slot

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            await super().__call__(scope, receive, send)
        finally:
            self.slot.release()


async def releasing(slot: Slot, stream: AsyncIterator[str]) -> AsyncIterator[str]:
    """Hold the run's slot for as long as the stream lasts (a disconnect cancels it, freeing it)."""
    try:
        async for item in stream:
            yield item
    finally:
        slot.release()
