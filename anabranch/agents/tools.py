"""Tools a model may call, and the loop that answers its calls.

A tool is a Python function, sync or async. Its JSON schema comes from its type hints and its
docstring (pydantic builds the arguments model; the docstring gives the tool's description and
each parameter's), so the function is the whole declaration.

The loop asks the model, runs the calls of its turn at the same time (a tool marked `sequential`
runs alone: a stateful tool must not race itself), and sends every result back, until the model
answers without a call or the bound on turns is reached. Every tool call gets its tool message,
always (docs/architecture.md, rule 13): a tool that raises, runs past its deadline, receives
arguments that do not validate, or does not exist answers with an error the model reads, so a
conversation never holds a call without its answer and nothing a tool does can crash the graph.

Where a server takes no `tools` (it answers 400 about them) the loop describes the tools in the
prompt instead and reads calls out of the text (agents/prompted_tools.py); the endpoint remembers
that, so only the first call pays for the refusal. Calls written as text by a model that was
offered native tools (small local models do) are read the same way.
"""

from __future__ import annotations

import asyncio
import inspect
import itertools
import json
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, get_type_hints

import docstring_parser
import pydantic_core
from pydantic import BaseModel, ConfigDict, Field, ValidationError, create_model

from anabranch.agents import deferred, prompted_tools
from anabranch.errors import ConfigError, LLMError, LLMStatusError, ToolLoopError, describe
from anabranch.events import BaseEvent, ModelTurn, ToolEnded, ToolStarted
from anabranch.llm.endpoint import Endpoint
from anabranch.telemetry.tracing import tool_span
from anabranch.types import SubtaskStatus, ToolCallRecord, Usage

DEFAULT_TOOL_TIMEOUT = 60.0
"""Seconds a tool call may take unless its tool or agent says otherwise."""

Emit = Callable[[BaseEvent], None]
"""Where the loop reports model turns and tool calls as they happen (a graph's stream)."""


@dataclass(frozen=True, slots=True)
class Tool:
    """A function the model may call, with what the model is told about it."""

    name: str
    """What the model calls it by (the function's name by default)."""
    description: str
    """What it is for, as the model reads it (the docstring by default)."""
    parameters: dict[str, Any]
    """The JSON schema of its arguments (an object's)."""
    function: Callable[..., Any]
    """Called with the arguments as keywords; sync functions run on a thread."""
    arguments: type[BaseModel] | None = None
    """Validates the arguments before the call; None passes them as they are (an MCP server
    validates its own)."""
    sequential: bool = False
    """Run alone, never beside another call of the same turn (a tool with state)."""
    timeout: float | None = None
    """Seconds one call may take; None: the agent's default."""

    @property
    def spec(self) -> dict[str, Any]:
        """The tool as a chat request's `tools` entry."""
        return {
            "type": "function",
            "function": {
                "name": self.name,
                "description": self.description,
                "parameters": self.parameters,
            },
        }

    async def invoke(self, arguments: dict[str, Any]) -> str:
        """Validate, call, and give the result as the text the model reads. Raises what the
        function raises, and pydantic's ValidationError for arguments that do not fit."""
        kwargs = arguments
        if self.arguments is not None:
            checked = self.arguments.model_validate(arguments)
            kwargs = {name: getattr(checked, name) for name in type(checked).model_fields}
        if inspect.iscoroutinefunction(self.function):
            value = await self.function(**kwargs)
        else:
            value = await asyncio.to_thread(self.function, **kwargs)
            if inspect.isawaitable(value):  # a callable object whose __call__ is async
                value = await value
        return as_text(value)


def tool(
    function: Callable[..., Any] | None = None,
    *,
    name: str | None = None,
    description: str | None = None,
    sequential: bool = False,
    timeout: float | None = None,
) -> Any:
    """Make a function a Tool: `@tool`, `@tool(sequential=True)`, or `tool(fn, timeout=5)`.

    The arguments' schema comes from the type hints (an unannotated parameter takes any JSON
    value), each parameter's description and the tool's own from the docstring (Google, reST or
    numpydoc style)."""

    def make(fn: Callable[..., Any]) -> Tool:
        doc = docstring_parser.parse(inspect.getdoc(fn) or "")
        about = {p.arg_name: p.description or "" for p in doc.params}
        hints = get_type_hints(fn)
        fields: dict[str, Any] = {}
        for param in inspect.signature(fn).parameters.values():
            if param.kind in (param.VAR_POSITIONAL, param.VAR_KEYWORD):
                continue
            default = ... if param.default is param.empty else param.default
            info = Field(default, description=about.get(param.name) or None)
            fields[param.name] = (hints.get(param.name, Any), info)
        tool_name = name or fn.__name__
        model = create_model(
            f"{tool_name}_arguments",
            __config__=ConfigDict(extra="forbid"),
            **fields,
        )
        summary = "\n\n".join(p for p in (doc.short_description, doc.long_description) if p)
        return Tool(
            name=tool_name,
            description=description or summary,
            parameters=model.model_json_schema(),
            function=fn,
            arguments=model,
            sequential=sequential,
            timeout=timeout,
        )

    return make if function is None else make(function)


def as_tool(candidate: Tool | Callable[..., Any]) -> Tool:
    """A Tool as it is; a plain function made into one."""
    return candidate if isinstance(candidate, Tool) else tool(candidate)


def as_text(value: Any) -> str:
    """A tool's return value as the model reads it: text as is, anything else as JSON."""
    if isinstance(value, str):
        return value
    if isinstance(value, BaseModel):
        return value.model_dump_json()
    return pydantic_core.to_json(value, fallback=str).decode()


@dataclass(slots=True)
class LoopResult:
    """What a tool loop ended with: the model's answer and everything it took to get it."""

    text: str
    """The model's last answer (the turn without a tool call)."""
    calls: list[ToolCallRecord]
    """Every tool call of every turn, in order."""
    usage: Usage = field(default_factory=Usage)
    attempts: int = 0
    """Requests sent in all, retries included."""
    client_calls: deferred.ClientCalls | None = None
    """The client's calls that ended the loop (agents/deferred.py); `text` is then empty."""


@dataclass(frozen=True, slots=True)
class _Call:
    """One call the model asked for, read from native `tool_calls` or from its text."""

    id: str
    name: str
    raw: str
    """The arguments as the model wrote them (JSON text)."""


async def run_tool_loop(
    endpoint: Endpoint,
    messages: list[dict[str, Any]],
    tools: Sequence[Tool],
    *,
    agent: str = "agent",
    max_steps: int = 8,
    default_timeout: float = DEFAULT_TOOL_TIMEOUT,
    temperature: float | None = None,
    max_tokens: int | None = None,
    emit: Emit | None = None,
    client: deferred.ClientTools | None = None,
) -> LoopResult:
    """Ask the model, answer its tool calls, and ask again, until it answers without a call,
    or calls one of the `client`'s tools (deferred: `LoopResult.client_calls`).

    `messages` is extended in place with the turns. Raises ToolLoopError when the model still
    calls tools on turn `max_steps`; an LLM call that fails raises its LLMError, carrying the
    usage and the tool calls of the whole loop."""
    by_name = {t.name: t for t in tools}
    specs = [t.spec for t in tools] + (client.offered if client else [])
    names = [*by_name, *(client.names if client else [])]
    result = LoopResult(text="", calls=[])
    say = emit or (lambda event: None)
    step = 0
    while True:
        step += 1
        native = endpoint.knowledge.now.tools
        sent = messages if native else prompted_tools.with_tools_prompt(messages, specs)
        try:
            completion = await endpoint.chat(
                sent,
                tools=specs if native else None,
                temperature=temperature,
                max_tokens=max_tokens,
                extra=client.extra() if client else None,
            )
        except LLMStatusError as exc:
            if native and prompted_tools.refuses_tools(exc):
                endpoint.knowledge.learn(tools=False)  # learnt once: every later call prompts
                result.usage += exc.usage
                result.attempts += exc.attempts
                step -= 1
                continue
            raise _with_loop(exc, result) from None
        except LLMError as exc:
            raise _with_loop(exc, result) from None
        result.usage += completion.usage
        result.attempts += completion.attempts
        calls = _native_calls(completion.tool_calls) or [
            _Call(c["id"], c["name"], c["arguments"])
            for c in prompted_tools.text_calls(completion.text, names, step)
        ]
        from_text = bool(calls) and not completion.tool_calls
        text = "" if from_text else completion.text
        say(ModelTurn(agent=agent, step=step, tool_calls=[c.name for c in calls], text=text))
        result.client_calls = deferred.ending(client, text, calls)
        if not calls or result.client_calls:
            result.text = "" if result.client_calls else completion.text
            return result
        if step >= max_steps:
            asked = ", ".join(c.name for c in calls)
            raise ToolLoopError(
                f"stopped after {step} model turns (max_steps={max_steps}): the model still "
                f"called tools ({asked})",
                attempts=result.attempts,
                usage=result.usage,
                tool_calls=result.calls,
            )
        records = await run_calls(calls, by_name, step, default_timeout, agent, say)
        result.calls += records
        messages += prompted_tools.turn_messages(
            text if native else completion.text,
            [(c.id, c.name, c.raw) for c in calls],
            records,
            native=native,
        )


def _native_calls(tool_calls: Sequence[dict[str, Any]]) -> list[_Call]:
    calls = []
    for i, call in enumerate(tool_calls):
        function = call.get("function") or {}
        raw = function.get("arguments")
        raw = raw if isinstance(raw, str) else json.dumps(raw or {})
        calls.append(_Call(str(call.get("id") or f"call-{i}"), str(function.get("name")), raw))
    return calls


def _with_loop(exc: LLMError, result: LoopResult) -> LLMError:
    """The failed call's error, charged with the whole loop's cost and carrying its calls."""
    exc.usage = result.usage + exc.usage
    exc.attempts = result.attempts + exc.attempts
    exc.tool_calls = result.calls  # type: ignore[attr-defined]  # read by the error record
    return exc


async def run_calls(
    calls: Sequence[_Call],
    tools: dict[str, Tool],
    step: int,
    default_timeout: float,
    agent: str = "agent",
    emit: Emit | None = None,
) -> list[ToolCallRecord]:
    """Run one turn's calls: all at once, except that a `sequential` tool runs alone (after the
    calls before it, before the calls after it). The records come back in the calls' order;
    the calls that start together are announced (`ToolStarted`) together."""
    say = emit or (lambda event: None)

    def started(call: _Call) -> dict[str, Any] | str:
        arguments = _arguments(call)
        say(ToolStarted(agent=agent, step=step, call_id=call.id, name=call.name,
                        arguments=arguments))  # fmt: skip
        return arguments

    async def one(call: _Call, arguments: dict[str, Any] | str) -> ToolCallRecord:
        return await _run_one(call, arguments, tools, step, default_timeout, agent, say)

    records: list[ToolCallRecord] = []
    alone = lambda c: (t := tools.get(c.name)) is not None and t.sequential  # noqa: E731
    for is_alone, group in itertools.groupby(calls, key=alone):
        batch = list(group)
        if is_alone:
            for call in batch:
                records.append(await one(call, started(call)))
        else:
            announced = [(c, started(c)) for c in batch]
            records += await asyncio.gather(*(one(c, a) for c, a in announced))
    return records


def _arguments(call: _Call) -> dict[str, Any] | str:
    """The call's arguments as a JSON object, or the raw text when they are not one."""
    try:
        parsed = json.loads(call.raw or "{}")
    except ValueError:
        return call.raw
    return parsed if isinstance(parsed, dict) else call.raw


async def _run_one(
    call: _Call,
    arguments: dict[str, Any] | str,
    tools: dict[str, Tool],
    step: int,
    default_timeout: float,
    agent: str,
    say: Emit,
) -> ToolCallRecord:
    """One call, answered whatever happens: its result, or the error the model will read. Its
    `execute_tool` span (when telemetry is on) says which."""
    found = tools.get(call.name)
    description = found.description if found is not None else ""
    with tool_span(call.name, call_id=call.id, arguments=arguments,
                   description=description) as span:  # fmt: skip
        start = time.perf_counter()
        result, error, kind = await _attempt(call, arguments, tools, found, default_timeout)
        if error is None:
            span.result(result)
        else:
            span.failed(kind)
    seconds = time.perf_counter() - start
    record = ToolCallRecord(
        agent=agent,
        step=step,
        name=call.name,
        arguments=arguments,
        result=result,
        error=error,
        seconds=seconds,
    )
    content = prompted_tools.tool_message_content(record)
    status: SubtaskStatus = "ok" if error is None else "error"
    say(ToolEnded(agent=agent, step=step, call_id=call.id, name=call.name, status=status,
                  content=content, seconds=seconds))  # fmt: skip
    return record


async def _attempt(
    call: _Call,
    arguments: dict[str, Any] | str,
    tools: dict[str, Tool],
    found: Tool | None,
    default_timeout: float,
) -> tuple[str | None, str | None, str]:
    """The call's (result, error for the model, error type): an unknown tool, arguments that are
    not an object or do not validate, a deadline passed, or whatever the tool raised."""
    if found is None:
        offered = ", ".join(sorted(tools)) or "none"
        return (
            None,
            f"there is no tool named {call.name!r} (the tools are: {offered})",
            "unknown_tool",
        )
    if not isinstance(arguments, dict):
        error = f"the arguments of {call.name} are not a JSON object: {call.raw[:200]!r}"
        return None, error, "invalid_arguments"
    limit = found.timeout if found.timeout is not None else default_timeout
    try:
        async with asyncio.timeout(limit) as deadline:
            return await found.invoke(arguments), None, ""
    except ValidationError as exc:
        return None, f"invalid arguments for {call.name}: {describe(exc)}", "invalid_arguments"
    except TimeoutError as exc:
        if deadline.expired():
            return None, f"{call.name} did not finish within its deadline of {limit:g} s", "timeout"
        return None, f"{call.name} raised {type(exc).__name__}: {exc}", type(exc).__name__
    except Exception as exc:  # noqa: BLE001 - a tool's failure is the model's to read
        return None, f"{call.name} raised {type(exc).__name__}: {exc}", type(exc).__name__


def unique_tools(tools: Sequence[Tool | Callable[..., Any]]) -> list[Tool]:
    """The tools as Tool objects, refusing two of one name (the model could not tell them apart)."""
    made = [as_tool(t) for t in tools]
    names = [t.name for t in made]
    if len(set(names)) != len(names):
        raise ConfigError(f"tool names must be unique, got {names}")
    return made
