"""Rate limits: requests and tokens per minute, owned by the endpoint (DESIGN rule 4).

A token bucket that refills continuously and holds one second's worth of burst, so that the rate
holds over any window, not only on average over the minute. Tokens are known only after a call, so
a caller takes an estimate first and settles the difference afterwards; the bucket may go into
debt, which later callers repay by waiting.
"""

from __future__ import annotations

import asyncio
import time


class RateLimiter:
    def __init__(self, per_minute: float) -> None:
        if per_minute <= 0:
            raise ValueError(f"a rate limit must be positive, got {per_minute}")
        self.per_second = per_minute / 60.0
        self.capacity = max(1.0, self.per_second)
        self._level = self.capacity
        self._stamp = time.monotonic()
        self._lock = asyncio.Lock()  # first come, first served: no caller starves

    def _refill(self) -> None:
        now = time.monotonic()
        self._level = min(self.capacity, self._level + (now - self._stamp) * self.per_second)
        self._stamp = now

    async def acquire(self, amount: float = 1.0) -> None:
        """Wait until `amount` may be spent, then spend it (an amount over capacity waits for a
        full bucket and leaves a debt)."""
        async with self._lock:
            self._refill()
            need = min(amount, self.capacity)
            if self._level < need:
                await asyncio.sleep((need - self._level) / self.per_second)
                self._refill()
            self._level -= amount

    def settle(self, delta: float) -> None:
        """Correct an earlier estimate: a positive delta spends more, a negative one refunds."""
        self._refill()
        self._level = min(self.capacity, self._level - delta)
