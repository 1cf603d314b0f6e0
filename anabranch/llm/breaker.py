"""Not hammering a server that is down, and saying so.

`Breaker` stops sending to a server whose calls keep failing or hanging: after N failures in a
row (timeouts only when a cheap check fails too: slow is not dead) it opens, says so, lets one
probe through at a growing interval, and closes when a probe succeeds; `give_up_after` the
server stopped answering (the first of those failures was sent), every call waiting on it fails
at once with `LLMUnavailableError`, so a journaled batch ends and a plain re-run retries those
calls. Counted from the breaker's opening instead, the give-up came a detection's time (an
attempt timeout) late.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable, Iterator

from anabranch.errors import LLMUnavailableError

logger = logging.getLogger(__name__)


def _clock(moment: float) -> str:
    """A monotonic moment as the wall clock's HH:MM:SS, for messages."""
    return time.strftime("%H:%M:%S", time.localtime(time.time() - (time.monotonic() - moment)))


def _span(seconds: float) -> str:
    """`45 s`, `4 min`: how long, as a person says it."""
    return f"{seconds:.0f} s" if seconds < 90 else f"{seconds / 60:.0f} min"


CHECK_TIMEOUT = 5.0
"""Seconds the cheap check (/health, /v1/models) may take, or the attempt timeout if shorter: a
server that cannot answer in five seconds is not merely slow (a longer check let a hung server's
calls run out their retries as timeouts before the breaker opened)."""

Check = Callable[[], Awaitable[bool]]
"""A cheap question to the server (is it there at all?), True when it answered."""


class Breaker:
    """Opens after `failures` failures in a row; probes at a growing interval; gives up.

    Refused connections and server errors count at once. Timeouts count only when the server
    does not answer a cheap `check` either (`/health`, `/v1/models`): a busy server that takes
    longer than the attempt timeout is slow, not down, and its calls are retried rather than
    failed after `give_up_after`. Opening, every minute while open, and giving up are said on
    the `anabranch` logger as warnings (stderr, unless an application routes them), with
    the time the server stopped answering and what happens next.
    """

    def __init__(
        self,
        failures: int,
        give_up_after: float | None,
        where: str,
        check: Check | None = None,
        slots: Callable[[], int] | None = None,
    ) -> None:
        self.failures = failures
        self.slots = slots
        """The calls the endpoint sends at once now: that many timeouts in a row, if fewer than
        `failures`, ask the cheap check. A hung server times out every call in flight at once;
        waiting for `failures` of them took two rounds of attempts (24 s at --deadline 12)
        before the breaker could even ask."""
        self.give_up_after = give_up_after
        self.where = where
        self.check = check
        self._in_a_row = 0
        self._down_since: float | None = None
        """While open: when the server stopped answering (the first failed attempt of the
        failures that opened it was sent), which the give-up counts from; None while closed."""
        self._failing_since: float | None = None
        """When the first failed attempt since the last answer was sent."""
        self._next_probe = 0.0
        self._interval = 1.0
        self._probing = False
        self._checking: asyncio.Task[None] | None = None
        self._dead_at: float | None = None
        """When the last cheap check that failed began, while no answer came since: the
        timeouts that follow it open the breaker at once."""
        self._said = 0.0
        self._gave_up = False
        self._stopped = False

    @property
    def outage(self) -> str | None:
        """What the progress line says while the breaker is open, else None."""
        if self._down_since is None:
            return None
        text = f"server not answering since {_clock(self._down_since)}"
        if (left := self._until_give_up()) is not None:
            text += f"; giving up in {_span(max(0.0, left))}"
        return text

    def _until_give_up(self) -> float | None:
        """Seconds until the give-up (negative once past), None while closed or never."""
        if self._down_since is None or self.give_up_after is None:
            return None
        return self._down_since + self.give_up_after - time.monotonic()

    def unavailable(self, why: str, attempts: int = 0) -> LLMUnavailableError:
        """The error of a call that the outage ended, naming the server and what to do."""
        since = f" since {_clock(self._down_since)}" if self._down_since is not None else ""
        return LLMUnavailableError(
            f"the server at {self.where} has not answered{since}; {why}; run the same command "
            "again when it is back (the subtasks that failed because of it are retried)",
            attempts=attempts,
        )

    def bound(self, left: float | None) -> float | None:
        """Seconds an attempt sent now may take: `left` of its call's deadline, and while the
        breaker is open (this attempt is its probe) no later than the give-up, so that the
        give-up ends the run, not a probe hung on past it."""
        if (until := self._until_give_up()) is None:
            return left
        return max(0.01, until) if left is None else min(left, max(0.01, until))

    def until_give_up(self, seconds: float) -> float:
        """`seconds`, or less if the give-up comes first: a call waiting out a backoff between
        two attempts fails with the others at the give-up, not seconds after it."""
        until = self._until_give_up()
        return seconds if until is None else max(0.0, min(seconds, until))

    def stop(self) -> None:
        """The server refused the key: nothing more is sent, so nothing waits for it to come
        back (calls waiting here go on, and fail without sending)."""
        self._stopped = True

    async def aclose(self) -> None:
        """Cancel a cheap check still under way (its client is about to close)."""
        if self._checking is not None:
            self._checking.cancel()
            await asyncio.gather(self._checking, return_exceptions=True)

    async def admit(self) -> None:
        """Wait until a request may go: at once when closed; as the probe, or never, when open."""
        while self._down_since is not None and not self._stopped:
            now = time.monotonic()
            if (until := self._until_give_up()) is not None and until < 0:
                if not self._gave_up:
                    self._gave_up = True
                    logger.warning("gave up: %s", self.unavailable("gave up after "
                                   f"{self.give_up_after:g} s (--give-up-after)"))  # fmt: skip
                raise self.unavailable(f"gave up after {self.give_up_after:g} s")
            if now - self._said >= 60.0:
                self._said = now
                logger.warning("the %s at %s", self.outage, self.where)
            if not self._probing and now >= self._next_probe:
                self._probing = True
                return
            await asyncio.sleep(min(0.1, max(0.01, self._next_probe - now)))

    @contextlib.contextmanager
    def watching(self, timeout: float) -> Iterator[None]:
        """Around an attempt of `timeout` seconds: if it is still out the cheap check's time
        (`CHECK_TIMEOUT`, at most) before its timeout, ask the check then, so that the attempt's
        timeout finds the answer ready. Waiting for the timeout first and asking only then put
        the check's seconds on top of every outage (a hung server: 12 s, then 5 s more)."""
        ahead = CHECK_TIMEOUT + 0.25  # the check's answer ready just before the timeout
        if self.check is None or timeout <= ahead:
            yield
            return
        timer = asyncio.get_running_loop().call_later(timeout - ahead, self._ask)
        try:
            yield
        finally:
            timer.cancel()

    def _ask(self) -> None:
        if self.check is not None and self._checking is None and self._down_since is None:
            self._checking = asyncio.ensure_future(self._check_then_open(self.check))

    def succeeded(self) -> None:
        self._dead_at = None
        if self._down_since is not None:
            logger.warning("the server at %s answers again", self.where)
        self._in_a_row, self._failing_since = 0, None
        self._down_since, self._probing, self._interval, self._gave_up = None, False, 1.0, False

    def failed(self, *, timed_out: bool = False, took: float = 0.0) -> None:
        """An attempt sent `took` seconds ago failed (timed out, or the server is down)."""
        self._in_a_row += 1
        now = time.monotonic()
        if self._failing_since is None or now - took < self._failing_since:
            self._failing_since = now - took
        if self._down_since is not None:
            if self._probing:  # the probe failed: wait longer before the next
                self._probing = False
                self._interval = min(30.0, self._interval * 2)
                self._next_probe = now + self._interval
        elif not timed_out or self.check is None:
            if self._in_a_row >= self.failures:
                self._open(now)
        elif self._dead_at is not None:  # the check asked while it hung did not answer either
            self._open(now)
        elif self._in_a_row >= self._timeouts() and self._checking is None:  # slow or down? ask
            self._checking = asyncio.ensure_future(self._check_then_open(self.check))

    def _timeouts(self) -> int:
        """Timeouts in a row that ask the cheap check."""
        return min(self.failures, max(1, self.slots())) if self.slots else self.failures

    async def _check_then_open(self, check: Check) -> None:
        began = time.monotonic()
        try:
            alive = await check()
        except Exception:  # noqa: BLE001 - a check that cannot be made says nothing
            return
        finally:
            self._checking = None
        if alive:  # slow, not down: its calls go on, each with its own timeout and retries
            self._in_a_row, self._dead_at, self._failing_since = 0, None, None
            return
        self._dead_at = began
        if self._down_since is None and self._in_a_row >= self._timeouts():
            self._open(time.monotonic())

    def _open(self, now: float) -> None:
        self._down_since = now if self._failing_since is None else self._failing_since
        self._next_probe, self._said = now + self._interval, now
        logger.warning("the %s at %s", self.outage, self.where)
