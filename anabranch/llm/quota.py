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
import math
import re
import time
from collections.abc import Mapping
from dataclasses import dataclass
from math import inf

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
"""A share of 429s this far above the sporadic share (`QuotaLearner.baseline`) may be a quota's,
or three standard deviations of that share over `_WINDOW` answers if more: a window of 15 %
sporadic 429s reads 40 % now and then, and each suspicion costs a trial."""
_ENOUGH = 3
"""429s after which the first trial ends: it cannot find the quota under its rate any more, and
a few more tell what got through it."""
_MEASURED = 8
"""Answers the first trial takes at least, 429s or not: what got through it sets the second
trial's rate, and over its first three answers that was a guess. Whole-second Retry-Afters
bring sporadic 429s back in waves, and a first trial ended by three 429s in a row measured
0 requests/s got through: the second trial paced at its floor, 0.5 requests/s, and a 5 s batch
with 15 % random 429s ran in 80 s."""
_SECOND = 0.7
"""The second trial's rate, as a share of what got through the first: under a quota that the
first was over (what got through it is the quota), for a climb of half a second back to it."""
_MOST = 0.3
"""The highest sporadic share: a quota taken for sporadic (its first burst's 429s in the share)
still refuses many more than this, unpaced, and is tested again."""
_SHORTEST = 0.05
"""Seconds of answers under which a rate is not measured: a round trip's worth at least."""
_HEADROOM = 0.95
"""The share of a measured rate that is paced: a quota's rate less a little, so that the
server's bucket refills between two probes past it instead of refusing whatever the client
sends the moment it is empty."""
_PROBE_STEP = 0.04
"""Requests/s added to the paced rate per answer once a quota's 429 said where it is: 4 % a
second whatever the rate (the step is per answer, and answers come at the rate), so a quota
that grows is found again, and one that does not costs a 429 every few seconds."""
_CLIMB_STEP = 0.5
"""The same after a trial that no 429 answered: its rate was under the quota by an unknown
amount, so the rate grows by 50 % a second up to what got through a trial over the quota, or
until a 429 says where the quota is."""
_FLOOR = 0.8
"""A known quota's 429s step its rate down to no less than this share of the rate its trial
found: sporadic 429s mistaken for a quota's cannot walk the rate down for ever, and a quota
that really shrank refuses more than the cut's share, which starts a new trial."""
_LATE = 0.75
"""429s that begin this far into a window came after its clean answers: a burst ran dry, even
with answers sent before it did among its first 429s (2 refusals among 5 answers were taken
for sporadic, and a first trial paced at 153 requests/s against a quota of 40: 4 of 20 runs of
600 calls got 39-95 429s). At 15 % sporadic 429s, none in a window's first 24 answers is 2 %."""


class QuotaLearner:
    """Finds a quota the server does not state, from its 429s, and tells it from sporadic ones.

    A server without quota headers says only `429, Retry-After: 1`, whether 40 requests a second
    is its quota or a flaky gateway refuses one request in seven at any rate. The two differ in
    how they answer a slower client: below a quota the 429s stop; a sporadic share stays. So a
    share of 429s above the sporadic share (by three standard deviations) is a suspicion, and
    it is tested in at most two trials:
    - the first paces at `_HEADROOM` of the rate the server accepted over the last second (what
      a quota lets through while it refuses; in the endpoint's first second, divided by one
      plus its age if a burst ran dry, as a quota's first one of a second's worth is in it,
      else by its age) for `_WINDOW`
      answers to attempts sent since. Not one 429, while the pacing held requests back (else
      the client's own demand was low, which cannot have caused the 429s): it was the quota,
      and the rate is under it; the rate climbs by `_CLIMB_STEP` per answer back to the rate
      measured, then probes by `_PROBE_STEP`. A trial with 429s cannot say so: it ends at
      `_ENOUGH` of them (after `_MEASURED` answers at least);
    - the second, at `_SECOND` of what got through the first: under a quota that the first was
      still a little over, clean again (the climb then stops at `_HEADROOM` of what got through
      the first); sporadic 429s go on, and the trial ends at the first of them.
    Sporadic: the share of 429s over every answer so far (at most `_MOST`) becomes the
    baseline, and the pacing stops. A later 429 of a known quota (its share low) paces at
    `_HEADROOM` of the accepted rate, once a second. A sporadic 429 costs the retried request
    its Retry-After, never the batch (measured in bench/bench_adaptive.py; the rule in
    docs/architecture.md).
    """

    def __init__(self) -> None:
        self.rate: float | None = None
        """The paced requests per second, or None when nothing says there is a quota."""
        self.baseline = 0.0
        """The share of 429s that did not fall with the rate: sporadic."""
        self.quota = False
        """The last trial found a quota: a 429 over the baseline is taken as its signal."""
        self._recent: collections.deque[bool] = collections.deque(maxlen=_WINDOW)
        self._accepted: collections.deque[float] = collections.deque()
        """When the last second's accepted attempts were answered."""
        self._trial: _Trial | None = None
        self._step = _PROBE_STEP
        self._ceiling = inf
        """Where a climb slows to a probe: near what got through a trial over the quota."""
        self._found = 0.0
        """The rate the last trial that found the quota paced at."""
        self._cut = 0.0
        self._first = 0.0
        """When the first answer came."""
        self._answers = self._refusals = 0
        """Answers so far, and the 429s among them: the sporadic share, on every answer."""

    def answered(self, in_flight: int = 0) -> None:
        """An attempt got an answer (not a 429), with `in_flight` other attempts out."""
        self._count(refused=False, in_flight=in_flight)
        if self.rate is not None and self._trial is None:
            self.rate += self._step
            if self.rate >= self._ceiling:
                self._step, self._ceiling = _PROBE_STEP, inf

    def waited(self) -> None:
        """A request waited for the pacing: the rate, not the client's demand, set its time."""
        if self._trial is not None and self._trial.skip <= 0:
            self._trial.paced += 1

    def accepted_rate(self) -> float:
        """Attempts the server accepted over the last second, per second: a whole second, even
        in the first one, so that a quota's first burst counts once, not per its instant."""
        return float(len(self._accepted))

    def refused(self, in_flight: int) -> bool:
        """A 429 or 503, with `in_flight` other attempts out; True when it is taken as a
        quota's signal (and the pacing tightens)."""
        self._count(refused=True, in_flight=in_flight)
        if self._trial is not None:
            return False  # a trial under way decides
        if not self._recent:  # a trial's verdict just cleared the window: judge afresh
            return False
        refusals = sum(self._recent)
        share = refusals / len(self._recent)
        now = time.monotonic()
        if self.quota and self.rate is not None and share <= 2 * _MARGIN:
            # A known quota, probed past: pace just under what it accepted over the last
            # second (once per second: a whole-second Retry-After cannot say more, and the
            # attempts already out are refused alike), not a whole trial each time.
            if now - self._cut >= 1.0:
                self._cut = now
                accepted = _HEADROOM * min(self.rate, self.accepted_rate())
                self.rate = max(0.5, _FLOOR * self._found, accepted)
                self._step, self._ceiling = _PROBE_STEP, inf
            return True
        margin = 0.0 if self.quota else self._margin()
        if share <= self.baseline + margin or (
            not self.quota and (refusals < 2 or len(self._recent) < _WINDOW)
        ):
            return False
        self._trial = _Trial(refusals, len(self._recent), now, skip=in_flight)
        accepted = self.accepted_rate()
        if (age := now - self._first) < 1.0:  # less than a second of answers to count
            # A quota's first burst (a second's worth) is in the count: not twice. Sporadic
            # 429s among the answers say nothing of a burst: the rate is what came so far.
            accepted /= 1.0 + age if self._ran_dry() else max(age, _SHORTEST)
        self.rate = max(0.5, _HEADROOM * min(accepted, self.rate or accepted))
        return True

    def _ran_dry(self) -> bool:
        """The window's 429s came after its clean answers: they began late in it (`_LATE`), or
        most of those that followed the first were refused. A burst ran out, as a quota's
        first one does; sporadic 429s are spread among the answers."""
        recent = list(self._recent)
        first = recent.index(True)
        after = recent[first:]
        return first >= _LATE * len(recent) or 2 * sum(after) >= len(after)

    def _margin(self) -> float:
        """How far over the sporadic share a window's share must be to be a suspicion."""
        b = self.baseline
        return max(_MARGIN, 3 * math.sqrt(b * (1 - b) / _WINDOW))

    def _count(self, refused: bool, in_flight: int) -> None:
        now = time.monotonic()
        self._first = self._first or now
        self._recent.append(refused)
        self._answers += 1
        self._refusals += refused
        if not refused:
            self._accepted.append(now)
        while self._accepted and self._accepted[0] < now - 1.0:
            self._accepted.popleft()
        trial = self._trial
        if trial is None:
            return
        if trial.skip > 0:  # sent before the trial began, at the rate that raised it
            trial.skip -= 1
            trial.before_answers += 1
            trial.before_refused += refused
            trial.began = now
            return
        trial.answers += 1
        trial.refused += refused
        # A trial clean of 429s finds the quota; one with 429s cannot, and need not go on: the
        # second ends at its first, the first at `_ENOUGH` once it has `_MEASURED` answers
        # (what got through it is where the second's climb ends). A sporadic share is told in
        # a few answers, not 64.
        if trial.through is None:  # the first trial
            told = trial.refused >= _ENOUGH and trial.answers >= _MEASURED
        else:
            told = trial.refused >= 1
        if told or trial.answers == _WINDOW:
            self._judge(trial, now, in_flight)

    def _judge(self, trial: _Trial, now: float, in_flight: int) -> None:
        """A trial's verdict: quota (and where), another trial, or sporadic."""
        self._trial = None
        self._recent.clear()  # the next suspicion is judged on answers after this verdict
        through = (trial.answers - trial.refused) / max(now - trial.began, 1e-3)
        bound = trial.paced >= 0.5 * trial.answers  # else our demand, not the rate, was low
        before = trial.before_refused / trial.before_answers
        fell = trial.refused == 0 and before > 0  # 15 % sporadic: 32 answers clean in 0.2 %
        if bound and fell:  # under the quota, as far as no 429 says: climb
            self.quota, self._found = True, self.rate or through
            self._step = _CLIMB_STEP
            # up to what got through a trial over it, else to the rate measured (the trial's
            # less its headroom): past it, only probes, or a bucket's reserve hides the quota
            self._ceiling = _HEADROOM * trial.through if trial.through else self._found / _HEADROOM
        elif bound and trial.through is None:  # a little over a quota, or sporadic: try half
            self._trial = _Trial(trial.before_refused, trial.before_answers, now,
                                 skip=in_flight, through=through)  # fmt: skip
            self.rate = max(0.5, _SECOND * min(through, self.rate or through))
        else:  # it did not fall with the rate: sporadic, at the share of every answer so far
            self.quota = False
            self.baseline = min(_MOST, self._refusals / self._answers)
            self.rate = None


@dataclass
class _Trial:
    """A test of whether 429s fall with the rate."""

    before_refused: int
    """429s among the answers it is judged against: the suspicion's window, then the attempts
    already out when it began."""
    before_answers: int
    began: float
    skip: int = 0
    """Answers still to come for attempts sent before it began."""
    answers: int = 0
    refused: int = 0
    paced: int = 0
    """Requests that waited for the pacing during it."""
    through: float | None = None
    """For a second trial, at half the rate: what got through the first, over the quota if
    this one finds it."""
