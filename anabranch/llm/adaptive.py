"""Finding and holding a server's real capacity, and not hammering a server that is down.

`AdaptiveSlots` is the endpoint's concurrency gate with a limit that moves, AIMD-style as TCP
does, within [1, the user's cap]:
- slow start: from a few slots, one more per success while the slots are full, so the limit
  doubles each round trip until the first sign of overload;
- then additive increase: about one more slot per round trip of successes;
- multiplicative decrease (halving, at most once per round trip) on latency that shows
  queueing: a smoothed time per token over `_QUEUEING` times the best seen (429 and 503 are a
  quota's business, paced by rate, not by halving the concurrency). Not
  while the client's own event loop lags: a batch whose client is CPU-bound hears every answer
  late, and halving its concurrency then only slows it down (measured: 11 % slower at 64 in
  flight on a 20 ms server).
A static cap is the same gate with adaptation off.

`RateLimitHeaders` reads OpenAI's `x-ratelimit-remaining-*` and `x-ratelimit-reset-*` and spaces
requests so that what is left lasts until the reset, instead of earning 429s; without them,
`QuotaLearner` finds a quota from its 429s and tells it from sporadic ones.

`Breaker` stops sending to a server whose calls keep failing or hanging: after N failures in a
row (timeouts only when a cheap check fails too: slow is not dead) it opens, says so, lets one
probe through at a growing interval, and closes when a probe succeeds; open past
`give_up_after`, every call waiting on it fails at once with `LLMUnavailableError`, so a
journaled batch ends and a plain re-run retries those calls.
"""

from __future__ import annotations

import asyncio
import collections
import logging
import re
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass

from anabranch.errors import LLMUnavailableError

logger = logging.getLogger(__name__)

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
    answered: int = 0
    """Attempts that got an answer."""


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

    async def acquire(self, *, first: bool = False) -> None:
        """Take a slot; `first` jumps the queue (a call coming back from a wait between its
        attempts, which already waited its turn once)."""
        if self.adaptive and self._probe is None:
            self._arm(asyncio.get_running_loop())
        if self.in_flight < int(self.limit) and (first or not self._waiters):
            self.in_flight += 1
            return
        waiter = asyncio.get_running_loop().create_future()
        if first:
            self._waiters.appendleft(waiter)
        else:
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
        self.stats.answered += 1
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
    refill. Without headers, `QuotaLearner` finds the rate from the 429s themselves.
    """

    def __init__(self) -> None:
        self._next = 0.0
        self._spacing = 0.0
        self._token_rate = 0.0
        self.heard = False
        """The server sends quota headers: they, not the 429s, say what the quota is."""
        self.heard_tokens = False
        """The server counts tokens: requests need a token estimate to be paced."""
        self.learner = QuotaLearner()
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
            self.heard = True
            self._spacing = spacing
            self._token_rate = token_rate
        return spent

    def pause(self, seconds: float) -> None:
        """Hold back every request for `seconds`: what a spent quota needs to refill."""
        self._next = max(self._next, time.monotonic() + seconds)

    async def wait(self, estimated_tokens: int = 0) -> None:
        """Until the quota has room for one more request of about this many tokens."""
        if self._spacing_for(estimated_tokens) < 1e-4 and time.monotonic() >= self._next:
            return
        async with self._lock:  # one at a time, each `spacing` after the last
            delay = self._next - time.monotonic()
            if delay > 0:
                self.learner.waited()
                await asyncio.sleep(delay)
            # What the server said while this request waited counts: a quota can shrink. The
            # next slot follows this one's, not the moment the sleep ended (a busy loop wakes
            # late, and the rate sent fell below the paced one by as much), with at most one
            # spacing made up.
            spacing = self._spacing_for(estimated_tokens)
            self._next = max(self._next, time.monotonic() - spacing) + spacing

    def _spacing_for(self, estimated_tokens: int) -> float:
        spacing = self._spacing
        if not self.heard and self.learner.rate is not None:
            spacing = 1.0 / self.learner.rate
        if self._token_rate:
            return max(spacing, estimated_tokens / self._token_rate)
        return spacing


_WINDOW = 32
"""Answers over which the share of 429s is judged, and a trial's length: long enough that a
share of 15 % is told from 0 % (about 5 refusals against none), short enough to be a second of a
batch."""
_MARGIN = 0.05
"""A share of 429s this far above the sporadic share (`QuotaLearner.baseline`) may be a quota's."""
_PROBE_STEP = 0.04
"""Requests/s added to the paced rate per answer: about 4 % a second whatever the rate, so a
quota that grows is found again, and one that does not costs a 429 now and then."""

_CUT = 0.85
"""A known quota's 429 (its share of answers low) paces at this share of the rate: the probe
went just past the quota, and a step back of 15 % is below it again."""


class QuotaLearner:
    """Finds a quota the server does not state, from its 429s, and tells it from sporadic ones.

    A server without quota headers says only `429, Retry-After: 1`, whether 40 requests a second
    is its quota or a flaky gateway refuses one request in seven at any rate. The two differ in
    how they answer a slower client: below a quota the 429s stop; a sporadic share stays. So a
    share of 429s above the sporadic share is a suspicion, and it is tested: pace at half the
    rate sent over the last second and count the next `_WINDOW` answers to requests sent since.
    If the pacing held them back (else the client's own demand was below the rate, and the rate
    cannot have caused the 429s) and the share fell by half, it was the quota: pace at what got
    through (or at the trial's rate, if nothing was refused), and grow by `_PROBE_STEP` per
    answer until the next 429, which starts the next trial. If not, it was sporadic: its share
    becomes the baseline that later suspicions must exceed, and the rate goes back to what it
    was. A sporadic 429 costs the retried request its Retry-After, never the batch (measured in
    bench/bench_adaptive.py; the rule in docs/architecture.md).
    """

    def __init__(self) -> None:
        self.rate: float | None = None
        """The paced requests per second, or None when nothing says there is a quota."""
        self.baseline = 0.0
        """The share of 429s that did not fall with the rate: sporadic."""
        self.quota = False
        """The last trial found a quota: a 429 over the baseline is taken as its signal."""
        self._recent: collections.deque[bool] = collections.deque(maxlen=_WINDOW)
        self._sent: collections.deque[tuple[float, bool]] = collections.deque()
        """The last second's attempts: when, and whether they got through."""
        self._trial: _Trial | None = None
        self._first = 0.0
        self._cut = 0.0

    def answered(self) -> None:
        """An attempt got an answer (not a 429)."""
        self._count(refused=False)
        if self.rate is not None and self._trial is None:
            self.rate += _PROBE_STEP

    def waited(self) -> None:
        """A request waited for the pacing: the rate, not the client's demand, set its time."""
        if self._trial is not None and self._trial.skip <= 0:
            self._trial.paced += 1

    def refused(self, in_flight: int) -> bool:
        """A 429 or 503, with `in_flight` other attempts out; True when it is taken as a
        quota's signal (and the pacing tightens)."""
        self._count(refused=True)
        if self._trial is not None:
            return False  # a trial under way decides
        if not self._recent:  # a trial's verdict just cleared the window: judge afresh
            return False
        refusals = sum(self._recent)
        share = refusals / len(self._recent)
        now = time.monotonic()
        if self.quota and self.rate is not None and share <= 2 * _MARGIN:
            # A known quota, probed past: step back a little (once per second, as a whole-second
            # Retry-After cannot say more), not a whole trial at half the rate each time.
            if now - self._cut >= 1.0:
                self._cut = now
                self.rate = max(0.5, _CUT * self.rate)
            return True
        margin = 0.0 if self.quota else _MARGIN
        if share <= self.baseline + margin or (
            not self.quota and (refusals < 2 or len(self._recent) < _WINDOW)
        ):
            return False
        span = max(min(1.0, now - self._first), 1e-3)  # the first second is not a whole one
        sent = len(self._sent) / span
        self._trial = _Trial(self.rate, share, now, skip=in_flight)
        self.rate = max(0.5, 0.5 * min(sent, self.rate or float("inf")))
        return True

    def _count(self, refused: bool) -> None:
        now = time.monotonic()
        if not self._first:
            self._first = now
        self._recent.append(refused)
        self._sent.append((now, not refused))
        while self._sent[0][0] < now - 1.0:
            self._sent.popleft()
        trial = self._trial
        if trial is None:
            return
        if trial.skip > 0:  # sent before the trial began: it says nothing of its rate
            trial.skip -= 1
            trial.began = now
            return
        trial.answers += 1
        trial.refused += refused
        if trial.answers < _WINDOW:
            return
        self._trial = None
        share = trial.refused / trial.answers
        through = (trial.answers - trial.refused) / max(now - trial.began, 1e-3)
        bound = trial.paced >= 0.5 * trial.answers  # else our demand, not the rate, was low
        self.quota = bound and share <= 0.5 * trial.share
        self._recent.clear()  # the next suspicion is judged on answers after this verdict
        if self.quota:  # above the quota, what got through is the quota; below, the trial's
            self.rate = max(0.5, min(through, self.rate or through) if share else self.rate or 0.5)
        else:  # it did not fall with the rate: sporadic
            self.baseline = max(self.baseline, share, trial.share)
            self.rate = trial.before


@dataclass
class _Trial:
    """A test of whether 429s fall with the rate."""

    before: float | None
    """The paced rate before the trial, restored if they do not."""
    share: float
    """The share of 429s that started it."""
    began: float
    skip: int = 0
    """Answers still to come for attempts sent before it began."""
    answers: int = 0
    refused: int = 0
    paced: int = 0
    """Requests that waited for the pacing during it."""


def _clock(moment: float) -> str:
    """A monotonic moment as the wall clock's HH:MM:SS, for messages."""
    return time.strftime("%H:%M:%S", time.localtime(time.time() - (time.monotonic() - moment)))


def _span(seconds: float) -> str:
    """`45 s`, `4 min`: how long, as a person says it."""
    return f"{seconds:.0f} s" if seconds < 90 else f"{seconds / 60:.0f} min"


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
        self, failures: int, give_up_after: float | None, where: str, check: Check | None = None
    ) -> None:
        self.failures = failures
        self.give_up_after = give_up_after
        self.where = where
        self.check = check
        self._in_a_row = 0
        self._opened: float | None = None
        self._next_probe = 0.0
        self._interval = 1.0
        self._probing = False
        self._checking: asyncio.Task[None] | None = None
        self._said = 0.0
        self._gave_up = False
        self._stopped = False

    @property
    def outage(self) -> str | None:
        """What the progress line says while the breaker is open, else None."""
        if self._opened is None:
            return None
        text = f"server not answering since {_clock(self._opened)}"
        if self.give_up_after is not None:
            left = max(0.0, self._opened + self.give_up_after - time.monotonic())
            text += f"; giving up in {_span(left)}"
        return text

    def unavailable(self, why: str, attempts: int = 0) -> LLMUnavailableError:
        """The error of a call that the outage ended, naming the server and what to do."""
        since = f" since {_clock(self._opened)}" if self._opened is not None else ""
        return LLMUnavailableError(
            f"the server at {self.where} has not answered{since}; {why}; run the same command "
            "again when it is back (the subtasks that failed because of it are retried)",
            attempts=attempts,
        )

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
        while self._opened is not None and not self._stopped:
            now = time.monotonic()
            if self.give_up_after is not None and now - self._opened > self.give_up_after:
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

    def succeeded(self) -> None:
        if self._opened is not None:
            logger.warning("the server at %s answers again", self.where)
        self._in_a_row = 0
        self._opened, self._probing, self._interval, self._gave_up = None, False, 1.0, False

    def failed(self, *, timed_out: bool = False) -> None:
        self._in_a_row += 1
        now = time.monotonic()
        if self._opened is not None:
            if self._probing:  # the probe failed: wait longer before the next
                self._probing = False
                self._interval = min(30.0, self._interval * 2)
                self._next_probe = now + self._interval
        elif self._in_a_row >= self.failures:
            if not timed_out or self.check is None:
                self._open(now)
            elif self._checking is None:  # slow or down? ask the cheap question first
                self._checking = asyncio.ensure_future(self._check_then_open(self.check))

    async def _check_then_open(self, check: Check) -> None:
        try:
            alive = await check()
        except Exception:  # noqa: BLE001 - a check that cannot be made says nothing
            return
        finally:
            self._checking = None
        if alive:  # slow, not down: its calls go on, each with its own timeout and retries
            self._in_a_row = 0
        elif self._opened is None and self._in_a_row >= self.failures:
            self._open(time.monotonic())

    def _open(self, now: float) -> None:
        self._opened, self._next_probe, self._said = now, now + self._interval, now
        logger.warning("the %s at %s", self.outage, self.where)
