"""Switching telemetry on at the CLI edge: OpenTelemetry's SDK, exporting OTLP over HTTP.

The standard variables decide where it goes: `OTEL_EXPORTER_OTLP_ENDPOINT` (or the per-signal
`OTEL_EXPORTER_OTLP_TRACES_ENDPOINT` / `..._METRICS_ENDPOINT`), `OTEL_EXPORTER_OTLP_HEADERS`,
`OTEL_SERVICE_NAME`, `OTEL_RESOURCE_ATTRIBUTES`; the SDK reads them itself. Telemetry is on when
`--otel` is given or one of the endpoint variables is set, and `OTEL_SDK_DISABLED=true` keeps it
off. `OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT=true` adds the messages to the spans.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from anabranch.errors import ConfigError
from anabranch.telemetry.switch import instrument, uninstrument

_ENDPOINTS = (
    "OTEL_EXPORTER_OTLP_ENDPOINT",
    "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT",
    "OTEL_EXPORTER_OTLP_METRICS_ENDPOINT",
)


def wanted(flag: bool, env: Mapping[str, str] = os.environ) -> bool:
    """Telemetry is asked for: `--otel`, or an OTLP endpoint in the environment."""
    if env.get("OTEL_SDK_DISABLED", "").lower() == "true":
        return False
    return flag or any(env.get(name) for name in _ENDPOINTS)


@dataclass
class Exporting:
    """The SDK's providers while a command runs; `close` flushes what is left and stops them."""

    tracer_provider: Any
    meter_provider: Any

    def close(self) -> None:
        uninstrument()
        self.tracer_provider.shutdown()
        self.meter_provider.shutdown()


def start_exporting(env: Mapping[str, str] = os.environ) -> Exporting:
    """Providers that batch spans and send metrics every `OTEL_METRIC_EXPORT_INTERVAL` ms (the
    SDK's default 60 s; a command's end flushes them either way), and `instrument` on them."""
    try:
        from opentelemetry.exporter.otlp.proto.http.metric_exporter import OTLPMetricExporter
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
        from opentelemetry.sdk.metrics import MeterProvider
        from opentelemetry.sdk.metrics.export import PeriodicExportingMetricReader
        from opentelemetry.sdk.resources import Resource
        from opentelemetry.sdk.trace import TracerProvider
        from opentelemetry.sdk.trace.export import BatchSpanProcessor
    except ImportError as exc:
        raise ConfigError(
            f"telemetry needs OpenTelemetry's SDK ({exc.name} is missing): "
            "pip install 'anabranch[otel]'"
        ) from exc
    resource = Resource.create({"service.name": env.get("OTEL_SERVICE_NAME") or "anabranch"})
    tracer_provider = TracerProvider(resource=resource)
    tracer_provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter()))
    reader = PeriodicExportingMetricReader(OTLPMetricExporter())
    meter_provider = MeterProvider(resource=resource, metric_readers=[reader])
    content = env.get("OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT", "").lower() == "true"
    instrument(tracer_provider, meter_provider, include_content=content)
    return Exporting(tracer_provider, meter_provider)
