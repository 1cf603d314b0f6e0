"""Telemetry's switch: on for the process (`instrument`), as OpenTelemetry's providers are.

Until `instrument` is called no OpenTelemetry module is imported, and each hook on the call path
costs one check of `SWITCH.on`. The batch runner's `TimelineRecorder` (the HTML report's data)
and the agent a call is made for travel in context variables, which the runner and the agent
node set in their own tasks, so each batch hears only its own calls.
"""

from __future__ import annotations

import contextvars
from dataclasses import dataclass
from typing import Any

import openai
import orjson

from anabranch.redact import redact
from anabranch.telemetry.metrics import Instruments
from anabranch.telemetry.timeline import TimelineRecorder

PROVIDER = "openai"
"""`gen_ai.provider.name`: the API every endpoint speaks (the conventions' value for it)."""


@dataclass(frozen=True, slots=True)
class Instrumentation:
    """Where the spans and measurements go, and what they may carry."""

    tracer: Any
    """An OpenTelemetry `Tracer`."""
    instruments: Instruments
    """The metrics' instruments, made from an OpenTelemetry `Meter`."""
    include_content: bool
    """Put the messages sent and the answers (redacted) on the chat spans."""


class Switch:
    """The process' one telemetry setting (the hooks read `SWITCH.on`)."""

    __slots__ = ("on",)

    def __init__(self) -> None:
        self.on: Instrumentation | None = None


SWITCH = Switch()
RECORDER: contextvars.ContextVar[TimelineRecorder | None] = contextvars.ContextVar(
    "anabranch_timeline", default=None
)
"""The timeline of the batch this task works for, set by the runner in its workers."""
AGENT: contextvars.ContextVar[str | None] = contextvars.ContextVar("anabranch_agent", default=None)
"""The agent this task runs for, set by `invoke_agent`: its calls' metrics carry its name."""


def instrument(
    tracer_provider: Any = None, meter_provider: Any = None, *, include_content: bool = False
) -> None:
    """Emit spans and metrics from now on, to the given providers (OpenTelemetry's global ones
    when None: whatever the application configured). Needs `pip install anabranch[otel]`."""
    from opentelemetry import metrics, trace

    import anabranch

    version = anabranch.__version__ if hasattr(anabranch, "__version__") else None
    tracer = (tracer_provider or trace.get_tracer_provider()).get_tracer("anabranch", version)
    meter = (meter_provider or metrics.get_meter_provider()).get_meter("anabranch", version)
    SWITCH.on = Instrumentation(tracer, Instruments.of(meter), include_content)


def uninstrument() -> None:
    """Stop emitting spans and metrics (what is in flight finishes as it began)."""
    SWITCH.on = None


def instrumented() -> bool:
    return SWITCH.on is not None


def error_type(exc: BaseException) -> str:
    """`error.type`: the HTTP status for a status error, `timeout`, else the exception's class."""
    if isinstance(exc, openai.APIStatusError):
        return str(exc.status_code)
    status = getattr(exc, "status", None)
    if isinstance(status, int):
        return str(status)
    if isinstance(exc, TimeoutError | openai.APITimeoutError) or type(exc).__name__ in (
        "LLMTimeoutError",
    ):
        return "timeout"
    return type(exc).__qualname__


def mark_failed(span: Any, error: str) -> None:
    from opentelemetry.trace import Status, StatusCode

    span.set_attribute("error.type", error)
    span.set_status(Status(StatusCode.ERROR, error))


def content(value: object) -> str:
    text = value if isinstance(value, str) else orjson.dumps(value, default=str).decode()
    return redact(text)
