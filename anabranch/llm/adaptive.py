"""Finding and holding a server's real capacity: a concurrency gate whose limit adapts.

`AdaptiveSlots` is the endpoint's concurrency gate with a limit that moves, AIMD-style as TCP
does, within [1, the user's cap]:
- slow start: from a few slots, half a slot more per success while the slots are full, so the
  limit grows by half each round trip until the first sign of overload (`_SLOW_START_STEP`);
- then additive increase: about one more slot per round trip of successes;
- multiplicative decrease (halving, at most once per round trip) on latency that shows
  queueing: answers that take, smoothed, over `_QUEUEING` times the fastest answer of about
  their length (429 and 503 are a quota's business, paced by rate, not by halving the
  concurrency). Not while the client's own event loop lags: a batch whose client is CPU-bound
  hears every answer late, and halving its concurrency then only slows it down (measured: 11 %
  slower at 64 in flight on a 20 ms server).
A static cap is the same gate with adaptation off.

What the server says of its quota is read in `anabranch.llm.quota`; a server that is down is
left alone by `anabranch.llm.breaker`.
"""

from __future__ import annotations

import asyncio
import math
import time
from dataclasses import dataclass

from anabranch.gate import Gate

_START = 4
"""Slots an adaptive gate starts with (or the cap, if lower)."""
_SLOW_START_STEP = 0.5
"""Slots added per success in slow start. Not 1 (doubling each round trip, as TCP does): every
attempt out when a quota's burst runs dry is refused before its first 429 is heard, and at one
slot per success that is as many as the burst let through (40 of a quota of 40 requests/s,
6 % of a 600-call batch); at half, about half as many (measured: 19-27), for two more round
trips to reach a cap of 64."""
_QUEUEING = 3.0
"""Answers that take, smoothed, this many times the fastest of their length mean requests queue
at the server. Not 2: a batching server (llama.cpp, vLLM) decodes each request more slowly as
its batch fills, without any queueing (here about 1.7 times from 4 requests to 8)."""
_LENGTHS_PER_DOUBLING = 2
"""An answer is compared with the fastest answer of about its length: the same half-octave of
generated tokens. Not the time per token over every answer: a remote server's time is mostly
fixed (the network, the prompt), so a 1-token answer takes as long as a 30-token one, 15 times
as long per token, which read as queueing and ran a fixed-latency server 1 to 5 at a time
(measured: about 13 times a static cap's time for 300 calls of mixed lengths)."""
_LAGGING = 0.5
"""A loop that runs its timers later than this share of the fastest call is the bottleneck
itself: answers wait in its own queue, which more or fewer requests in flight do not shorten."""
_PROBE = 0.05
"""Seconds between two looks at the event loop's lag while calls are in flight."""


@dataclass
class SlotStats:
    """What the gate did, for the progress bar and the run's report."""

    limit: float
    """The current limit."""
    low: float
    """The lowest limit so far."""
    high: float
    """The highest limit so far."""
    overloads: int = 0
    """429 and 503 answers seen."""
    requests: int = 0
    """Requests sent (attempts)."""
    answered: int = 0
    """Attempts that got an answer."""


class AdaptiveSlots(Gate):
    """A concurrency gate whose limit adapts (or not) to the server's capacity; `taken` is the
    calls in flight."""

    def __init__(self, cap: int, *, adaptive: bool) -> None:
        super().__init__()
        self.cap = cap
        self.adaptive = adaptive
        self.limit = float(min(cap, _START) if adaptive else cap)
        self._slow_start = adaptive
        self._best: dict[int, float] = {}
        """The fastest answer seen per length (`_LENGTHS_PER_DOUBLING`)."""
        self._fastest = float("inf")
        self._smoothed: float | None = None
        """The smoothed ratio of answers' times to the fastest of their length."""
        self._round_trip = 0.0
        """The smoothed time of an answer, for the decrease's once per round trip."""
        self._last_decrease = 0.0
        self._lag = 0.0
        self._probe: asyncio.TimerHandle | None = None
        self.stats = SlotStats(self.limit, self.limit, self.limit)

    def has_room(self) -> bool:
        return self.taken < int(self.limit)

    async def acquire(self, *, first: bool = False) -> None:
        """Take a slot; `first` jumps the queue (a call coming back from a wait between its
        attempts)."""
        if self.adaptive and self._probe is None:
            self._arm(asyncio.get_running_loop())
        await self.take(first=first)

    def _arm(self, loop: asyncio.AbstractEventLoop) -> None:
        due = loop.time() + _PROBE
        self._probe = loop.call_at(due, self._measure_lag, loop, due)

    def _measure_lag(self, loop: asyncio.AbstractEventLoop, due: float) -> None:
        """How late the loop ran this timer: how late it hears each answer, smoothed. Re-armed
        only while calls are in flight, so an idle endpoint leaves nothing scheduled."""
        self._lag = 0.8 * self._lag + 0.2 * (loop.time() - due)
        self._probe = None
        if self.taken:
            self._arm(loop)

    # -- what the server said ---------------------------------------------------------------------

    def succeeded(self, latency: float, tokens: int) -> None:
        """A call answered after `latency` seconds with `tokens` generated."""
        self.stats.requests += 1
        self.stats.answered += 1
        if not self.adaptive:
            return
        self._fastest = min(self._fastest, latency)
        self._round_trip = 0.8 * self._round_trip + 0.2 * latency if self._round_trip else latency
        if self._lag <= _LAGGING * self._fastest:  # else late by our own fault: no signal
            length = int(_LENGTHS_PER_DOUBLING * math.log2(tokens + 1))
            best = self._best[length] = min(self._best.get(length, latency), latency)
            ratio = latency / best if best > 0 else 1.0
            smoothed = self._smoothed
            self._smoothed = ratio if smoothed is None else 0.8 * smoothed + 0.2 * ratio
            if self._smoothed > _QUEUEING and self.limit > 1:
                self._decrease()
                return
        if self.taken + self.queued >= int(self.limit):  # the slots were all in use
            step = _SLOW_START_STEP if self._slow_start else 1.0 / self.limit
            self._set(min(self.cap, self.limit + step))

    def overloaded(self) -> None:
        """A 429 or a 503, counted. Not a reason to halve: a quota's 429s are paced by rate
        (`QuotaLearner`), and halving on a sporadic one turned 15 % random 429s into a batch
        run two at a time (measured: 64.7 s where 25 s did)."""
        self.stats.requests += 1
        self.stats.overloads += 1

    def back_off(self) -> None:
        """Halve the limit (once per round trip), if it adapts."""
        if self.adaptive:
            self._decrease()

    def failed(self) -> None:
        self.stats.requests += 1

    def _decrease(self) -> None:
        now = time.monotonic()
        if now - self._last_decrease < max(self._round_trip, 0.05):
            return  # the same burst, already answered
        self._last_decrease = now
        self._slow_start = False
        self._smoothed = None  # judge the new limit by new latencies
        self._set(max(1.0, self.limit / 2))

    def _set(self, limit: float) -> None:
        self.limit = limit
        self.stats.limit = limit
        self.stats.low = min(self.stats.low, limit)
        self.stats.high = max(self.stats.high, limit)
        self.wake()
