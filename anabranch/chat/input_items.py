"""A Responses request as the graphs take it: its input items as a chat conversation, its
parameters in the chat API's names (so that chat/params.py checks both APIs alike).

A `function_call` item is a call of the assistant message before it (or of a new one), a
`function_call_output` item a `tool` message answering it; reasoning items are not the graph's.
Function tools are flat here (`{"type": "function", "name": ...}`) and nested in chat.
"""

from __future__ import annotations

import json
from typing import Any

from pydantic import BaseModel, ConfigDict, model_validator

from anabranch.agents.deferred import ClientTools
from anabranch.chat.adapters import Message
from anabranch.chat.params import client_tools, problem, requested
from anabranch.chat.wire import ChatMessage, Progress

_TEXT_PARTS = {"input_text", "output_text", "text"}


class ResponsesRequest(BaseModel):
    """The Responses request as a graph takes it; sampling and the text format are honoured or
    refused as for chat completions (chat/params.py)."""

    model_config = ConfigDict(extra="allow")

    model: str
    input: str | list[dict[str, Any]]
    instructions: str | None = None
    stream: bool = False
    store: bool = True
    previous_response_id: str | None = None
    tools: list[dict[str, Any]] | None = None
    """Function tools the client runs itself (flat: name, description, parameters)."""
    tool_choice: str | dict[str, Any] | None = None
    parallel_tool_calls: bool | None = None
    anabranch_progress: Progress | None = None
    """Where this request's progress goes (the `X-Anabranch-Progress` header says it too):
    `reasoning` adds a reasoning item whose summary is the progress, as chat UIs show it."""

    @model_validator(mode="before")
    @classmethod
    def _nothing_unsupported(cls, data: Any) -> Any:
        if isinstance(data, dict) and (why := problem(_chat_names(data))):
            raise ValueError(why)
        return data

    def asked(self) -> dict[str, Any]:
        return requested(_chat_names(self.model_dump(exclude_unset=True)))

    def client_tools(self) -> ClientTools | None:
        """The client's function tools, in the chat API's shapes, or None."""
        return client_tools(_chat_names(self.model_dump(exclude_unset=True)))

    def messages(self) -> list[Message]:
        """The input as chat messages, `instructions` first: a `function_call` item is a call
        of the assistant message before it (or of a new one), a `function_call_output` a
        `tool` message; other items (reasoning) are not the graph's."""
        items = [{"role": "user", "content": self.input}] if isinstance(self.input, str) else [
            _chat_message(i) for i in self.input
        ]  # fmt: skip
        if self.instructions:
            items.insert(0, {"role": "system", "content": self.instructions})
        messages: list[Message] = []
        for item in items:
            if item is None:
                continue
            call = item.pop("call", None)
            if call is not None and messages and messages[-1]["role"] == "assistant":
                messages[-1].setdefault("tool_calls", []).append(call)
                continue
            message = ChatMessage.model_validate(item).model_dump(exclude_unset=True)
            messages.append({**message, "tool_calls": [call]} if call else message)
        return messages


def _chat_message(item: dict[str, Any]) -> dict[str, Any] | None:
    """One input item as a chat message (a function call's carried under `call`), or None."""
    kind = item.get("type", "message")
    if kind == "message":
        return {"role": item.get("role"), "content": _content(item)}
    if kind == "function_call":
        call = {
            "id": item.get("call_id"),
            "type": "function",
            "function": {"name": item.get("name"), "arguments": item.get("arguments")},
        }
        return {"role": "assistant", "content": None, "call": call}  # fmt: skip
    if kind == "function_call_output":
        output = item.get("output")
        text = output if isinstance(output, str) else json.dumps(output)
        if isinstance(output, list):  # parts: their text
            text = "".join(p.get("text", "") for p in output if isinstance(p, dict))
        return {"role": "tool", "tool_call_id": item.get("call_id"), "content": text}
    return None


def _chat_names(body: dict[str, Any]) -> dict[str, Any]:
    """A Responses body in chat's names and shapes: the text format as `response_format`, the
    flat function tools and a named `tool_choice` nested under `function`."""
    fields = ("name", "description", "parameters", "strict")
    if tools := body.get("tools"):
        body = {**body, "tools": [
            {"type": "function", "function": {k: t[k] for k in fields if k in t}}
            if isinstance(t, dict) and t.get("type") == "function" else t
            for t in tools
        ]}  # fmt: skip
    choice = body.get("tool_choice")
    if isinstance(choice, dict) and choice.get("type") == "function" and "name" in choice:
        body = {**body, "tool_choice": {"type": "function", "function": {"name": choice["name"]}}}
    fmt = (body.get("text") or {}).get("format")
    if not fmt:
        return body
    if fmt.get("type") == "json_schema":
        fields = ("name", "schema", "strict", "description")
        fmt = {"type": "json_schema", "json_schema": {k: fmt[k] for k in fields if k in fmt}}
    return {**body, "response_format": fmt}


def _content(item: dict[str, Any]) -> Any:
    """An item's content as chat content: its text parts as text parts, other parts as given."""
    content = item.get("content")
    if not isinstance(content, list):
        return content
    return [
        {"type": "text", "text": p.get("text")} if p.get("type") in _TEXT_PARTS else p
        for p in content
    ]
