"""The fault server's tool calls: a model that calls tools on a script.

A real model will not, on demand, call three tools at once, call one that does not exist, pass
arguments that do not validate, never stop calling, or write its call as text. A `ToolScript`
does: turn N of a conversation (its Nth assistant message) gets the script's Nth list of calls;
past the script, the answer quotes the tool results it was sent, so a test sees that they
reached the model. It applies to requests that offer `tools`, and to prompted requests (no
`response_format`, the tools described in a system message), which get the calls as text.
"""

from __future__ import annotations

import json
from typing import Any

from pydantic import BaseModel, Field

MARKER = "<tool_call>"
"""How a prompted request asks for calls (anabranch.agents.prompted_tools writes it)."""


class ScriptedCall(BaseModel):
    """One call the scripted model makes."""

    name: str
    arguments: dict[str, Any] | str = Field(default_factory=dict)
    """A JSON object, or raw text (to send arguments that are not JSON)."""


class ToolScript(BaseModel):
    """What the scripted model calls, turn by turn."""

    turns: list[list[ScriptedCall]] = Field(default_factory=list)
    """The calls of each turn, in order; past them the model answers."""
    repeat: bool = False
    """Make the last turn's calls forever: a model that never stops calling."""
    as_text: bool = False
    """Write the calls as `<tool_call>` blocks in the text, not as `tool_calls`."""
    refuse_tools: bool = False
    """Answer 400 to a request with `tools`, as servers without tool support do."""


def scripted_message(request: dict[str, Any], script: ToolScript) -> dict[str, Any] | None:
    """The assistant message for this request, or None when the script has nothing to say (the
    server answers as usual: a request neither offering tools nor prompted for them)."""
    messages = request.get("messages") or []
    prompted = (
        not request.get("tools")
        and not request.get("response_format")
        and any(
            m.get("role") == "system" and MARKER in str(m.get("content") or "") for m in messages
        )
    )
    if not request.get("tools") and not prompted:
        return None
    turn = sum(1 for m in messages if m.get("role") == "assistant")
    calls: list[ScriptedCall] | None = None
    if turn < len(script.turns):
        calls = script.turns[turn]
    elif script.repeat and script.turns:
        calls = script.turns[-1]
    if not calls:
        return {"role": "assistant", "content": _answer(messages)}
    raws = [c.arguments if isinstance(c.arguments, str) else json.dumps(c.arguments)
            for c in calls]  # fmt: skip
    if script.as_text or prompted:
        blocks = [f'{MARKER}{{"name": {json.dumps(c.name)}, "arguments": {raw}}}</tool_call>'
                  for c, raw in zip(calls, raws, strict=True)]  # fmt: skip
        return {"role": "assistant", "content": "\n".join(blocks)}
    return {
        "role": "assistant",
        "content": None,
        "tool_calls": [
            {
                "id": f"call_{turn}_{i}",
                "type": "function",
                "function": {"name": c.name, "arguments": raw},
            }
            for i, (c, raw) in enumerate(zip(calls, raws, strict=True))
        ],
    }


def refusal(request: dict[str, Any], script: ToolScript) -> dict[str, Any] | None:
    """The 400 body for a request with `tools` when the script refuses them."""
    if script.refuse_tools and request.get("tools"):
        return {"error": {"message": "tools are not supported by this server",
                          "type": "invalid_request_error"}}  # fmt: skip
    return None


def _answer(messages: list[dict[str, Any]]) -> str:
    """The final answer: the tool results since the last user message, quoted."""
    results = [
        str(m.get("content"))
        for m in messages
        if m.get("role") == "tool"
        or (m.get("role") == "user" and "<tool_response" in str(m.get("content")))
    ]
    return "tool results: " + " | ".join(results) if results else "no tool results"
