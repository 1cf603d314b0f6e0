"""A server's quota, stated or not: paced before it costs 429s.

`RateLimitHeaders` reads OpenAI's `x-ratelimit-remaining-*` and `x-ratelimit-reset-*` and spaces
requests so that what is left lasts until the reset, instead of earning 429s; without them,
`QuotaLearner` finds a quota from its 429s and tells it from sporadic ones.

A 429 of a quota paces the endpoint; a sporadic one costs only the request that got it (the
rule, and the measurements behind it, in docs/architecture.md).
"""

from __future__ import annotations

import asyncio
import collections
import re
import time
from collections.abc import Mapping
from dataclasses import dataclass

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
            # What the server said while this request waited counts: a quota can shrink.
            self._next = time.monotonic() + self._spacing_for(estimated_tokens)

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
        # Fewer 429s at the lower rate: it was the quota. More of them (clearly: past what 32
        # answers' chance allows): the trial's rate is itself over the quota (a fast client's
        # first second can send many times a quota, and half of it is still too much).
        self.quota = bound and (share <= 0.5 * trial.share or share > trial.share + _WORSE)
        self._recent.clear()  # the next suspicion is judged on answers after this verdict
        if self.quota:  # above the quota, what got through is the quota; below, the trial's
            self.rate = max(0.5, min(through, self.rate or through) if share else self.rate or 0.5)
        else:  # it did not fall with the rate: sporadic
            self.baseline = max(self.baseline, share, trial.share)
            self.rate = trial.before


_WORSE = 0.15
"""How much higher a trial's share of 429s must be than the share that started it to say its
rate is still over a quota (a sporadic share over 32 answers varies by about 0.06)."""


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
