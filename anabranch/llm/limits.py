"""The limits layer: a concurrency slot per call, and requests and tokens per minute per attempt.

Owned by the endpoint (docs/architecture.md, rule 4), so every agent sharing it shares them. The
slot is taken first and held for the whole call; the rate buckets are charged for each attempt
just before it is sent, so a retry counts against the quota as the server sees it, and sends do
not bunch when several slots free at once.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Iterator, Mapping
from contextlib import asynccontextmanager, contextmanager
from typing import Any

import openai

from anabranch.errors import ConfigError
from anabranch.llm.adaptive import AdaptiveSlots
from anabranch.llm.breaker import Breaker, Check
from anabranch.llm.quota import RateLimitHeaders
from anabranch.llm.retry import retry_after
from anabranch.llm.settings import Limits
from anabranch.tools.tokenizer import count_tokens
from anabranch.work import waiting


class RateLimiter:
    """A token bucket that refills continuously and holds one second's worth of burst, so that
    the rate holds over any window, not only on average over the minute. Tokens are known only
    after a call, so a caller takes an estimate first and settles the difference afterwards; the
    bucket may go into debt, which later callers repay by waiting."""

    def __init__(self, per_minute: float) -> None:
        if per_minute <= 0:
            raise ConfigError(f"a rate limit must be positive, got {per_minute}")
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


class CallLimiter:
    """The live state behind `Limits`: one per endpoint."""

    def __init__(self, limits: Limits, where: str, check: Check | None = None) -> None:
        self.limits = limits
        self.slots = AdaptiveSlots(limits.concurrency, adaptive=limits.adaptive)
        self.headers = RateLimitHeaders()
        self.breaker = Breaker(limits.breaker_failures, limits.give_up_after, where, check,
                               slots=lambda: int(self.slots.limit))  # fmt: skip
        self._rpm = RateLimiter(limits.rpm) if limits.rpm else None
        self._tpm = RateLimiter(limits.tpm) if limits.tpm else None
        self.out = 0
        """Attempts at the server now: sent, not yet answered. Not the slots taken, which
        also hold calls waiting for the quota's pacing: a trial that skipped the answers of
        those waited for tens of them at the rate it paced (measured: 26 at 0.5 requests/s,
        a 5 s batch with 15 % random 429s run in 80 s)."""

    @property
    def counts_tokens(self) -> bool:
        """A tokens-per-minute limit, ours or the server's, needs an estimate of each request's
        tokens (counted only then: it costs CPU on every call)."""
        return self._tpm is not None or self.headers.heard_tokens

    @asynccontextmanager
    async def slot(self) -> AsyncIterator[None]:
        """Hold one of the endpoint's concurrency slots (their number may adapt)."""
        await self.slots.acquire()
        try:
            yield
        finally:
            self.slots.give_back()

    async def lend(self, seconds: float) -> None:
        """Wait `seconds` between two attempts of a call without its slot, then take it back
        ahead of the queue. A call that waits out a Retry-After or a backoff has nothing at the
        server: holding its slot meanwhile ran a batch with 15 % random 429s (Retry-After: 1)
        two requests at a time."""
        self.slots.give_back()
        try:
            with waiting():  # nor at work: its run's place in the batch may go to another
                await asyncio.sleep(self.breaker.until_give_up(seconds))
            await self.slots.acquire(first=True)
        except BaseException:
            self.slots.taken += 1  # not taken back, but the slot's own release follows
            raise

    async def pace(self, estimated_tokens: int) -> None:
        """Wait until the server may take one more request of about this many tokens: the
        breaker is closed (or this is its probe), its quota headers allow it, and so do the
        rate limits."""
        await self.breaker.admit()
        if self.limits.adaptive:
            await self.headers.wait(estimated_tokens)
        if self._rpm:
            await self._rpm.acquire()
        if self._tpm:
            await self._tpm.acquire(estimated_tokens)

    @contextmanager
    def sending(self, timeout: float) -> Iterator[None]:
        """One attempt at the server, within `timeout`: counted in `out`, and watched by the
        breaker (still out a check's time before its timeout, the breaker asks the check)."""
        self.out += 1
        try:
            with self.breaker.watching(timeout):
                yield
        finally:
            self.out -= 1

    def succeeded(self, latency: float, completion_tokens: int) -> None:
        """An attempt got an answer: judge the load by its time against the
        fastest answer of its length."""
        self.breaker.succeeded()
        self.slots.succeeded(latency, completion_tokens)
        self.headers.learner.answered(self.out)

    def heard(self, exc: BaseException, max_retry_after: float, took: float = 0.0) -> None:
        """What an attempt's failure says of the server: that it has no room (429, 503, with
        the Retry-After it asked for, capped), that it may be down (timeouts, resets, 5xx), or
        nothing (a 400 says nothing of its health); the attempt was sent `took` seconds ago."""
        if not _unhealthy(exc):
            return
        wait = retry_after(exc)
        capped = None if wait is None else min(wait, max_retry_after)
        exact = isinstance(exc, openai.APIStatusError) and "retry-after-ms" in exc.response.headers
        timed_out = isinstance(exc, TimeoutError | openai.APITimeoutError)
        self.failed(_overloaded(exc), capped, exact=exact, timed_out=timed_out, took=took)

    def failed(
        self,
        overloaded: bool,
        retry_after: float | None = None,
        *,
        exact: bool = False,
        timed_out: bool = False,
        took: float = 0.0,
    ) -> None:
        """An attempt failed: overloaded (429, 503) or down (timeouts, resets, 5xx).

        An overload holds back every request of the endpoint only when it is a quota's signal
        (headers that say it is spent, or a share of 429s that falls with the rate), and then
        only for what the server says the quota needs to the millisecond (`retry-after-ms`,
        `exact`): a whole-second Retry-After is the wait of the request that got it, not of
        the batch (it turned a quota of 40 requests/s into 7)."""
        if overloaded:
            self.slots.overloaded()
            if not self.limits.adaptive:
                return
            signal = self.headers.heard or self.headers.learner.refused(self.out)
            if signal and exact and retry_after:
                self.headers.pause(min(retry_after, 60.0))
        else:
            self.slots.failed()
            self.breaker.failed(timed_out=timed_out, took=took)

    def observe(self, headers: Mapping[str, str]) -> None:
        """A response's headers: a spent quota slows down before it costs a 429."""
        if self.limits.adaptive and self.headers.observe(headers):
            self.slots.back_off()

    def settle(self, used_tokens: int, estimated_tokens: int) -> None:
        """Correct the token bucket once the server has said what a request used."""
        if self._tpm:
            self._tpm.settle(used_tokens - estimated_tokens)


def _overloaded(exc: BaseException) -> bool:
    """The server said it has no room: 429, or 503."""
    return isinstance(exc, openai.APIStatusError) and exc.status_code in (429, 503)


def _unhealthy(exc: BaseException) -> bool:
    """A failure that says something about the server's health or load (a 400 says nothing)."""
    if isinstance(exc, openai.APIStatusError):
        return exc.status_code in (429, 503) or exc.status_code >= 500
    return isinstance(exc, openai.APIConnectionError | TimeoutError)


def estimate_tokens(messages: list[dict[str, Any]]) -> int:
    """Prompt tokens before the call, for the tokens-per-minute limit (corrected after)."""
    return sum(count_tokens(str(m.get("content") or "")) + 4 for m in messages)
