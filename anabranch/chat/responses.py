"""OpenAI's Responses API (`POST /v1/responses`), which the OpenAI Agents SDK and other clients
use by default: the same graphs and runs as chat completions, in the Responses shapes.

The input is text or items (messages with `input_text` parts); `instructions` come first as a
system message. Streamed, a run is the Responses event sequence, each event with its
`sequence_number`: `response.created`, `response.in_progress`, `response.output_item.added`,
`response.content_part.added`, `response.output_text.delta`..., `response.output_text.done`,
`response.content_part.done`, `response.output_item.done`, then `response.completed` (or
`response.incomplete` when cut at `max_output_tokens`) with the whole output and its usage.

A stored response (`store`, the default) is a turn of a thread in the server's thread store: the
thread is written into the response's id, so `previous_response_id` continues it after a restart
too. It continues from the thread's latest turn, whichever of its responses is named.
"""

from __future__ import annotations

import json
import re
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from typing import Any, Protocol

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response
from pydantic import ValidationError

from anabranch.agents.deferred import ClientTools
from anabranch.chat.adapters import Message
from anabranch.chat.input_items import ResponsesRequest
from anabranch.chat.items import AnswerText, FinalAnswer, Shape
from anabranch.chat.progress import progress_line
from anabranch.chat.wire import PROGRESS_HEADER, Progress, error_body, error_response, fragments
from anabranch.errors import describe
from anabranch.events import BaseEvent
from anabranch.graphs.state import Graph
from anabranch.types import Usage

_ID = re.compile(r"resp_([0-9a-f]{32})[0-9a-f]{16}")
"""A response id: `resp_`, its thread's key, its own part."""


class ResponseRun:
    """One request's run in the Responses shapes; with `reasoning`, its progress also goes out
    as a reasoning item's summary (chat/progress.py), before the answer's items."""

    def __init__(
        self, request: ResponsesRequest, thread_key: str | None, *, reasoning: bool = False
    ) -> None:
        self.request = request
        own = uuid.uuid4().hex[:16]
        self.id = f"resp_{thread_key}{own}" if thread_key else f"resp_{uuid.uuid4().hex}{own}"
        self.message_id = f"msg_{uuid.uuid4().hex}"
        self.reasoning_id = f"rs_{uuid.uuid4().hex}"
        self.created = time.time()
        self.sequence = 0
        self.output: list[dict[str, Any]] = []
        """The output items finished so far, in order."""
        self.thoughts: list[str] | None = [] if reasoning else None
        """The progress lines of the reasoning item; None once it is closed (or not asked)."""

    def response(
        self, status: str, final: FinalAnswer | None = None, error: dict[str, Any] | None = None
    ) -> dict[str, Any]:
        asked, request = self.request.asked(), self.request
        return {
            "id": self.id,
            "object": "response",
            "created_at": self.created,
            "status": status,
            "model": request.model,
            "instructions": request.instructions,
            "previous_response_id": request.previous_response_id,
            "output": list(self.output),
            "parallel_tool_calls": request.parallel_tool_calls is not False,
            "tool_choice": request.tool_choice or "auto",
            "tools": request.tools or [],
            "temperature": asked.get("temperature"),
            "top_p": asked.get("top_p"),
            "max_output_tokens": asked.get("max_tokens"),
            "store": request.store,
            "text": {"format": {"type": "text"}},
            "error": error,
            "incomplete_details": _incomplete(status),
            "usage": _usage(final.usage) if final else None,
            "metadata": {},
        }

    def message(self, text: str, status: str) -> dict[str, Any]:
        content = [] if status == "in_progress" else [_part(text)]
        return {"id": self.message_id, "type": "message", "status": status,
                "role": "assistant", "content": content}  # fmt: skip

    def reasoning(self, text: str, status: str) -> dict[str, Any]:
        summary = [] if status == "in_progress" else [_summary(text)]
        return {"id": self.reasoning_id, "type": "reasoning", "status": status,
                "summary": summary}  # fmt: skip

    def _event(self, kind: str, **fields: Any) -> str:
        payload = {"type": kind, "sequence_number": self.sequence, **fields}
        self.sequence += 1
        return f"event: {kind}\ndata: {json.dumps(payload)}\n\n"

    def _think(self, event: BaseEvent) -> list[str]:
        """A progress event as a delta of the reasoning summary, opening it on the first."""
        if self.thoughts is None or not (line := progress_line(event)):
            return []
        at = {"item_id": self.reasoning_id, "output_index": len(self.output), "summary_index": 0}
        lines = [] if self.thoughts else [
            self._event("response.output_item.added", output_index=len(self.output),
                        item=self.reasoning("", "in_progress")),
            self._event("response.reasoning_summary_part.added", **at, part=_summary("")),
        ]  # fmt: skip
        self.thoughts.append(line)
        return [*lines, self._event("response.reasoning_summary_text.delta", **at, delta=line)]

    def _stop_thinking(self) -> list[str]:
        """Close the reasoning item, if one is open: the answer's items come after it."""
        thoughts, self.thoughts = self.thoughts, None
        if not thoughts:
            return []
        text = "".join(thoughts)
        at = {"item_id": self.reasoning_id, "output_index": len(self.output), "summary_index": 0}
        self.output.append(self.reasoning(text, "completed"))
        return [
            self._event("response.reasoning_summary_text.done", **at, text=text),
            self._event("response.reasoning_summary_part.done", **at, part=_summary(text)),
            self._event("response.output_item.done", output_index=at["output_index"],
                        item=self.output[-1]),
        ]  # fmt: skip

    async def sse(self, events: AsyncIterator[Any]) -> AsyncIterator[str]:
        yield self._event("response.created", response=self.response("in_progress"))
        yield self._event("response.in_progress", response=self.response("in_progress"))
        streamed: list[str] = []
        at: dict[str, Any] = {}
        final = None
        try:
            async for item in events:
                if isinstance(item, BaseEvent):
                    yield f": anabranch {item.model_dump_json()}\n\n"
                    for line in self._think(item):
                        yield line
                    continue
                if isinstance(item, FinalAnswer):
                    final = item
                    if streamed or (item.tool_calls and not item.text):
                        continue
                    item = AnswerText(item.text)  # a graph that only knows it at the end
                if isinstance(item, AnswerText):
                    if not streamed:  # the message opens with its first words
                        for line in self._stop_thinking():
                            yield line
                        at = {"item_id": self.message_id, "output_index": len(self.output),
                              "content_index": 0}  # fmt: skip
                        yield self._event("response.output_item.added", output_index=len(
                            self.output), item=self.message("", "in_progress"))  # fmt: skip
                        yield self._event("response.content_part.added", **at, part=_part(""))
                    streamed.append(item.text)
                    yield self._event("response.output_text.delta", **at, delta=item.text,
                                      logprobs=[])  # fmt: skip
        except Exception as exc:  # noqa: BLE001 - the client must hear why its stream ended
            failure = {"code": "server_error", "message": error_body(exc)["message"]}
            yield self._event("response.failed", response=self.response("failed", error=failure))
            return
        if final is None:
            failure = {"code": "server_error", "message": "the graph ended without an answer"}
            yield self._event("response.failed", response=self.response("failed", error=failure))
            return
        for line in self._stop_thinking():
            yield line
        if streamed:
            text = "".join(streamed)
            yield self._event("response.output_text.done", **at, text=text, logprobs=[])
            yield self._event("response.content_part.done", **at, part=_part(text))
            self.output.append(self.message(text, "completed"))
            yield self._event("response.output_item.done", output_index=at["output_index"],
                              item=self.output[-1])  # fmt: skip
        for call in _function_items(final.tool_calls):
            index = len(self.output)
            yield self._event(
                "response.output_item.added",
                output_index=index,
                item={**call, "arguments": "", "status": "in_progress"},
            )
            at_call = {"item_id": call["id"], "output_index": index}
            for piece in fragments(call["arguments"]):
                yield self._event("response.function_call_arguments.delta", **at_call, delta=piece)
            yield self._event(
                "response.function_call_arguments.done",
                **at_call,
                name=call["name"],
                arguments=call["arguments"],
            )
            self.output.append(call)
            yield self._event("response.output_item.done", output_index=index, item=call)
        yield self._event(f"response.{_status(final)}", response=self.response(_status(final),
                                                                              final))  # fmt: skip

    async def complete(self, events: AsyncIterator[Any]) -> JSONResponse:
        final = None
        thoughts: list[str] = []
        try:
            async for item in events:
                if isinstance(item, FinalAnswer):
                    final = item
                elif isinstance(item, BaseEvent) and self.thoughts is not None:
                    thoughts.append(progress_line(item))
        except Exception as exc:  # noqa: BLE001 - an error response, never a dropped connection
            body = error_body(exc)
            code = 502 if body["type"] == "graph_error" else 500
            return error_response(code, body["message"], body["type"])
        if final is None:
            return error_response(500, "the graph ended without an answer", "server_error")
        if "".join(thoughts):
            self.output.append(self.reasoning("".join(thoughts), "completed"))
        if final.text or not final.tool_calls:
            self.output.append(self.message(final.text, "completed"))
        self.output += _function_items(final.tool_calls)
        return JSONResponse(self.response(_status(final), final))


def _status(final: FinalAnswer) -> str:
    return "incomplete" if final.finish_reason == "length" else "completed"


def _summary(text: str) -> dict[str, str]:
    return {"type": "summary_text", "text": text}


def _function_items(tool_calls: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """Chat `tool_calls` entries as the Responses API's `function_call` output items."""
    return [{"id": f"fc_{uuid.uuid4().hex}", "type": "function_call", "call_id": c["id"],
             "name": c["function"]["name"], "arguments": c["function"]["arguments"],
             "status": "completed"} for c in tool_calls]  # fmt: skip


def _incomplete(status: str) -> dict[str, str] | None:
    return {"reason": "max_output_tokens"} if status == "incomplete" else None


def _part(text: str) -> dict[str, Any]:
    return {"type": "output_text", "text": text, "annotations": [], "logprobs": []}


def _usage(usage: Usage) -> dict[str, Any]:
    return {
        "input_tokens": usage.prompt_tokens,
        "input_tokens_details": {"cached_tokens": 0, "cache_write_tokens": 0},
        "output_tokens": usage.completion_tokens,
        "output_tokens_details": {"reasoning_tokens": 0},
        "total_tokens": usage.total_tokens,
    }


class Launch(Protocol):
    """The app's way to run a graph and answer in a shape (`create_app`'s `launch`)."""

    def __call__(
        self, request: Request, model: str, shape: Shape, messages: list[Message],
        asked: dict[str, Any], *, thread: str | None, stream: bool,
        client: ClientTools | None = None,
    ) -> Awaitable[Response]: ...  # fmt: skip


def add_responses_route(
    app: FastAPI,
    launch: Launch,
    unknown: Callable[[str], Response | None],
    threaded: Callable[[str], Awaitable[Graph]],
    progress: Progress = "comments",
) -> None:
    """Serve `POST /v1/responses` on `app`, running graphs as `launch` does for chat; progress
    goes out as a reasoning summary when `progress` or the request asks for `reasoning`."""

    @app.post("/v1/responses")
    async def responses(request: Request) -> Response:
        try:
            body = ResponsesRequest.model_validate_json(await request.body())
            messages = body.messages()
        except ValidationError as exc:
            return error_response(400, f"invalid request: {describe(exc)}", "invalid_request_error")
        if missing := unknown(body.model):
            return missing
        if not any(m["role"] in ("user", "tool") for m in messages):
            return error_response(400, "invalid request: the input has no user message",
                                  "invalid_request_error")  # fmt: skip
        key = uuid.uuid4().hex if body.store else None
        if body.previous_response_id:
            found = _ID.fullmatch(body.previous_response_id)
            key = found.group(1) if found else None
            if key is None or not await _stored(await threaded(body.model), key):
                return error_response(404, f"previous response {body.previous_response_id!r} "
                                      "not found", "invalid_request_error")  # fmt: skip
        wanted = request.headers.get(PROGRESS_HEADER) or body.anabranch_progress
        run = ResponseRun(body, key, reasoning=(wanted or progress) == "reasoning")
        return await launch(request, body.model, run, messages, body.asked(),
                            thread=_thread(key) if key else None, stream=body.stream,
                            client=body.client_tools())  # fmt: skip


def _thread(key: str) -> str:
    """The thread a response's key names in the thread store."""
    return f"responses-{key}"


async def _stored(graph: Graph, key: str) -> bool:
    snapshot = await graph.aget_state({"configurable": {"thread_id": _thread(key)}})
    return bool(snapshot.values)
