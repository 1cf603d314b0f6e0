"""What one run of a served graph streams to the route that answers it: answer text as it is
written, progress events, and the whole answer at the end. The routes shape these into their
API's answers (chat/completions.py, chat/responses.py)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any, Protocol

from fastapi.responses import JSONResponse

from anabranch.types import Usage


@dataclass(frozen=True, slots=True)
class AnswerText:
    """Text of the answer, streamed to the client as content."""

    text: str


@dataclass(frozen=True, slots=True)
class FinalAnswer:
    """The whole answer and its cost, once the run ends."""

    text: str
    usage: Usage
    finish_reason: str = "stop"
    """`stop`; `length` when the answer was cut at `max_tokens`; `tool_calls` when it asks
    the client to run its tools."""
    tool_calls: tuple[dict[str, Any], ...] = ()
    """The client's tools to run, as chat `tool_calls` entries (id, type, function)."""


class Shape(Protocol):
    """How one API answers a run: streamed as server-sent events, or whole."""

    def sse(self, events: AsyncIterator[Any]) -> AsyncIterator[str]: ...

    async def complete(self, events: AsyncIterator[Any]) -> JSONResponse: ...
