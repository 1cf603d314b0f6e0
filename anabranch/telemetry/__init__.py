"""See a run: OpenTelemetry traces and metrics (GenAI conventions), and the run's timeline.

    from anabranch.telemetry import instrument
    instrument()                     # spans and metrics to OpenTelemetry's global providers
    instrument(provider, meter_provider, include_content=True)

Importing this package imports no OpenTelemetry module; `instrument` needs
`pip install 'anabranch[otel]'`. The HTML run report is `anabranch.telemetry.html`.

Names load on first use (PEP 562): every result carries a `Timeline`, so `anabranch.types`
imports `anabranch.telemetry.timeline`, and an eager package would load the openai client
(for `instrument`'s wrapping) into every command, a usage error's included.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from anabranch.telemetry.switch import instrument, instrumented, uninstrument
    from anabranch.telemetry.timeline import Failure, Fallback, Timeline, TimelineRecorder
    from anabranch.telemetry.tracing import (
        BatchTelemetry,
        ToolSpan,
        agent_node,
        agent_span,
        fell_back,
        invoke_agent,
        tool_span,
    )

_WHERE = {
    "instrument": "anabranch.telemetry.switch",
    "instrumented": "anabranch.telemetry.switch",
    "uninstrument": "anabranch.telemetry.switch",
    "Failure": "anabranch.telemetry.timeline",
    "Fallback": "anabranch.telemetry.timeline",
    "Timeline": "anabranch.telemetry.timeline",
    "TimelineRecorder": "anabranch.telemetry.timeline",
    "BatchTelemetry": "anabranch.telemetry.tracing",
    "ToolSpan": "anabranch.telemetry.tracing",
    "agent_node": "anabranch.telemetry.tracing",
    "agent_span": "anabranch.telemetry.tracing",
    "fell_back": "anabranch.telemetry.tracing",
    "invoke_agent": "anabranch.telemetry.tracing",
    "tool_span": "anabranch.telemetry.tracing",
}
"""Each public name and the module that defines it."""

__all__ = [
    "BatchTelemetry",
    "Failure",
    "Fallback",
    "Timeline",
    "TimelineRecorder",
    "ToolSpan",
    "agent_node",
    "agent_span",
    "fell_back",
    "instrument",
    "instrumented",
    "invoke_agent",
    "tool_span",
    "uninstrument",
]


def __getattr__(name: str) -> Any:
    """Import a public name on first use, then keep it as a plain attribute."""
    module = _WHERE.get(name)
    if module is None:
        raise AttributeError(f"module 'anabranch.telemetry' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted([*globals(), *__all__])
