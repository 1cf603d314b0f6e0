"""See a run: OpenTelemetry traces and metrics (GenAI conventions), and the run's timeline.

    from anabranch.telemetry import instrument
    instrument()                     # spans and metrics to OpenTelemetry's global providers
    instrument(provider, meter_provider, include_content=True)

Importing this package imports no OpenTelemetry module; `instrument` needs
`pip install 'anabranch[otel]'`. The HTML run report is `anabranch.telemetry.html`.
"""

from anabranch.telemetry.switch import instrument, instrumented, uninstrument
from anabranch.telemetry.timeline import Failure, Timeline, TimelineRecorder
from anabranch.telemetry.tracing import BatchTelemetry, ToolSpan, invoke_agent, tool_span

__all__ = [
    "BatchTelemetry",
    "Failure",
    "Timeline",
    "TimelineRecorder",
    "ToolSpan",
    "instrument",
    "instrumented",
    "invoke_agent",
    "tool_span",
    "uninstrument",
]
