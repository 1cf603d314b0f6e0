"""Spans and measurements of a run, following the OpenTelemetry GenAI semantic conventions.

The span tree of a batch:

    invoke_workflow {run}      INTERNAL  one per batch (`gen_ai.workflow.name`)
      invoke_agent {agent}     INTERNAL  one per agent node run (a subtask)
        chat {model}           CLIENT    one per LLM call; each retry is an event on it
        execute_tool {tool}    INTERNAL  one per tool call (`tool_span`)

Token usage is set on the `chat` spans only: a parent never repeats what its children carry, so
a backend that sums `gen_ai.usage.*` over a trace counts each token once. Message content (the
prompt and the answer) is off by default: `instrument(include_content=True)`, or the standard
`OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT=true` at the CLI edge, turns it on, and it
passes through the one redactor first.

Telemetry is switched on for the process (`instrument`), as OpenTelemetry's own providers are;
until then no OpenTelemetry module is imported and a call costs one check. The batch runner's
`TimelineRecorder` (the HTML report's data) is reached through a context variable that the
runner sets in its workers, so each batch hears only its own calls.
"""

from __future__ import annotations

import contextvars
import time
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol
from urllib.parse import urlsplit

import openai
import orjson

from anabranch.redact import redact
from anabranch.telemetry.metrics import Instruments
from anabranch.telemetry.timeline import Timeline, TimelineRecorder

if TYPE_CHECKING:
    from anabranch.agents.base import Answer as AgentAnswer
    from anabranch.llm.transport import Answer
    from anabranch.types import Subtask, TaskResult

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


_on: Instrumentation | None = None
_recorder: contextvars.ContextVar[TimelineRecorder | None] = contextvars.ContextVar(
    "anabranch_timeline", default=None
)
_agent: contextvars.ContextVar[str | None] = contextvars.ContextVar("anabranch_agent", default=None)
_call: contextvars.ContextVar[LLMCall | None] = contextvars.ContextVar(
    "anabranch_call", default=None
)


def instrument(
    tracer_provider: Any = None, meter_provider: Any = None, *, include_content: bool = False
) -> None:
    """Emit spans and metrics from now on, to the given providers (OpenTelemetry's global ones
    when None: whatever the application configured). Needs `pip install anabranch[otel]`."""
    global _on
    from opentelemetry import metrics, trace

    import anabranch

    version = anabranch.__version__ if hasattr(anabranch, "__version__") else None
    tracer = (tracer_provider or trace.get_tracer_provider()).get_tracer("anabranch", version)
    meter = (meter_provider or metrics.get_meter_provider()).get_meter("anabranch", version)
    _on = Instrumentation(tracer, Instruments.of(meter), include_content)


def uninstrument() -> None:
    """Stop emitting spans and metrics (what is in flight finishes as it began)."""
    global _on
    _on = None


def instrumented() -> bool:
    return _on is not None


# -- the batch ----------------------------------------------------------------------------------


class BatchTelemetry:
    """A batch's workflow span and its timeline; the runner opens one per batch."""

    def __init__(self, name: str) -> None:
        self.recorder = TimelineRecorder()
        self._span: Any = None
        self._on = _on
        if self._on is not None:
            from opentelemetry.trace import SpanKind

            self._span = self._on.tracer.start_span(
                f"invoke_workflow {name}",
                kind=SpanKind.INTERNAL,
                attributes={
                    "gen_ai.operation.name": "invoke_workflow",
                    "gen_ai.workflow.name": name,
                },
            )

    @contextmanager
    def inside(self) -> Iterator[None]:
        """Run a worker of the batch under its span and timeline (each worker is a task of its
        own, so the context it attaches is its own)."""
        token = _recorder.set(self.recorder)
        if self._span is None:
            try:
                yield
            finally:
                _recorder.reset(token)
            return
        from opentelemetry import trace

        try:
            with trace.use_span(self._span, end_on_exit=False):
                yield
        finally:
            _recorder.reset(token)

    def delivered(self, result: TaskResult) -> None:
        """A task result left the batch: counted, and kept with its reasons when not ok."""
        reasons = [f"{e.kind}: {e.type}: {e.message}" for e in result.errors]
        self.recorder.task_delivered(result.task_id, result.status, reasons)
        if self._on is not None:
            self._on.instruments.tasks.add(1, {"anabranch.task.status": result.status})

    def end(self, error: BaseException | None = None) -> Timeline:
        if self._span is not None:
            if error is not None:
                _failed(self._span, _error_type(error))
            self._span.end()
        return self.recorder.finish()


# -- an agent node ------------------------------------------------------------------------------


class _Runs(Protocol):
    name: str

    def run(self, subtask: Subtask) -> Awaitable[AgentAnswer]: ...


async def invoke_agent(agent: _Runs, subtask: Subtask) -> AgentAnswer:
    """`agent.run(subtask)` inside `invoke_agent {agent}`: its LLM calls are the span's children,
    its time goes to the run's latency histogram. An exception marks the span and goes on (the
    node makes it an error record)."""
    on, recorder = _on, _recorder.get()
    if on is None and recorder is None:
        return await agent.run(subtask)
    name = agent.name
    token = _agent.set(name)
    start = time.perf_counter()
    try:
        if on is None:
            return await agent.run(subtask)
        from opentelemetry.trace import SpanKind

        with on.tracer.start_as_current_span(
            f"invoke_agent {name}",
            kind=SpanKind.INTERNAL,
            attributes={
                "gen_ai.operation.name": "invoke_agent",
                "gen_ai.agent.name": name,
                "anabranch.task.id": subtask.task_id,
                "anabranch.chunk": subtask.chunk,
            },
            record_exception=False,
            set_status_on_exception=False,
        ) as span:
            try:
                return await agent.run(subtask)
            except BaseException as exc:
                _failed(span, _error_type(exc))
                raise
    finally:
        _agent.reset(token)
        if recorder is not None:
            recorder.agent_finished(name, time.perf_counter() - start)


# -- a tool call --------------------------------------------------------------------------------


class ToolSpan:
    """What a tool call tells its span: its result, or the error the model was told of."""

    __slots__ = ("_span", "error")

    def __init__(self, span: Any) -> None:
        self._span = span
        self.error: str | None = None

    def result(self, value: object) -> None:
        """The tool's result (on the span only when content is on, redacted)."""
        if self._span is not None and _on is not None and _on.include_content:
            self._span.set_attribute("gen_ai.tool.call.result", _content(value))

    def failed(self, error_type: str) -> None:
        """The call failed (bad arguments, a raise, a timeout): the model reads an error."""
        self.error = error_type


@contextmanager
def tool_span(
    tool: str, *, call_id: str | None = None, arguments: object = None, description: str = ""
) -> Iterator[ToolSpan]:
    """`execute_tool {tool}` around one tool call, for the tool loop to call:

        with tool_span(name, call_id=call.id, arguments=args) as span:
            try:
                value = await run_tool(...)
                span.result(value)
            except Exception as exc:
                span.failed(type(exc).__name__)
                ...

    `arguments` reach the span only when content is on. An exception out of the block marks the
    span failed too, and goes on."""
    on = _on
    if on is None:
        yield ToolSpan(None)
        return
    from opentelemetry.trace import SpanKind

    attributes: dict[str, Any] = {
        "gen_ai.operation.name": "execute_tool",
        "gen_ai.tool.name": tool,
        "gen_ai.tool.type": "function",
    }
    if call_id:
        attributes["gen_ai.tool.call.id"] = call_id
    if description:
        attributes["gen_ai.tool.description"] = description
    if on.include_content and arguments is not None:
        attributes["gen_ai.tool.call.arguments"] = _content(arguments)
    with on.tracer.start_as_current_span(
        f"execute_tool {tool}",
        kind=SpanKind.INTERNAL,
        attributes=attributes,
        record_exception=False,
        set_status_on_exception=False,
    ) as span:
        outcome = ToolSpan(span)
        try:
            yield outcome
        except BaseException as exc:
            _failed(span, _error_type(exc))
            raise
        if outcome.error is not None:
            _failed(span, outcome.error)


# -- an LLM call --------------------------------------------------------------------------------


class LLMCall:
    """One `Endpoint` call: its `chat` span, its measurements and its timeline entries.

    The endpoint enters it once it holds a slot, says `sending()` before each attempt and
    `failed(exc)` after each failed one, and `answered(...)` with what came back."""

    __slots__ = (
        "_attrs",
        "_limit",
        "_metric_attrs",
        "_on",
        "_params",
        "_recorder",
        "_span",
        "_start",
        "_token",
        "attempts",
        "failed_at",
        "failure",
        "finish_reason",
        "sent_at",
        "text",
        "tokens",
    )

    def __init__(
        self,
        on: Instrumentation | None,
        recorder: TimelineRecorder | None,
        base_url: str,
        limit: Callable[[], float],
        params: dict[str, Any],
    ) -> None:
        self._on, self._recorder, self._limit, self._params = on, recorder, limit, params
        self._span: Any = None
        self._token: Any = None
        self._attrs: dict[str, Any] = {}
        self._metric_attrs: dict[str, Any] = {}
        self.failure: tuple[str, int | None] | None = None
        self.failed_at = self.sent_at = self._start = 0.0
        self.tokens: tuple[int, int] | None = None
        self.text = ""
        self.finish_reason: str | None = None
        self.attempts = 0
        if on is not None:
            model = str(params.get("model", ""))
            url = urlsplit(base_url)
            port = url.port or (443 if url.scheme == "https" else 80)
            self._metric_attrs = {
                "gen_ai.operation.name": "chat",
                "gen_ai.provider.name": PROVIDER,
                "gen_ai.request.model": model,
                "server.address": url.hostname or "",
                "server.port": port,
            }
            if (agent := _agent.get()) is not None:
                self._metric_attrs["gen_ai.agent.name"] = agent
            attrs = dict(self._metric_attrs)
            if (max_tokens := params.get("max_tokens")) is not None:
                attrs["gen_ai.request.max_tokens"] = max_tokens
            if (temperature := params.get("temperature")) is not None:
                attrs["gen_ai.request.temperature"] = temperature
            if "response_format" in params:
                attrs["gen_ai.output.type"] = "json"
            if on.include_content:
                attrs["gen_ai.input.messages"] = _messages(params.get("messages", []))
            self._attrs = attrs

    def __enter__(self) -> LLMCall:
        self._start = time.perf_counter()
        if self._recorder is not None:
            self._recorder.call_started(self._limit())
        on = self._on
        if on is not None:
            from opentelemetry import context, trace
            from opentelemetry.trace import SpanKind

            model = self._metric_attrs["gen_ai.request.model"]
            self._span = on.tracer.start_span(
                f"chat {model}", kind=SpanKind.CLIENT, attributes=self._attrs
            )
            self._token = context.attach(trace.set_span_in_context(self._span))
            on.instruments.in_flight.add(1, self._metric_attrs)
            _call.set(self)
        return self

    def sending(self) -> None:
        """An attempt is about to be sent: after a failure, that is a retry (an event)."""
        self.attempts += 1
        self.sent_at = time.perf_counter()
        if self.failure is None:
            return
        error, status = self.failure
        self.failure = None
        if self._recorder is not None:
            self._recorder.retried()
        if self._span is not None:
            attributes: dict[str, Any] = {
                "error.type": error,
                "anabranch.attempt": self.attempts,
                "anabranch.retry.wait_s": self.sent_at - self.failed_at,
            }
            if status is not None:
                attributes["http.response.status_code"] = status
            self._span.add_event("retry", attributes)

    def failed(self, exc: BaseException) -> None:
        """An attempt failed (it may be retried)."""
        error = _error_type(exc)
        status = exc.status_code if isinstance(exc, openai.APIStatusError) else None
        self.failure, self.failed_at = (error, status), time.perf_counter()
        if self._recorder is not None:
            self._recorder.attempt_failed(error)
        if self._on is not None:
            attributes = {**self._metric_attrs, "error.type": error}
            self._on.instruments.failed_attempts.add(1, attributes)
            if status == 429:
                self._on.instruments.rate_limited.add(1, self._metric_attrs)

    def answered(self, answer: Answer) -> None:
        """What the call brought back, for its span and its measurements."""
        tokens = answer.tokens
        self.tokens = (tokens.prompt, tokens.completion) if tokens else None
        self.text, self.finish_reason = answer.text, answer.finish_reason

    def first_chunk(self) -> None:
        """A stream's first piece arrived (for time to first chunk)."""
        if self._on is not None:
            self._on.instruments.first_chunk.record(
                time.perf_counter() - self.sent_at, self._metric_attrs
            )

    def __exit__(self, kind: Any, exc: BaseException | None, tb: Any) -> None:
        seconds = time.perf_counter() - self._start
        error = None if exc is None else _error_type(exc)
        prompt, completion = self.tokens or (0, 0)
        if self._recorder is not None:
            self._recorder.call_ended(prompt, completion, error)
        on, span = self._on, self._span
        if on is None or span is None:
            return
        from opentelemetry import context

        _call.set(None)
        context.detach(self._token)
        on.instruments.in_flight.add(-1, self._metric_attrs)
        measured = self._metric_attrs
        span.set_attribute("anabranch.attempts", self.attempts)
        if error is not None:
            measured = {**measured, "error.type": error}
            _failed(span, error)
        else:
            if self.finish_reason:
                span.set_attribute("gen_ai.response.finish_reasons", [self.finish_reason])
            if self.tokens is not None:
                span.set_attribute("gen_ai.usage.input_tokens", prompt)
                span.set_attribute("gen_ai.usage.output_tokens", completion)
                on.instruments.tokens.record(prompt, {**measured, "gen_ai.token.type": "input"})
                on.instruments.tokens.record(
                    completion, {**measured, "gen_ai.token.type": "output"}
                )
            if on.include_content:
                span.set_attribute("gen_ai.output.messages", _answer(self.text, self.finish_reason))
        on.instruments.duration.record(seconds, measured)
        span.end()


class _Quiet:
    """The call when nothing listens: every method does nothing."""

    __slots__ = ()

    def __enter__(self) -> _Quiet:
        return self

    def __exit__(self, *exc: object) -> None:
        pass

    def sending(self) -> None:
        pass

    def failed(self, exc: BaseException) -> None:
        pass

    def answered(self, answer: Answer) -> None:
        pass


_QUIET = _Quiet()


def llm_call(base_url: str, limit: Callable[[], float], params: dict[str, Any]) -> LLMCall | _Quiet:
    """The telemetry of one endpoint call (`limit`: the endpoint's concurrency limit now)."""
    on, recorder = _on, _recorder.get()
    if on is None and recorder is None:
        return _QUIET
    return LLMCall(on, recorder, base_url, limit, params)


def first_chunk(on_text: Callable[[str], None]) -> Callable[[str], None]:
    """`on_text` that also measures the time to a stream's first piece (unchanged when off)."""
    if _on is None:
        return on_text
    seen = False

    def heard(text: str) -> None:
        nonlocal seen
        if not seen and (call := _call.get()) is not None:
            seen = True
            call.first_chunk()
        on_text(text)

    return heard


# -- helpers ------------------------------------------------------------------------------------


def _error_type(exc: BaseException) -> str:
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


def _failed(span: Any, error: str) -> None:
    from opentelemetry.trace import Status, StatusCode

    span.set_attribute("error.type", error)
    span.set_status(Status(StatusCode.ERROR, error))


def _content(value: object) -> str:
    text = value if isinstance(value, str) else orjson.dumps(value, default=str).decode()
    return redact(text)


def _messages(messages: list[dict[str, Any]]) -> str:
    """The conventions' input messages: role and text parts, as JSON, redacted."""
    out = [
        {
            "role": m.get("role", "user"),
            "parts": [{"type": "text", "content": str(m.get("content") or "")}],
        }
        for m in messages
    ]
    return redact(orjson.dumps(out).decode())


def _answer(text: str, finish: str | None) -> str:
    out = [
        {
            "role": "assistant",
            "parts": [{"type": "text", "content": text}],
            "finish_reason": finish or "stop",
        }
    ]
    return redact(orjson.dumps(out).decode())
