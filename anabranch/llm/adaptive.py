"""Finding and holding a server's real capacity, and not hammering a server that is down.

`AdaptiveSlots` is the endpoint's concurrency gate with a limit that moves, AIMD-style as TCP
does, within [1, the user's cap]:
- slow start: from a few slots, one more per success while the slots are full, so the limit
  doubles each round trip until the first sign of overload;
- then additive increase: about one more slot per round trip of successes;
- multiplicative decrease (halving, at most once per round trip) on 429 and 503, and on latency
  that shows queueing: a smoothed time per token over `_QUEUEING` times the best seen. Not
  while the client's own event loop lags: a batch whose client is CPU-bound hears every answer
  late, and halving its concurrency then only slows it down (measured: 11 % slower at 64 in
  flight on a 20 ms server).
A static cap is the same gate with adaptation off.

`RateLimitHeaders` reads OpenAI's `x-ratelimit-remaining-*` and `x-ratelimit-reset-*` and spaces
requests so that what is left lasts until the reset, instead of earning 429s.

`Breaker` stops sending to a server whose calls keep failing or hanging: after N failures in a
row it opens, lets one probe through at a growing interval, and closes when a probe succeeds;
open past `give_up_after`, every call waiting on it fails at once with `LLMUnavailableError`,
so a journaled batch ends and can be resumed later.
"""

from __future__ import annotations

import asyncio
import collections
import re
import time
from collections.abc import Mapping
from dataclasses import dataclass

from anabranch.errors import LLMUnavailableError

_START = 4
"""Slots an adaptive gate starts with (or the cap, if lower)."""
_QUEUEING = 3.0
"""A smoothed time per generated token this many times the best seen means requests queue at
the server. Not 2: a batching server (llama.cpp, vLLM) decodes each request more slowly as its
batch fills, without any queueing (here about 1.7 times from 4 requests to 8)."""
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


class AdaptiveSlots:
    """A concurrency gate whose limit adapts (or not) to the server's capacity."""

    def __init__(self, cap: int, *, adaptive: bool) -> None:
        self.cap = cap
        self.adaptive = adaptive
        self.limit = float(min(cap, _START) if adaptive else cap)
        self.in_flight = 0
        self._waiters: collections.deque[asyncio.Future[None]] = collections.deque()
        self._slow_start = adaptive
        self._best = float("inf")
        self._fastest = float("inf")
        self._smoothed: float | None = None
        self._last_decrease = 0.0
        self._lag = 0.0
        self._probe: asyncio.TimerHandle | None = None
        self.stats = SlotStats(self.limit, self.limit, self.limit)

    async def acquire(self) -> None:
        if self.adaptive and self._probe is None:
            self._arm(asyncio.get_running_loop())
        if self.in_flight < int(self.limit) and not self._waiters:
            self.in_flight += 1
            return
        waiter = asyncio.get_running_loop().create_future()
        self._waiters.append(waiter)
        try:
            await waiter
        except BaseException:
            if waiter.done() and not waiter.cancelled():
                self.release()  # it was handed a slot it will not use
            else:
                self._waiters.remove(waiter)
            raise

    def release(self) -> None:
        self.in_flight -= 1
        self._wake()

    def _wake(self) -> None:
        while self._waiters and self.in_flight < int(self.limit):
            waiter = self._waiters.popleft()
            if not waiter.done():
                self.in_flight += 1
                waiter.set_result(None)

    def _arm(self, loop: asyncio.AbstractEventLoop) -> None:
        due = loop.time() + _PROBE
        self._probe = loop.call_at(due, self._measure_lag, loop, due)

    def _measure_lag(self, loop: asyncio.AbstractEventLoop, due: float) -> None:
        """How late the loop ran this timer: how late it hears each answer, smoothed. Re-armed
        only while calls are in flight, so an idle endpoint leaves nothing scheduled."""
        self._lag = 0.8 * self._lag + 0.2 * (loop.time() - due)
        self._probe = None
        if self.in_flight:
            self._arm(loop)

    # -- what the server said ---------------------------------------------------------------------

    def succeeded(self, latency: float, tokens: int) -> None:
        """A call answered after `latency` seconds with `tokens` generated."""
        self.stats.requests += 1
        if not self.adaptive:
            return
        self._fastest = min(self._fastest, latency)
        if self._lag <= _LAGGING * self._fastest:  # else late by our own fault: no signal
            latency /= tokens + 1
            self._best = min(self._best, latency)
            smoothed = self._smoothed
            self._smoothed = latency if smoothed is None else 0.8 * smoothed + 0.2 * latency
            if self._smoothed > _QUEUEING * self._best and self.limit > 1:
                self._decrease()
                return
        if self.in_flight + len(self._waiters) >= int(self.limit):  # the slots were all in use
            step = 1.0 if self._slow_start else 1.0 / self.limit
            self._set(min(self.cap, self.limit + step))

    def overloaded(self) -> None:
        """A 429 or a 503: the server has less room than the limit assumed."""
        self.stats.requests += 1
        self.stats.overloads += 1
        self.back_off()

    def back_off(self) -> None:
        """Halve the limit (once per round trip), if it adapts."""
        if self.adaptive:
            self._decrease()

    def failed(self) -> None:
        self.stats.requests += 1

    def _decrease(self) -> None:
        now = time.monotonic()
        round_trip = self._smoothed or 0.0
        if now - self._last_decrease < max(round_trip, 0.05):
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
        self._wake()


_DURATION = re.compile(r"(?:(\d+(?:\.\d+)?)h)?(?:(\d+(?:\.\d+)?)m(?!s))?(?:(\d+(?:\.\d+)?)s)?"
                       r"(?:(\d+(?:\.\d+)?)ms)?$")  # fmt: skip


def parse_duration(text: str) -> float | None:
    """OpenAI's reset durations: `1s`, `6m0s`, `20ms`, `1h2m3.5s`; a bare number is seconds."""
    text = text.strip()
    try:
        return max(0.0, float(text))
    except ValueError:
        pass
    match = _DURATION.match(text)
    if not match or not any(match.groups()):
        return None
    h, m, s, ms = (float(g) if g else 0.0 for g in match.groups())
    return h * 3600 + m * 60 + s + ms / 1000


class RateLimitHeaders:
    """Paces new requests by what the server says of its quota, before it answers 429.

    With OpenAI's headers (limit, remaining, and the time until the quota is whole again), the
    refill rate is `(limit - remaining) / reset`; once half is spent, requests go one per
    refill, instead of a burst of 429s each time it refills. A tokens quota refills in tokens:
    a request then waits for its own estimate (prompt and max_tokens, as OpenAI counts it) to
    refill. Without headers, a 429's
    Retry-After sets that spacing, and each answer that follows loosens it a little, probing for
    room again.
    """

    def __init__(self) -> None:
        self._next = 0.0
        self._spacing = 0.0
        self._token_rate = 0.0
        self._heard = False
        self.heard_tokens = False
        """The server counts tokens: requests need a token estimate to be paced."""
        self._lock = asyncio.Lock()

    def observe(self, headers: Mapping[str, str]) -> bool:
        """Read a response's headers; True when they say the quota is spent."""
        spacing, token_rate, spent, heard = 0.0, 0.0, False, False
        for kind in ("requests", "tokens"):
            remaining = headers.get(f"x-ratelimit-remaining-{kind}")
            reset = headers.get(f"x-ratelimit-reset-{kind}")
            if remaining is None or reset is None:
                continue
            try:
                left = float(remaining)
                limit = float(headers.get(f"x-ratelimit-limit-{kind}", "nan"))
            except ValueError:
                continue
            wait = parse_duration(reset)
            if wait is None:
                continue
            heard = True
            half_spent = limit == limit and left <= max(2.0, 0.5 * limit)
            if kind == "requests" and half_spent:
                spacing = max(spacing, wait / max(limit - left, 1.0))  # one a refill
            elif kind == "tokens":
                self.heard_tokens = True
                if half_spent:
                    token_rate = max(limit - left, 1.0) / max(wait, 1e-3)
            spent = spent or left < 1
        if heard:
            self._heard = True
            self._spacing = spacing
            self._token_rate = token_rate
        elif not self._heard:
            self._spacing *= 0.95  # no word from the server: probe for room, slowly
        return spent

    def pause(self, seconds: float) -> None:
        """A 429's Retry-After holds back every request, and spaces those that follow."""
        self._next = max(self._next, time.monotonic() + seconds)
        if not self._heard:
            self._spacing = max(self._spacing, seconds)

    async def wait(self, estimated_tokens: int = 0) -> None:
        """Until the quota has room for one more request of about this many tokens."""
        if self._spacing_for(estimated_tokens) < 1e-4 and time.monotonic() >= self._next:
            return
        async with self._lock:  # one at a time, each `spacing` after the last
            delay = self._next - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)
            # What the server said while this request waited counts: a quota can shrink.
            self._next = time.monotonic() + self._spacing_for(estimated_tokens)

    def _spacing_for(self, estimated_tokens: int) -> float:
        if self._token_rate:
            return max(self._spacing, estimated_tokens / self._token_rate)
        return self._spacing


class Breaker:
    """Opens after `failures` failures in a row; probes at a growing interval; gives up."""

    def __init__(self, failures: int, give_up_after: float | None, where: str) -> None:
        self.failures = failures
        self.give_up_after = give_up_after
        self.where = where
        self._in_a_row = 0
        self._opened: float | None = None
        self._next_probe = 0.0
        self._interval = 1.0
        self._probing = False

    async def admit(self) -> None:
        """Wait until a request may go: at once when closed; as the probe, or never, when open."""
        while self._opened is not None:
            now = time.monotonic()
            if self.give_up_after is not None and now - self._opened > self.give_up_after:
                raise LLMUnavailableError(
                    f"the server at {self.where} kept failing for {now - self._opened:.0f} s "
                    f"(gave up after {self.give_up_after:g} s); resume the run when it is back",
                    attempts=0,
                )
            if not self._probing and now >= self._next_probe:
                self._probing = True
                return
            await asyncio.sleep(min(0.1, max(0.01, self._next_probe - now)))

    def succeeded(self) -> None:
        self._in_a_row = 0
        self._opened, self._probing, self._interval = None, False, 1.0

    def failed(self) -> None:
        self._in_a_row += 1
        now = time.monotonic()
        if self._opened is not None:
            if self._probing:  # the probe failed: wait longer before the next
                self._probing = False
                self._interval = min(30.0, self._interval * 2)
                self._next_probe = now + self._interval
        elif self._in_a_row >= self.failures:
            self._opened, self._next_probe = now, now + self._interval
