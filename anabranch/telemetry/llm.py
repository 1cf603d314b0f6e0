"""The endpoint's hook: one LLM call's `chat {model}` span, its metrics and its timeline.

`Endpoint._call` makes an `llm_call` once per call and enters it once the call holds its slot;
it says `sending()` before each attempt and `failed(exc)` after a failed one, so each retry is
an event `retry` on the span with the failure's `error.type`, HTTP status and the wait. With
telemetry off and no batch listening, `llm_call` hands back one shared object that does nothing.
"""

from __future__ import annotations

import contextvars
import functools
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

import openai
import orjson

from anabranch.redact import redact
from anabranch.telemetry.switch import (
    AGENT,
    PROVIDER,
    RECORDER,
    SWITCH,
    Instrumentation,
    error_type,
    mark_failed,
)
from anabranch.telemetry.timeline import TimelineRecorder

if TYPE_CHECKING:
    from anabranch.llm.transport import Answer

_CALL: contextvars.ContextVar[LLMCall | None] = contextvars.ContextVar(
    "anabranch_call", default=None
)
"""The call a stream's pieces belong to (for the time to the first one)."""


# -- an LLM call --------------------------------------------------------------------------------


class LLMCall:
    """One `Endpoint` call: its `chat` span, its measurements and its timeline entries.

    The endpoint enters it once it holds a slot, says `sending()` before each attempt and
    `failed(exc)` after each failed one, and `answered(...)` with what came back."""

    __slots__ = (
        "_attrs",
        "_call_token",
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
        self._call_token: Any = None
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
            self._metric_attrs = _measured(base_url, model, AGENT.get())
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
            self._call_token = _CALL.set(self)
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
        error = error_type(exc)
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
        error = None if exc is None else error_type(exc)
        prompt, completion = self.tokens or (0, 0)
        if self._recorder is not None:
            self._recorder.call_ended(prompt, completion, error)
        on, span = self._on, self._span
        if on is None or span is None:
            return
        from opentelemetry import context

        _CALL.reset(self._call_token)
        context.detach(self._token)
        on.instruments.in_flight.add(-1, self._metric_attrs)
        measured = self._metric_attrs
        span.set_attribute("anabranch.attempts", self.attempts)
        if error is not None:
            measured = {**measured, "error.type": error}
            mark_failed(span, error)
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
    on, recorder = SWITCH.on, RECORDER.get()
    if on is None and recorder is None:
        return _QUIET
    return LLMCall(on, recorder, base_url, limit, params)


def first_chunk(on_text: Callable[[str], None]) -> Callable[[str], None]:
    """`on_text` that also measures the time to a stream's first piece (unchanged when off)."""
    if SWITCH.on is None:
        return on_text
    seen = False

    def heard(text: str) -> None:
        nonlocal seen
        if not seen and (call := _CALL.get()) is not None:
            seen = True
            call.first_chunk()
        on_text(text)

    return heard


@functools.lru_cache(maxsize=1024)
def _measured(base_url: str, model: str, agent: str | None) -> dict[str, Any]:
    """The attributes every measurement of a call carries, made once per server, model and
    agent (never changed: callers copy it to add their own)."""
    url = urlsplit(base_url)
    attributes: dict[str, Any] = {
        "gen_ai.operation.name": "chat",
        "gen_ai.provider.name": PROVIDER,
        "gen_ai.request.model": model,
        "server.address": url.hostname or "",
        "server.port": url.port or (443 if url.scheme == "https" else 80),
    }
    if agent is not None:
        attributes["gen_ai.agent.name"] = agent
    return attributes


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
