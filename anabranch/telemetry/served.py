"""A served request's span: `invoke_workflow {graph}` around one chat request's graph run.

    invoke_workflow {graph}    INTERNAL  one per request to /v1/chat/completions or /v1/responses
      invoke_agent {agent}     INTERNAL  the graph's agent nodes (and the chain's steps)
        chat {model}           CLIENT    their LLM calls
        execute_tool {tool}    INTERNAL  their tool calls

The request's W3C `traceparent` (read by OpenTelemetry's global propagator) makes the span a
child of the caller's, so a chat backend behind a traced web app continues that app's trace.
The span's context is attached around each step of the run's event stream only (never across a
`yield`), so every task the graph starts inherits it and no context leaks to the server's own
tasks. The answer's token usage goes on as `anabranch.usage.*`, not `gen_ai.usage.*`: the chat
spans under it carry those, and a backend summing them over a trace counts each token once.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Mapping
from typing import TYPE_CHECKING, Any

from anabranch.telemetry.switch import SWITCH, Instrumentation, error_type, mark_failed

if TYPE_CHECKING:
    from anabranch.chat.items import FinalAnswer


def traced_request(
    events: AsyncIterator[Any],
    *,
    graph: str,
    headers: Mapping[str, str],
    response_id: str | None,
    thread: str | None,
    stream: bool,
) -> AsyncIterator[Any]:
    """`events` (a run's stream items) under the request's span; `events` itself when telemetry
    is off, so an untraced server pays one check."""
    on = SWITCH.on
    if on is None:
        return events
    return _traced(on, events, graph, headers, response_id, thread, stream)


async def _traced(
    on: Instrumentation,
    events: AsyncIterator[Any],
    graph: str,
    headers: Mapping[str, str],
    response_id: str | None,
    thread: str | None,
    stream: bool,
) -> AsyncIterator[Any]:
    from opentelemetry import propagate, trace
    from opentelemetry.trace import SpanKind

    from anabranch.chat.items import FinalAnswer  # here: the chat package imports this module

    attributes: dict[str, Any] = {
        "gen_ai.operation.name": "invoke_workflow",
        "gen_ai.workflow.name": graph,
        "gen_ai.request.model": graph,
        "anabranch.stream": stream,
    }
    if response_id:
        attributes["gen_ai.response.id"] = response_id
    if thread:
        attributes["gen_ai.conversation.id"] = thread
    span = on.tracer.start_span(
        f"invoke_workflow {graph}",
        context=propagate.extract(headers),
        kind=SpanKind.INTERNAL,
        attributes=attributes,
    )
    final: FinalAnswer | None = None
    try:
        while True:
            with trace.use_span(
                span, end_on_exit=False, record_exception=False, set_status_on_exception=False
            ):
                try:
                    item = await anext(events)
                except StopAsyncIteration:
                    break
            if isinstance(item, FinalAnswer):
                final = item
            yield item
    except (asyncio.CancelledError, GeneratorExit):
        mark_failed(span, "cancelled")  # the client left, or the server stopped the run
        raise
    except BaseException as exc:
        mark_failed(span, error_type(exc))
        raise
    finally:
        if final is not None:
            span.set_attribute("gen_ai.response.finish_reasons", (final.finish_reason,))
            span.set_attribute("anabranch.usage.input_tokens", final.usage.prompt_tokens)
            span.set_attribute("anabranch.usage.output_tokens", final.usage.completion_tokens)
        span.end()
