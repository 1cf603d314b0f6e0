"""What a batch did over time, in a few hundred buckets: the data behind the HTML run report.

The runner keeps one `TimelineRecorder` per batch; the endpoint's calls and the agent nodes
report to it (through `anabranch.telemetry`), and the batch's `RunReport` carries the finished
`Timeline`, so the journal keeps it with the report and `anabranch runs show ID --report FILE`
draws a past run without having kept anything else. Memory and size stay flat however long the
run: buckets start at a quarter of a second and double in width (merging pairs) whenever there
would be more than `MAX_BUCKETS`. Latencies are kept as histograms, not lists.
"""

from __future__ import annotations

import time
from collections import Counter
from typing import Any

from pydantic import BaseModel, Field

MAX_BUCKETS = 240
"""More buckets than this and the buckets double in width."""

LATENCY_BOUNDS = (0.01, 0.02, 0.04, 0.08, 0.16, 0.32, 0.64, 1.28, 2.56, 5.12, 10.24, 20.48, 40.96)
"""Upper bounds (seconds) of the latency histograms: the GenAI conventions' duration buckets."""

MAX_FAILURES = 100
"""Failed tasks kept with their reasons; the count of the rest is kept too."""


class Failure(BaseModel):
    """A task that did not end ok, and why."""

    task_id: str
    status: str
    """`partial`, `error` or `rejected`."""
    reasons: list[str]
    """One line per error record: the agent (or stage), the error's type and its message."""


class Fallback(BaseModel):
    """A part of the run that did its work another way than asked, and how often."""

    what: str
    """Who fell back: `planner`, or an agent's name."""
    to: str
    """What it fell back to (`the rule plan`, `tiktoken`)."""
    reason: str
    """Why, in a few words (`invalid JSON`, `timed out`)."""
    count: int = 0
    """Times it happened in the run: tasks for the planner, subtasks for an agent."""


class Timeline(BaseModel):
    """A batch over time: counts per bucket of `step` seconds, from the batch's start."""

    step: float = 0.25
    """Width of a bucket in seconds."""
    tasks: list[int] = Field(default_factory=list)
    """Tasks delivered in each bucket."""
    calls: list[int] = Field(default_factory=list)
    """LLM calls that ended in each bucket (answered or failed for good)."""
    in_flight: list[int] = Field(default_factory=list)
    """The most LLM calls in flight at once during each bucket."""
    limit: list[float] = Field(default_factory=list)
    """The endpoint's concurrency limit at the end of each bucket (it adapts)."""
    input_tokens: list[int] = Field(default_factory=list)
    """Prompt tokens of the calls that ended in each bucket."""
    output_tokens: list[int] = Field(default_factory=list)
    """Completion tokens of the calls that ended in each bucket."""
    failed_attempts: dict[str, list[int]] = Field(default_factory=dict)
    """By error type (`429`, `500`, `timeout`, ...): attempts that failed, per bucket."""
    retries: list[int] = Field(default_factory=list)
    """Attempts sent again after a failure, per bucket."""
    latency_bounds: list[float] = Field(default_factory=lambda: list(LATENCY_BOUNDS))
    """Upper bounds of the latency histograms' bins; the last bin holds everything above."""
    latency: dict[str, list[int]] = Field(default_factory=dict)
    """By agent: how many of its subtasks took how long (one count per bin)."""
    call_errors: dict[str, int] = Field(default_factory=dict)
    """By error type: LLM calls that failed for good."""
    failures: list[Failure] = Field(default_factory=list)
    """The first `MAX_FAILURES` tasks that did not end ok."""
    more_failures: int = 0
    """Tasks that did not end ok beyond those kept in `failures`."""
    fallbacks: list[Fallback] = Field(default_factory=list)
    """What fell back to what, and why, with its count (a demo must not fall back unsaid)."""

    @property
    def seconds(self) -> float:
        return self.step * len(self.tasks)


_SERIES = ("tasks", "calls", "in_flight", "limit", "input_tokens", "output_tokens", "retries")


class TimelineRecorder:
    """Fills a `Timeline` as a batch runs: every method is a few additions on the event loop."""

    def __init__(self) -> None:
        self.timeline = Timeline()
        self._start = time.perf_counter()
        self._current = 0  # calls in flight now
        self._limit = 0.0

    def _bucket(self) -> int:
        t = self.timeline
        index = int((time.perf_counter() - self._start) / t.step)
        while index >= MAX_BUCKETS:
            self._coarsen()
            index //= 2
        while len(t.tasks) <= index:
            for name in _SERIES:
                getattr(t, name).append(0)
            t.in_flight[-1] = self._current
            t.limit[-1] = self._limit
            for series in t.failed_attempts.values():
                series.append(0)
        return index

    def _coarsen(self) -> None:
        """Double the buckets' width: sums add up, the peaks and the limit keep their maximum."""
        t = self.timeline
        t.step *= 2

        def merge(values: list[Any], how: Any) -> list[Any]:
            return [how(values[i : i + 2]) for i in range(0, len(values), 2)]

        for name in ("tasks", "calls", "input_tokens", "output_tokens", "retries"):
            setattr(t, name, merge(getattr(t, name), sum))
        t.in_flight = merge(t.in_flight, max)
        t.limit = merge(t.limit, lambda pair: pair[-1])
        t.failed_attempts = {k: merge(v, sum) for k, v in t.failed_attempts.items()}

    def call_started(self, limit: float) -> None:
        self._current += 1
        self._limit = limit
        i = self._bucket()
        t = self.timeline
        t.in_flight[i] = max(t.in_flight[i], self._current)
        t.limit[i] = limit

    def call_ended(self, input_tokens: int, output_tokens: int, error: str | None) -> None:
        self._current -= 1
        i = self._bucket()
        t = self.timeline
        t.calls[i] += 1
        t.input_tokens[i] += input_tokens
        t.output_tokens[i] += output_tokens
        if error is not None:
            t.call_errors[error] = t.call_errors.get(error, 0) + 1

    def attempt_failed(self, error: str) -> None:
        i = self._bucket()
        t = self.timeline
        series = t.failed_attempts.get(error)
        if series is None:
            series = t.failed_attempts[error] = [0] * len(t.tasks)
        series[i] += 1

    def retried(self) -> None:
        self.timeline.retries[self._bucket()] += 1

    def agent_finished(self, agent: str, seconds: float) -> None:
        t = self.timeline
        counts = t.latency.get(agent)
        if counts is None:
            counts = t.latency[agent] = [0] * (len(t.latency_bounds) + 1)
        for i, bound in enumerate(t.latency_bounds):
            if seconds <= bound:
                counts[i] += 1
                break
        else:
            counts[-1] += 1

    def task_delivered(self, task_id: str, status: str, reasons: list[str]) -> None:
        t = self.timeline
        t.tasks[self._bucket()] += 1
        if status == "ok":
            return
        if len(t.failures) < MAX_FAILURES:
            t.failures.append(Failure(task_id=task_id, status=status, reasons=reasons))
        else:
            t.more_failures += 1

    def fell_back(self, what: str, to: str, reason: str) -> None:
        for fallback in self.timeline.fallbacks:
            if (fallback.what, fallback.to, fallback.reason) == (what, to, reason):
                fallback.count += 1
                return
        self.timeline.fallbacks.append(Fallback(what=what, to=to, reason=reason, count=1))

    def finish(self) -> Timeline:
        self._bucket()  # the series reach the batch's end
        return self.timeline


def error_counts(timeline: Timeline) -> Counter[str]:
    """Failed attempts by error type over the whole run."""
    return Counter({k: sum(v) for k, v in timeline.failed_attempts.items()})
