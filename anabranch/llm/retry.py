"""The retry layer: transient failures only, Retry-After honoured, and a deadline for the call.

The one retry layer (docs/architecture.md, rule 2): the openai client runs with its own retries
off. Whatever fails for good leaves here as an `LLMError` that says how many attempts were sent.
"""

from __future__ import annotations

import asyncio
import json
import random
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from email.utils import parsedate_to_datetime
from math import inf
from typing import TypeVar

import openai
from tenacity import (
    AsyncRetrying,
    RetryCallState,
    retry_if_exception,
    stop_after_attempt,
    stop_any,
)
from tenacity.stop import stop_base

from anabranch.errors import (
    LLMConnectionError,
    LLMError,
    LLMOutputError,
    LLMRateLimitError,
    LLMStatusError,
    LLMTimeoutError,
)
from anabranch.llm.settings import RetryPolicy, Timeouts

R = TypeVar("R")


@dataclass(slots=True)
class Tally:
    """What one call has sent so far; the attempt counts itself when it really sends."""

    sent: int = 0
    last: BaseException | None = None
    """The last attempt's failure, for the message of a call whose deadline passed."""
    deadline: asyncio.Timeout | None = None
    """The call's deadline while it runs: an attempt's own timeout ends before it, so that the
    attempt fails as a timeout the limits hear, not as a cancellation they do not."""

    def extend(self, seconds: float) -> None:
        """Move the call's deadline `seconds` later (the server's measured speed needs it)."""
        when = self.deadline.when() if self.deadline is not None else None
        if self.deadline is not None and when is not None:
            self.deadline.reschedule(when + seconds)

    def left(self) -> float | None:
        """Seconds until the call's deadline, if it has one."""
        when = self.deadline.when() if self.deadline is not None else None
        return None if when is None else when - asyncio.get_running_loop().time()


class Retrier:
    """Runs one call's attempts under the retry policy and the call's deadline."""

    def __init__(self, policy: RetryPolicy, timeouts: Timeouts) -> None:
        self.policy = policy
        self.timeouts = timeouts

    async def run(
        self,
        attempt: Callable[[], Awaitable[R]],
        tally: Tally,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
        *,
        budget: float | None = None,
    ) -> R:
        """`attempt` until it succeeds, fails for good, or the deadline passes; `sleep` waits
        between two attempts (the endpoint's lends the call's slot meanwhile); `budget`, the
        seconds left of the call's deadline if it already spent some.

        The first attempt runs bare and tenacity takes over at the first transient failure:
        most calls succeed at once, and tenacity's machinery cost 3 % of a batch's CPU when every
        call went through it (measured at zero latency, 3,000 calls).
        """
        policy = self.policy
        began = asyncio.get_running_loop().time()
        deadline = asyncio.timeout(max(0.0, self.timeouts.call if budget is None else budget))
        loop = asyncio.get_running_loop()

        async def wait(seconds: float) -> None:
            """`sleep` with the deadline held: only the `seconds` asked for count, not the time
            spent taking a lent slot back (waiting for a slot is not the call's own work). The
            retrier only waits when the deadline leaves room for the seconds."""
            when, start = deadline.when(), loop.time()
            deadline.reschedule(None)
            try:
                await sleep(seconds)
            finally:
                if when is not None:
                    queued = max(0.0, loop.time() - start - seconds)
                    deadline.reschedule(when + queued)

        tally.deadline = deadline
        try:
            async with deadline:
                try:
                    return await attempt()
                except Exception as exc:
                    if policy.max_attempts == 1 or not self.is_transient(exc):
                        raise
                    first = exc
                delay = self._delay(first, 1)
                if loop.time() + delay >= (deadline.when() or float("inf")):
                    raise first  # the deadline would pass while waiting
                await wait(delay)
                retrying = AsyncRetrying(
                    sleep=wait,
                    stop=stop_any(
                        stop_after_attempt(policy.max_attempts - 1), _OutOfTime(deadline)
                    ),
                    wait=self._wait,
                    retry=retry_if_exception(self.is_transient),
                    reraise=True,
                )
                return await retrying(attempt)
        except Exception as exc:
            spent = f"{tally.sent} attempt(s) in {loop.time() - began:.1f} s"
            # A transient failure with attempts left stopped only because the deadline would
            # pass before the next one: the deadline ended the call, as if it had expired.
            cut = self.is_transient(exc) and tally.sent < policy.max_attempts
            if deadline.expired() or cut:
                last = f"; the last one: {describe(tally.last)}" if tally.last else ""
                raise LLMTimeoutError(
                    f"the call's deadline ({(deadline.when() or began) - began:.1f} s) "
                    f"{'passed' if deadline.expired() else 'left no time for another attempt'} "
                    f"after {spent}{last}",
                    attempts=tally.sent,
                ) from exc
            raise as_llm_error(exc, tally.sent, spent) from exc

    def is_transient(self, exc: BaseException) -> bool:
        """Worth another attempt: timeouts, dropped connections, transient statuses, and a body
        that is not JSON (a response cut short on the way is a dropped connection by another
        name)."""
        if isinstance(exc, openai.APIStatusError):
            return exc.status_code in self.policy.transient_statuses
        return isinstance(exc, openai.APIConnectionError | TimeoutError | json.JSONDecodeError)

    def _wait(self, state: RetryCallState) -> float:
        """tenacity's wait: its attempt n is the call's attempt n + 1 (the first ran bare)."""
        exc = state.outcome.exception() if state.outcome else None
        return self._delay(exc, state.attempt_number + 1)

    def _delay(self, exc: BaseException | None, failed: int) -> float:
        """Retry-After when the server sent one (capped), else a backoff with full jitter after
        the call's attempt number `failed`: anywhere from 0 to `backoff_initial` doubled per
        earlier failure (tenacity's `wait_random_exponential`).

        Full jitter, not a doubled floor plus a little jitter: a sporadic 500 costs the retried
        call a quarter of a second on average, not three quarters, and with tens of calls in
        flight the longest chain of retries is what the batch waits for. Calls that failed
        together still spread out over the whole window, and a dead server is the breaker's
        to judge, not the backoff's."""
        after = retry_after(exc)
        if after is not None:
            return min(after, self.policy.max_retry_after)
        window = self.policy.backoff_initial * 2 ** (failed - 1)
        return random.uniform(0, min(window, self.policy.backoff_max))


class _OutOfTime(stop_base):
    """tenacity's stop: the deadline, as it stands now (waiting for a lent slot moves it), would
    pass while waiting for the next attempt."""

    def __init__(self, deadline: asyncio.Timeout) -> None:
        self.deadline = deadline

    def __call__(self, state: RetryCallState) -> bool:
        now = asyncio.get_running_loop().time()
        return now + (state.upcoming_sleep or 0.0) >= (self.deadline.when() or inf)


def retry_after(exc: BaseException | None) -> float | None:
    """Seconds the server asked us to wait (`retry-after-ms`, `retry-after` in seconds or as a
    date), or None."""
    if not isinstance(exc, openai.APIStatusError):
        return None
    headers = exc.response.headers
    if (ms := headers.get("retry-after-ms")) is not None:
        try:
            return max(0.0, float(ms) / 1000)
        except ValueError:
            pass
    value = headers.get("retry-after")
    if value is None:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        try:
            return max(0.0, parsedate_to_datetime(value).timestamp() - time.time())
        except (TypeError, ValueError):
            return None


def describe(exc: BaseException) -> str:
    """What one attempt's failure was, in a few words."""
    if isinstance(exc, openai.APITimeoutError | TimeoutError):
        return "no answer within the attempt timeout"
    if isinstance(exc, openai.APIStatusError):
        return f"HTTP {exc.status_code}: {short(exc.message, 120)}"
    if isinstance(exc, openai.APIConnectionError):
        return f"connection failed: {short(exc, 120)}"
    return f"{type(exc).__name__}: {short(exc, 120)}"


def as_llm_error(exc: BaseException, attempts: int, spent: str | None = None) -> LLMError:
    """Our error for what the client raised, with the attempts it took and the time they
    took (`spent`, "3 attempt(s) in 0.4 s"); redacted, as every AnabranchError is: a server's
    message may quote the key."""
    if isinstance(exc, LLMError):
        return exc
    spent = spent or f"{attempts} attempt(s)"
    if isinstance(exc, openai.APITimeoutError | TimeoutError):
        return LLMTimeoutError(f"no answer within the attempt timeout, {spent}", attempts=attempts)
    if isinstance(exc, openai.APIConnectionError):
        return LLMConnectionError(f"connection failed, {spent}: {short(exc)}", attempts=attempts)
    if isinstance(exc, openai.RateLimitError):
        return LLMRateLimitError(
            f"still rate-limited (429) after {spent}", attempts=attempts, status=429
        )
    if isinstance(exc, openai.APIStatusError):
        return LLMStatusError(
            f"HTTP {exc.status_code} after {spent}: {short(exc.message)}",
            attempts=attempts,
            status=exc.status_code,
        )
    if isinstance(exc, openai.APIResponseValidationError | json.JSONDecodeError):
        return LLMOutputError(f"unreadable response: {short(exc)}", attempts=attempts)
    return LLMError(f"{type(exc).__name__}: {short(exc)}", attempts=attempts)


def short(value: object, limit: int = 300) -> str:
    """`value` on one line, cut to `limit` characters."""
    text = " ".join(str(value).split())
    return text if len(text) <= limit else text[: limit - 1] + "…"
