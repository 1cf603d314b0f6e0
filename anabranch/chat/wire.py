"""The OpenAI chat-completions wire format as the server speaks it: the request it checks (a
malformed one is the client's 400, not a graph failure the client would retry), and the shapes
of its answers, chunks and errors."""

from __future__ import annotations

import json
from typing import Any, Literal

from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from anabranch.agents.deferred import ClientTools
from anabranch.chat.adapters import Message
from anabranch.chat.params import client_tools, problem, requested
from anabranch.errors import ChatGraphError
from anabranch.redact import redact
from anabranch.types import Usage

Progress = Literal["comments", "reasoning"]
"""Where a run's progress goes: SSE comments only (standard clients skip them), or also the
answer's `reasoning_content`, which chat UIs show as a collapsible thinking block."""

PROGRESS_HEADER = "x-anabranch-progress"
"""The header that asks for a request's progress as `reasoning` (or `comments`)."""

THREAD_HEADER = "x-thread-id"
"""The header that names a conversation's thread (the request's `user` field does too)."""

ROLES = frozenset({"system", "developer", "user", "assistant", "tool", "function"})
"""The message roles of OpenAI's chat API."""


class ChatMessage(BaseModel):
    """One message of the conversation: checked here, so that a malformed one is the client's
    400, not a graph failure the client would retry."""

    model_config = ConfigDict(extra="allow")

    role: str
    content: str | list[dict[str, Any]] | None = None

    @field_validator("role")
    @classmethod
    def _known_role(cls, role: str) -> str:
        if role not in ROLES:
            raise ValueError(f"unknown role {role!r}; use one of {', '.join(sorted(ROLES))}")
        return role

    @field_validator("content")
    @classmethod
    def _text_parts_are_text(
        cls, content: str | list[dict[str, Any]] | None
    ) -> str | list[dict[str, Any]] | None:
        for number, part in enumerate(content if isinstance(content, list) else []):
            if part.get("type", "text") == "text" and not isinstance(part.get("text"), str):
                raise ValueError(f"content part {number} is a text part without a string 'text'")
        return content


class ChatRequest(BaseModel):
    """OpenAI's chat request as a graph takes it. The sampling parameters and `response_format`
    are honoured or refused (chat/params.py); fields that ask nothing of the answer (`metadata`,
    `store`, `tool_choice` without tools...) are accepted, as OpenAI-compatible servers do."""

    model_config = ConfigDict(extra="allow")

    model: str
    messages: list[ChatMessage] = Field(min_length=1)
    stream: bool = False
    stream_options: dict[str, Any] | None = None
    user: str | None = None
    tools: list[dict[str, Any]] | None = None
    """Functions the client offers the model and runs itself, for a graph that takes them
    (`ChatGraph.takes_tools`); checked, with `tool_choice`, by `params.tools_problem`."""
    anabranch_progress: Progress | None = None
    """Where this request's progress goes (the `X-Anabranch-Progress` header says it too)."""

    @model_validator(mode="before")
    @classmethod
    def _nothing_unsupported(cls, data: Any) -> Any:
        if isinstance(data, dict) and (why := problem(data)):
            raise ValueError(why)
        return data

    def asked(self) -> dict[str, Any]:
        """The sampling parameters and response format set, as the graph's LLM calls take them."""
        return requested(self.model_dump(exclude_unset=True))

    def client_tools(self) -> ClientTools | None:
        """The client's tools, `tool_choice` and `parallel_tool_calls`, or None."""
        return client_tools(self.model_dump(exclude_unset=True))

    @model_validator(mode="after")
    def _has_user_message(self) -> ChatRequest:
        if not any(m.role == "user" for m in self.messages):
            raise ValueError("the conversation has no user message")
        return self

    def conversation(self) -> list[Message]:
        """The messages as the graphs take them: plain dicts, as the client sent them, each with
        a `content` (an assistant message of tool calls may come without one; LangChain's
        messages need it)."""
        return [{"content": None, **m.model_dump(exclude_unset=True)} for m in self.messages]


def error_body(exc: Exception) -> dict:
    """What the client hears of a failure: redacted, since the graph's errors quote servers."""
    if isinstance(exc, ChatGraphError):
        return {"message": redact(str(exc)), "type": "graph_error"}
    message = redact(f"the graph failed: {type(exc).__name__}: {exc}")
    return {"message": message, "type": "server_error"}


def usage_body(usage: Usage) -> dict:
    return {
        "prompt_tokens": usage.prompt_tokens,
        "completion_tokens": usage.completion_tokens,
        "total_tokens": usage.total_tokens,
    }


def fragments(text: str, size: int = 32) -> list[str]:
    """A tool call's arguments in the pieces a stream sends them in, as OpenAI streams them."""
    return [text[i : i + size] for i in range(0, len(text), size)]


def sse_data(payload: dict) -> str:
    return f"data: {json.dumps(payload)}\n\n"


def error_response(
    status: int, message: str, kind: str, headers: dict[str, str] | None = None
) -> JSONResponse:
    return JSONResponse(
        {"error": {"message": message, "type": kind, "code": status}}, status, headers=headers
    )
