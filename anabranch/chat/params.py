"""What a client asks of a run besides its conversation, honoured or refused, never ignored.

A request's sampling parameters (`max_tokens`, `temperature`, `top_p`, `stop`, `seed`) and its
`response_format` reach the graph's LLM calls through the run's configuration
(`graphs.state.requested_sampling`). Each chat graph says which of them it honours
(`ChatGraph.honours`); one it does not is the client's 400, as OpenAI answers a parameter a model
does not support, since a client that asked for 50 tokens or a JSON schema and got something
else would never know.

The client's `tools` (with `tool_choice` and `parallel_tool_calls`) are checked here too, and go
to a graph that takes them (`ChatGraph.takes_tools`) as a `ClientTools` (agents/deferred.py).
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from typing import Any

import jsonschema

from anabranch.agents.deferred import ClientTools
from anabranch.errors import ChatGraphError

SAMPLING_FIELDS = ("max_tokens", "temperature", "top_p", "stop", "seed")
"""The sampling parameters a graph may honour, as OpenAI's chat API names them."""

HONOURABLE = frozenset({*SAMPLING_FIELDS, "response_format"})
"""Everything `ChatGraph.honours` may name."""

UNSUPPORTED = ("frequency_penalty", "presence_penalty", "logit_bias", "logprobs", "top_logprobs")
"""Parameters no graph here honours: refused when set to anything but their neutral value."""


def problem(body: Mapping[str, Any]) -> str | None:
    """What no graph here can honour in a request (`n` over 1, `frequency_penalty`, a
    `response_format` that is not a JSON schema), or None. Asked by the request models'
    validators, so the answer is the client's 400."""
    if (n := body.get("n")) not in (None, 1):
        return f"n={n} is not supported: a graph gives one answer per request; use n=1"
    for name in UNSUPPORTED:
        if body.get(name) not in (None, 0, False, {}):
            return f"{name} is not supported by anabranch's graphs; leave it unset"
    if why := tools_problem(body):
        return why
    fmt = body.get("response_format")
    if not fmt or fmt.get("type") == "text":
        return None
    if fmt.get("type") != "json_schema" or "schema" not in (fmt.get("json_schema") or {}):
        return ("response_format: only {'type': 'json_schema', 'json_schema': {'name': ..., "
                "'schema': {...}}} (or 'text') is supported")  # fmt: skip
    try:
        jsonschema.Draft202012Validator.check_schema(fmt["json_schema"]["schema"])
    except jsonschema.SchemaError as exc:
        return f"response_format: not a JSON schema: {exc.message}"
    return None


def requested(body: Mapping[str, Any]) -> dict[str, Any]:
    """The request's parameters as the graph's LLM calls take them, in OpenAI's chat names:
    `max_completion_tokens` (or the Responses API's `max_output_tokens`) is `max_tokens`; a
    `stop` string is a list; `response_format: text` is no format. Only what was set."""
    asked: dict[str, Any] = {}
    for name in ("max_tokens", "max_completion_tokens", "max_output_tokens"):
        if body.get(name) is not None:
            asked["max_tokens"] = body[name]
    for name in ("temperature", "top_p", "seed"):
        if body.get(name) is not None:
            asked[name] = body[name]
    if stop := body.get("stop"):
        asked["stop"] = [stop] if isinstance(stop, str) else list(stop)
    fmt = body.get("response_format")
    if fmt and fmt.get("type") != "text":
        asked["response_format"] = fmt
    return asked


def refusal(asked: Mapping[str, Any], graph: str, honours: frozenset[str]) -> str | None:
    """Why `graph` cannot take `asked`, naming what it does honour; None when it can."""
    unknown = sorted(set(asked) - honours)
    if not unknown:
        return None
    can = ", ".join(sorted(honours)) or "none of them"
    return (f"{', '.join(unknown)} not supported by the {graph!r} graph (it honours: {can}); "
            "leave it unset")  # fmt: skip


_NAME = re.compile(r"[A-Za-z0-9_-]{1,64}")
"""A function's name, as OpenAI allows it."""

_CHOICES = ("auto", "none", "required")


def tools_problem(body: Mapping[str, Any]) -> str | None:
    """What is wrong with a request's `tools`, `tool_choice` and `parallel_tool_calls` (in the
    chat API's shapes), or None: only function tools, each named and with a JSON schema for its
    parameters, and a choice that names one of them."""
    tools = body.get("tools") or []
    if not isinstance(tools, list):
        return "tools must be a list of function tools"
    names = []
    for number, spec in enumerate(tools):
        kind = spec.get("type") if isinstance(spec, dict) else type(spec).__name__
        if kind != "function":
            return f"tools[{number}]: only function tools are supported, not {kind!r}"
        function = spec.get("function")
        if not isinstance(function, dict):
            return f"tools[{number}]: a function tool needs a `function` object (name, parameters)"
        name = function.get("name")
        if not isinstance(name, str) or not _NAME.fullmatch(name):
            return (
                f"tools[{number}]: a function needs a name of letters, digits, _ or - (64 at most)"
            )
        try:
            jsonschema.Draft202012Validator.check_schema(function.get("parameters") or {})
        except jsonschema.SchemaError as exc:
            return f"tools[{number}] ({name}): parameters are not a JSON schema: {exc.message}"
        names.append(name)
    if len(set(names)) != len(names):
        return f"tools: two functions share a name ({', '.join(names)})"
    if body.get("parallel_tool_calls") not in (None, True, False):
        return "parallel_tool_calls must be true or false"
    choice = body.get("tool_choice")
    if not tools or choice is None or choice in _CHOICES:
        return None  # a choice without tools asks nothing, as OpenAI-compatible servers take it
    function = choice.get("function") if isinstance(choice, dict) else None
    named = function.get("name") if isinstance(function, dict) else None
    if named in names:
        return None
    if named is not None:
        return f"tool_choice names {named!r}, which is not among the tools ({', '.join(names)})"
    return ("tool_choice must be 'auto', 'none', 'required' or {'type': 'function', "
            "'function': {'name': ...}}")  # fmt: skip


def client_tools(body: Mapping[str, Any]) -> ClientTools | None:
    """The request's tools as a run takes them (checked by `tools_problem`), or None."""
    if not body.get("tools"):
        return None
    return ClientTools(
        specs=tuple(body["tools"]),
        choice=body.get("tool_choice") or "auto",
        parallel=body.get("parallel_tool_calls") is not False,
    )


def check_answer(text: str, asked: Mapping[str, Any]) -> None:
    """An answer asked for in a JSON schema must be valid for it: a graph error otherwise (the
    client asked for a shape and must not get another)."""
    fmt = asked.get("response_format")
    if not fmt:
        return
    schema = fmt["json_schema"]["schema"]
    try:
        jsonschema.validate(json.loads(text), schema)
    except (ValueError, jsonschema.ValidationError) as exc:
        why = exc.message if isinstance(exc, jsonschema.ValidationError) else "not JSON"
        raise ChatGraphError(
            f"the answer does not match the response_format schema: {why}"
        ) from exc
