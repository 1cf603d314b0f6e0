"""The metrics a run emits: the GenAI conventions' client histograms and a few counters of ours.

Names follow the OpenTelemetry GenAI semantic conventions (status: development) where they have
one; what they do not cover (429s, failed attempts, calls in flight, tasks delivered) is named
under `anabranch.`. Every instrument carries the model and, where a call runs inside an agent
node, `gen_ai.agent.name`, so a dashboard can split by agent and model.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

DURATION_BUCKETS = [
    0.01,
    0.02,
    0.04,
    0.08,
    0.16,
    0.32,
    0.64,
    1.28,
    2.56,
    5.12,
    10.24,
    20.48,
    40.96,
    81.92,
]
"""The conventions' advised bucket bounds for `gen_ai.client.operation.duration` (seconds)."""
TOKEN_BUCKETS = [
    1,
    4,
    16,
    64,
    256,
    1024,
    4096,
    16384,
    65536,
    262144,
    1048576,
    4194304,
    16777216,
    67108864,
]
"""The conventions' advised bucket bounds for `gen_ai.client.token.usage`."""


@dataclass(frozen=True, slots=True)
class Instruments:
    """The instruments of one meter, made once when telemetry is switched on."""

    duration: Any
    """`gen_ai.client.operation.duration`: one LLM call, retries and waits included (s)."""
    tokens: Any
    """`gen_ai.client.token.usage`: a call's input and output tokens (`gen_ai.token.type`)."""
    first_chunk: Any
    """`gen_ai.client.operation.time_to_first_chunk`: a stream's first piece, from its send (s)."""
    rate_limited: Any
    """`anabranch.llm.rate_limited`: attempts the server answered 429."""
    failed_attempts: Any
    """`anabranch.llm.failed_attempts`: attempts that failed, by `error.type`."""
    in_flight: Any
    """`anabranch.llm.calls_in_flight`: LLM calls holding a slot right now."""
    tasks: Any
    """`anabranch.tasks.delivered`: task results delivered, by `anabranch.task.status`."""

    @classmethod
    def of(cls, meter: Any) -> Instruments:
        return cls(
            duration=meter.create_histogram(
                "gen_ai.client.operation.duration",
                unit="s",
                description="GenAI operation duration.",
                explicit_bucket_boundaries_advisory=DURATION_BUCKETS,
            ),
            tokens=meter.create_histogram(
                "gen_ai.client.token.usage",
                unit="{token}",
                description="Number of input and output tokens used.",
                explicit_bucket_boundaries_advisory=TOKEN_BUCKETS,
            ),
            first_chunk=meter.create_histogram(
                "gen_ai.client.operation.time_to_first_chunk",
                unit="s",
                description="Time to receive the first chunk of a streamed answer.",
                explicit_bucket_boundaries_advisory=DURATION_BUCKETS,
            ),
            rate_limited=meter.create_counter(
                "anabranch.llm.rate_limited",
                unit="{attempt}",
                description="Attempts the server answered with 429.",
            ),
            failed_attempts=meter.create_counter(
                "anabranch.llm.failed_attempts",
                unit="{attempt}",
                description="LLM attempts that failed, by error.type (each may be retried).",
            ),
            in_flight=meter.create_up_down_counter(
                "anabranch.llm.calls_in_flight",
                unit="{call}",
                description="LLM calls holding a concurrency slot.",
            ),
            tasks=meter.create_counter(
                "anabranch.tasks.delivered",
                unit="{task}",
                description="Task results delivered by a batch, by status.",
            ),
        )
