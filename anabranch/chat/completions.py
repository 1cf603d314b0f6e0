"""The chat-completions API's answers: a run as OpenAI's chunks (streamed) or one completion.

Progress goes out as SSE comments (`: anabranch {...}`), which every standard client skips, and,
when asked (`reasoning=True`), also as `delta.reasoning_content`, which chat UIs show as the
model's thinking; a whole answer carries it in `message.reasoning_content` and in the extra
`anabranch` field, which clients ignore.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import AsyncIterator
from typing import Any

from fastapi.responses import JSONResponse

from anabranch.chat.items import AnswerText, FinalAnswer
from anabranch.chat.progress import progress_line
from anabranch.chat.wire import error_body, error_response, fragments, sse_data, usage_body
from anabranch.errors import ChatGraphError
from anabranch.events import BaseEvent, UsageTotal
from anabranch.types import Usage


class Completions:
    """One request's run as chat completions."""

    def __init__(
        self, model: str, thread: str | None, *, include_usage: bool, reasoning: bool
    ) -> None:
        self.model, self.thread = model, thread
        self.include_usage, self.reasoning = include_usage, reasoning
        self.id = f"chatcmpl-{uuid.uuid4().hex}"
        self.created = int(time.time())

    def _chunk(self, delta: dict, finish: str | None = None) -> dict:
        return {
            "id": self.id,
            "object": "chat.completion.chunk",
            "created": self.created,
            "model": self.model,
            "choices": [{"index": 0, "delta": delta, "finish_reason": finish}],
        }

    def _progress(self, event: BaseEvent) -> list[str]:
        lines = [f": anabranch {event.model_dump_json()}\n\n"]
        if self.reasoning and (text := progress_line(event)):
            lines.append(sse_data(self._chunk({"reasoning_content": text})))
        return lines

    async def sse(self, events: AsyncIterator[Any]) -> AsyncIterator[str]:
        yield sse_data(self._chunk({"role": "assistant", "content": ""}))
        streamed = False
        final = FinalAnswer("", Usage())
        try:
            async for item in events:
                if isinstance(item, AnswerText):
                    streamed = True
                    yield sse_data(self._chunk({"content": item.text}))
                elif isinstance(item, BaseEvent):
                    for line in self._progress(item):
                        yield line
                elif isinstance(item, FinalAnswer):
                    final = item
                    if not streamed and item.text:  # a graph that only knows it at the end
                        yield sse_data(self._chunk({"content": item.text}))
                    for index, call in enumerate(item.tool_calls):
                        for delta in _call_deltas(index, call):
                            yield sse_data(self._chunk({"tool_calls": [delta]}))
                    for line in self._progress(_total(item.usage)):
                        yield line
        except Exception as exc:  # noqa: BLE001 - the client must hear why its stream ended
            yield sse_data({"error": error_body(exc)})
            yield "data: [DONE]\n\n"
            return
        yield sse_data(self._chunk({}, final.finish_reason))
        if self.include_usage:
            yield sse_data({**self._chunk({}), "choices": [], "usage": usage_body(final.usage)})
        yield "data: [DONE]\n\n"

    async def complete(self, events: AsyncIterator[Any]) -> JSONResponse:
        progress: list[BaseEvent] = []
        answer = None
        try:
            async for item in events:
                if isinstance(item, BaseEvent):
                    progress.append(item)
                elif isinstance(item, FinalAnswer):
                    answer = item
        except Exception as exc:  # noqa: BLE001 - an error response, never a dropped connection
            body = error_body(exc)
            return error_response(502 if isinstance(exc, ChatGraphError) else 500, body["message"],
                          body["type"])  # fmt: skip
        if answer is None:
            return error_response(500, "the graph ended without an answer", "server_error")
        message: dict[str, Any] = {"role": "assistant", "content": answer.text}
        if answer.tool_calls:
            message.update(content=answer.text or None, tool_calls=list(answer.tool_calls))
        if self.reasoning:
            message["reasoning_content"] = "".join(map(progress_line, progress))
        return JSONResponse(
            {
                "id": self.id,
                "object": "chat.completion",
                "created": self.created,
                "model": self.model,
                "choices": [
                    {"index": 0, "message": message, "finish_reason": answer.finish_reason}
                ],
                "usage": usage_body(answer.usage),
                "anabranch": {
                    "thread_id": self.thread,
                    "events": [e.model_dump(mode="json") for e in progress],
                },
            }
        )


def _call_deltas(index: int, call: dict[str, Any]) -> list[dict[str, Any]]:
    """One tool call as OpenAI streams it: its index, id and name first (arguments empty),
    then its arguments in fragments."""
    function = call["function"]
    first = {"index": index, "id": call["id"], "type": "function",
             "function": {"name": function["name"], "arguments": ""}}  # fmt: skip
    rest = [{"index": index, "function": {"arguments": piece}}
            for piece in fragments(function["arguments"])]  # fmt: skip
    return [first, *rest]


def _total(usage: Usage) -> UsageTotal:
    return UsageTotal(prompt_tokens=usage.prompt_tokens, completion_tokens=usage.completion_tokens)
