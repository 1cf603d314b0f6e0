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

The `chat` spans are made by `telemetry/llm.py`, the endpoint's hook; the switch and the
context they share live in `telemetry/switch.py`; a served request's workflow span is made by
`telemetry/served.py`.
"""

from __future__ import annotations

import functools
import time
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any, ParamSpec, Protocol, TypeVar

from anabranch.telemetry.switch import AGENT, RECORDER, SWITCH, content, error_type, mark_failed
from anabranch.telemetry.timeline import Timeline, TimelineRecorder

P = ParamSpec("P")
R = TypeVar("R")

if TYPE_CHECKING:
    from anabranch.agents.base import Answer as AgentAnswer
    from anabranch.types import Subtask, TaskResult


# -- the batch ----------------------------------------------------------------------------------


class BatchTelemetry:
    """A batch's workflow span and its timeline; the runner opens one per batch."""

    def __init__(self, name: str) -> None:
        self.recorder = TimelineRecorder()
        self._span: Any = None
        self._on = SWITCH.on
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
        token = RECORDER.set(self.recorder)
        if self._span is None:
            try:
                yield
            finally:
                RECORDER.reset(token)
            return
        from opentelemetry import trace

        try:
            with trace.use_span(self._span, end_on_exit=False):
                yield
        finally:
            RECORDER.reset(token)

    def delivered(self, result: TaskResult) -> None:
        """A task result left the batch: counted, and kept with its reasons when not ok."""
        reasons = [f"{e.kind}: {e.type}: {e.message}" for e in result.errors]
        self.recorder.task_delivered(result.task_id, result.status, reasons)
        if self._on is not None:
            self._on.instruments.tasks.add(1, {"anabranch.task.status": result.status})

    def end(self, error: BaseException | None = None) -> Timeline:
        if self._span is not None:
            if error is not None:
                mark_failed(self._span, error_type(error))
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
    on, recorder = SWITCH.on, RECORDER.get()
    if on is None and recorder is None:
        return await agent.run(subtask)
    name = agent.name
    start = time.perf_counter()
    try:
        with agent_span(name, {"anabranch.task.id": subtask.task_id,
                               "anabranch.chunk": subtask.chunk}):  # fmt: skip
            return await agent.run(subtask)
    finally:
        if recorder is not None:
            recorder.agent_finished(name, time.perf_counter() - start)


@contextmanager
def agent_span(name: str, attributes: dict[str, Any] | None = None) -> Iterator[None]:
    """`invoke_agent {name}` around an agent's work (its calls' metrics carry its name). An
    exception out of the block marks the span failed, and goes on."""
    token = AGENT.set(name)
    try:
        on = SWITCH.on
        if on is None:
            yield
            return
        from opentelemetry.trace import SpanKind

        with on.tracer.start_as_current_span(
            f"invoke_agent {name}",
            kind=SpanKind.INTERNAL,
            attributes={
                "gen_ai.operation.name": "invoke_agent",
                "gen_ai.agent.name": name,
                **(attributes or {}),
            },
            record_exception=False,
            set_status_on_exception=False,
        ) as span:
            try:
                yield
            except BaseException as exc:
                mark_failed(span, error_type(exc))
                raise
    finally:
        AGENT.reset(token)


def agent_node(
    name: str,
    node: Callable[P, Awaitable[R]],
    failure: Callable[[R], str | None] | None = None,
) -> Callable[P, Awaitable[R]]:
    """A graph node run inside `agent_span(name)`, for graphs whose nodes are not fan-out
    agents (the chain's steps, a served agent). The wrapper keeps the node's signature, which
    LangGraph reads to pass it the config or runtime. `failure` reads a node's update for the
    `error.type` of a failure it recorded instead of raising (a chain step's error record)."""

    @functools.wraps(node)
    async def run(*args: P.args, **kwargs: P.kwargs) -> R:
        with agent_span(name):
            update = await node(*args, **kwargs)
            if failure is not None and (why := failure(update)) and SWITCH.on is not None:
                from opentelemetry import trace

                mark_failed(trace.get_current_span(), why)
            return update

    return run


# -- a tool call --------------------------------------------------------------------------------


class ToolSpan:
    """What a tool call tells its span: its result, or the error the model was told of."""

    __slots__ = ("_span", "error")

    def __init__(self, span: Any) -> None:
        self._span = span
        self.error: str | None = None

    def result(self, value: object) -> None:
        """The tool's result (on the span only when content is on, redacted)."""
        if self._span is not None and SWITCH.on is not None and SWITCH.on.include_content:
            self._span.set_attribute("gen_ai.tool.call.result", content(value))

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
    on = SWITCH.on
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
        attributes["gen_ai.tool.call.arguments"] = content(arguments)
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
            mark_failed(span, error_type(exc))
            raise
        if outcome.error is not None:
            mark_failed(span, outcome.error)


# -- fallbacks ----------------------------------------------------------------------------------


def fell_back(what: str, to: str, reason: str) -> None:
    """`what` (the planner, an agent) did its work another way than asked: counted in the
    batch's timeline, so the run's trace and its end on stderr say it with its count, and an
    event `fallback` on the current span when telemetry is on."""
    if (recorder := RECORDER.get()) is not None:
        recorder.fell_back(what, to, reason)
    if SWITCH.on is not None:
        from opentelemetry import trace

        trace.get_current_span().add_event(
            "fallback", {"anabranch.fallback.from": what, "anabranch.fallback.to": to,
                         "anabranch.fallback.reason": reason},
        )  # fmt: skip
