"""What an endpoint is told: small frozen settings, one per concern, each field documented.

They are plain values (hashable, picklable, printable), so the same settings can be shared by
several endpoints, shown in a report or sent to another process; the `Endpoint` holds the live
resources (the HTTP client, the semaphore, the buckets) built from them.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from anabranch.errors import ConfigError

TRANSIENT_STATUS = frozenset({408, 409, 429}) | frozenset(range(500, 600))
"""Statuses worth another attempt. 400/401/403/404/422 never are: the same request fails again."""


@dataclass(frozen=True, slots=True)
class Timeouts:
    """How long a call may take. Waiting for a concurrency slot is not counted: under load a call
    queues for a slot, and only its own work once it holds one runs against the clock."""

    attempt: float = 60.0
    """Seconds one attempt may take; for a stream, seconds with no new piece of text."""
    call: float = 180.0
    """Seconds the whole call may take once it holds a slot: its attempts and the waits
    between them (backoff, Retry-After, rate limits)."""
    stretch: float = 1.0
    """How many times longer than `attempt` and `call` the server's measured speed may make
    them (`llm/speed.py`): a slow server's answers are waited for, not failed. 1 keeps the
    call's deadline fixed (the attempt may still take up to it); the commands stretch up to
    `STRETCH` unless `--deadline` was given."""

    def __post_init__(self) -> None:
        if self.attempt <= 0 or self.call <= 0 or self.stretch < 1:
            raise ConfigError(f"timeouts must be positive, and stretch at least 1, got {self}")


STRETCH = 10.0
"""The commands' `Timeouts.stretch` when no `--deadline` is given: a call of the embedded model
on a busy laptop (1 token/s for 8 calls at once) may take 30 minutes, not 3, while a hung
server, which sends no answers to measure, is still cut at the configured bounds."""


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """What is retried, how often and after how long (one retry layer: the openai client's own
    retries are off)."""

    max_attempts: int = 4
    """Attempts per call, the first included."""
    backoff_initial: float = 0.5
    """The longest wait before the second attempt (each wait is drawn from 0 up to it, "full
    jitter"); doubled for each later one."""
    backoff_max: float = 8.0
    """The longest backoff between two attempts."""
    max_retry_after: float = 30.0
    """The longest Retry-After honoured; a longer one is waited only this long."""
    transient_statuses: frozenset[int] = field(default=TRANSIENT_STATUS)
    """HTTP statuses retried; timeouts, dropped connections and unreadable bodies always are."""

    def __post_init__(self) -> None:
        if self.max_attempts < 1:
            raise ConfigError(f"max_attempts must be at least 1, got {self.max_attempts}")
        if min(self.backoff_initial, self.backoff_max, self.max_retry_after) < 0:
            raise ConfigError(f"backoff and Retry-After caps cannot be negative, got {self}")


@dataclass(frozen=True, slots=True)
class Limits:
    """What the server allows; held by the endpoint, so every agent that shares it shares them."""

    concurrency: int = 8
    """Calls in flight at once (llama.cpp's server runs 8 slots by default here)."""
    rpm: float | None = None
    """Requests per minute, retries included, if the server has a quota."""
    tpm: float | None = None
    """Tokens (prompt + completion) per minute, if the server has a quota."""
    adaptive: bool = True
    """Find the server's capacity within [1, concurrency] (AIMD on 429, 503 and queueing
    latency) instead of always sending `concurrency` at once."""
    breaker_failures: int = 10
    """Failures in a row (timeouts, dropped connections, 5xx) that stop sending to the server
    until a probe gets through."""
    give_up_after: float | None = 300.0
    """Seconds the server may stay down before every call waiting on it fails; None waits."""
    max_response_bytes: int = 8 * 1024 * 1024
    """The largest answer read (8 MiB: about two million tokens of text, far past any
    max_tokens a call asks for); a larger one fails its call as an `LLMOutputError`, so a
    runaway or hostile server cannot fill the client's memory."""

    def __post_init__(self) -> None:
        if self.breaker_failures < 1:
            raise ConfigError(f"breaker_failures must be at least 1, got {self.breaker_failures}")
        if self.max_response_bytes < 1:
            raise ConfigError(f"max_response_bytes must be positive, got {self.max_response_bytes}")
        if self.concurrency < 1:
            raise ConfigError(f"concurrency must be at least 1, got {self.concurrency}")
        for name in ("rpm", "tpm"):
            value = getattr(self, name)
            if value is not None and value <= 0:
                raise ConfigError(f"{name} must be positive, got {value}")


@dataclass(frozen=True, slots=True)
class Sampling:
    """Defaults for what the model is asked; a call may override each."""

    temperature: float = 0.0
    """0 makes answers as repeatable as the server allows."""
    max_tokens: int = 256
    """The longest answer, in tokens."""

    def __post_init__(self) -> None:
        if self.max_tokens < 1 or self.temperature < 0:
            raise ConfigError(f"max_tokens must be >= 1 and temperature >= 0, got {self}")


@dataclass(frozen=True, slots=True)
class Prices:
    """What tokens cost live, in dollars per million, and what a batch takes off."""

    input: float
    """Prompt tokens, live."""
    output: float
    """Completion tokens, live."""
    batch_share: float = 0.5
    """What a batch costs against live (OpenAI's is half)."""

    def __post_init__(self) -> None:
        if min(self.input, self.output) < 0 or not 0 < self.batch_share <= 1:
            raise ConfigError(f"prices must be >= 0 and batch_share in (0, 1], got {self}")


@dataclass(frozen=True, slots=True)
class BatchSettings:
    """Send the endpoint's chat calls through the provider's Batch API instead of live."""

    journal: Path | None = None
    """Where the run's batches are recorded (its journal file): a re-run polls the batches
    still running and takes the answers downloaded instead of paying again. None keeps none."""
    run_id: str = ""
    """The run the batches belong to in that journal."""
    gather: float = 0.5
    """Seconds with no new call before a wave is sent."""
    max_requests: int = 50_000
    """Requests per input file (OpenAI's limit); a bigger wave is split."""
    max_bytes: int = 190 * 1024 * 1024
    """Bytes per input file (OpenAI's limit is 200 MB); a bigger wave is split."""
    poll_initial: float = 1.0
    """Seconds before a batch is first polled; doubled after each poll."""
    poll_max: float = 60.0
    """The longest wait between two polls."""
    max_rounds: int = 3
    """Batches one request may go in (failed, expired, lost, transient errors) before its call
    fails."""
    max_enqueued_tokens: int | None = None
    """Tokens (each request's prompt, estimated, plus its max_tokens) the provider lets wait in
    batches at once (OpenAI's enqueued token limit, per model): a file waits for earlier batches
    to end rather than go over it, and a wave is split to fit it. None: no such limit."""
    live_fallback: bool = False
    """Send what a batch did not finish (it failed, expired or lost the request) to the live
    API, at the live price, instead of the next batch."""
    prices: Prices | None = None
    """Token prices, for the report's live against batch cost; None reports no cost."""

    def __post_init__(self) -> None:
        if (
            self.max_requests < 1
            or self.max_bytes < 1024
            or self.max_rounds < 1
            or (self.max_enqueued_tokens is not None and self.max_enqueued_tokens < 1)
        ):
            raise ConfigError(f"batch limits must be positive, got {self}")
        if min(self.gather, self.poll_initial, self.poll_max) < 0:
            raise ConfigError(f"batch waits cannot be negative, got {self}")
