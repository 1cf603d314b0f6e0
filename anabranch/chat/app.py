"""Any graph served as an OpenAI-compatible chat model, so any OpenAI client or chat UI can use it.

`POST /v1/chat/completions` with `model` set to a graph's name runs the graph, plain or streamed as
server-sent events in OpenAI's chunk format. While a graph runs, progress (an agent finished, a step
started, token usage) goes out as SSE comment lines (`: anabranch {...}`), which every standard SSE
client skips; non-streamed answers carry it in an extra `anabranch` field, which clients ignore.

A thread id (the `X-Thread-Id` header, or the request's `user` field) keeps the conversation in a
LangGraph checkpointer, a SQLite file by default, so the server remembers earlier turns.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Annotated, Any, TypedDict

import aiosqlite
from fastapi import FastAPI, Request
from fastapi.responses import Response
from langchain_core.runnables import RunnableConfig
from langgraph.checkpoint.sqlite.aio import AsyncSqliteSaver
from langgraph.config import get_config
from langgraph.graph import END, START, StateGraph
from langgraph.runtime import Runtime
from pydantic import SecretStr, ValidationError

from anabranch.agents.deferred import CLIENT_TOOLS, ClientTools
from anabranch.chat.adapters import STREAM_MODES, ChatGraph, Message
from anabranch.chat.completions import Completions
from anabranch.chat.guard import Guard
from anabranch.chat.items import AnswerText, FinalAnswer, Shape
from anabranch.chat.params import check_answer, refusal
from anabranch.chat.responses import add_responses_route
from anabranch.chat.slots import RunSlots, SlotStream, releasing
from anabranch.chat.wire import (
    PROGRESS_HEADER,
    THREAD_HEADER,
    ChatRequest,
    Progress,
    error_response,
)
from anabranch.errors import ConfigError, describe
from anabranch.graphs.state import SAMPLING, Graph, requested_sampling
from anabranch.redact import register_secret
from anabranch.telemetry.served import traced_request


@dataclass(slots=True)
class RunHandle:
    """The tasks running one request's graph, so that a client who leaves can stop them.

    Cancelling the consumer of `astream` does not reliably reach the nodes under a server
    (seen here under uvicorn: the node kept waiting on its LLM), so the node registers its own
    task and the request cancels it directly.
    """

    tasks: set[asyncio.Task] = field(default_factory=set)

    def cancel(self) -> None:
        for task in self.tasks:
            task.cancel()


class ConversationState(TypedDict):
    messages: Annotated[list[Message], lambda old, new: [*old, *new]]


def conversation_graph(chat: ChatGraph, checkpointer: Any = None) -> Graph:
    """Wrap a chat graph so that a checkpointer keeps the conversation, turn after turn.

    The node runs the graph on the whole conversation and re-emits what it streams as custom
    stream items: answer text, progress events, and finally the whole answer with its usage.
    """

    async def respond(state: ConversationState, runtime: Runtime[RunHandle]) -> dict[str, Any]:
        task = asyncio.current_task()
        if runtime.context is not None and task is not None:
            runtime.context.tasks.add(task)
        write = runtime.stream_writer
        turn = chat.start(state["messages"])
        # The graph runs as this node's subgraph: it inherits the run's configuration, so its
        # nodes find the request's sampling there (`requested_sampling`).
        async for mode, chunk in chat.graph.astream(turn.input, stream_mode=STREAM_MODES):
            delta, events = turn.feed(mode, chunk)
            if delta:
                write(AnswerText(delta))
            for event in events:
                write(event)
        text = turn.answer()
        calls = tuple(getattr(turn, "tool_calls", None) or ())  # the client's tools to run
        if calls:
            write(FinalAnswer(text, turn.usage, "tool_calls", calls))
            return {"messages": [{"role": "assistant", "content": text or None,
                                  "tool_calls": list(calls)}]}  # fmt: skip
        check_answer(text, requested_sampling(get_config()))
        # A Turn written before `finish_reason` joined the protocol ends as it did then.
        write(FinalAnswer(text, turn.usage, getattr(turn, "finish_reason", "stop")))
        return {"messages": [{"role": "assistant", "content": text}]}

    builder = StateGraph(ConversationState, context_schema=RunHandle)
    builder.add_node("respond", respond)
    builder.add_edge(START, "respond")
    builder.add_edge("respond", END)
    return builder.compile(checkpointer=checkpointer)


def create_app(
    graphs: Sequence[ChatGraph] | Mapping[str, ChatGraph],
    *,
    api_token: SecretStr | str | None = None,
    threads_db: str = "anabranch-threads.sqlite",
    max_body_bytes: int = 1 << 20,
    max_concurrent_runs: int = 8,
    progress: Progress = "comments",
) -> ChatApp:
    """An ASGI app serving `graphs` by name; mount it in an existing backend or run it with
    uvicorn. `threads_db` is the SQLite file behind conversations (":memory:" keeps none);
    `progress="reasoning"` also sends every request's progress as `reasoning_content` (a request
    can ask for it itself, with the `X-Anabranch-Progress` header or `anabranch_progress`)."""
    chats = dict(graphs) if isinstance(graphs, Mapping) else {g.name: g for g in graphs}
    token = SecretStr(api_token) if isinstance(api_token, str) else api_token
    if token is not None:
        if not token.get_secret_value().strip():
            raise ConfigError("api_token is empty: pass None to serve without a token")
        register_secret(token.get_secret_value())
    runs = RunSlots(max_concurrent_runs)
    stateless = {name: conversation_graph(chat) for name, chat in chats.items()}
    stateful: dict[str, Any] = {}
    opening = asyncio.Lock()
    connection: list[aiosqlite.Connection] = []

    async def threaded(name: str) -> Graph:
        """The checkpointed graph, opening the SQLite file on first use: a mounted sub-app gets
        no lifespan events, so this cannot wait for start-up."""
        async with opening:
            if not stateful:
                connection.append(await aiosqlite.connect(threads_db))
                saver = AsyncSqliteSaver(connection[0])
                stateful.update({n: conversation_graph(c, saver) for n, c in chats.items()})
        return stateful[name]

    async def aclose() -> None:
        async with opening:
            while connection:
                await connection.pop().close()
            stateful.clear()

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        yield
        await aclose()

    app = ChatApp(title="anabranch", lifespan=lifespan)
    app.closer = aclose

    app.add_middleware(Guard, token=token, max_body_bytes=max_body_bytes)

    @app.get("/v1/models")
    async def models() -> dict[str, Any]:
        return {
            "object": "list",
            "data": [
                {"id": n, "object": "model", "owned_by": "anabranch", "description": c.description}
                for n, c in chats.items()
            ],
        }

    async def launch(
        request: Request,
        model: str,
        shape: Shape,
        messages: list[Message],
        asked: dict[str, Any],
        *,
        thread: str | None,
        stream: bool,
        client: ClientTools | None = None,
    ) -> Response:
        """Run `model` and answer in `shape`: on `thread`, whose stored turns come before
        `messages`, or, without one, on `messages` alone; `client`: the client's tools."""
        chat = chats[model]
        why = refusal(asked, model, getattr(chat, "honours", frozenset()))
        if why is None and not getattr(chat, "takes_tools", False):
            why = _tools_refusal(model, client, messages, chats)
        if why:
            return error_response(400, why, "invalid_request_error")
        slot = runs.take()  # taken here, at once: two requests cannot both pass a check
        if slot is None:
            return error_response(429, f"all {max_concurrent_runs} runs are busy; retry shortly",
                          "rate_limit_exceeded", headers={"Retry-After": "1"})  # fmt: skip
        try:
            config: RunnableConfig = {"configurable": {SAMPLING: asked, CLIENT_TOOLS: client}}
            if thread:
                graph = await threaded(model)
                config["configurable"]["thread_id"] = thread
            else:
                graph = stateless[model]
            state = {"messages": messages}
            handle = RunHandle()
            events = traced_request(
                graph.astream(state, config, stream_mode="custom", context=handle),
                graph=model, headers=request.headers, response_id=getattr(shape, "id", None),
                thread=thread, stream=stream,
            )  # fmt: skip
            if stream:
                return SlotStream(
                    slot,
                    releasing(slot, _watched(request, shape.sse(events), handle)),
                    media_type="text/event-stream",
                    headers={"Cache-Control": "no-cache"},
                )
        except BaseException:
            slot.release()
            raise
        try:
            return await _until_disconnect(request, shape.complete(events), handle)
        finally:
            slot.release()

    def unknown(model: str) -> Response | None:
        if model in chats:
            return None
        return error_response(404, f"no graph named {model!r}; serving: {', '.join(chats)}",
                              "model_not_found")  # fmt: skip

    @app.post("/v1/chat/completions")
    async def completions(request: Request) -> Response:
        body = await request.body()  # the guard has bounded it, chunked or not
        try:
            chat_request = ChatRequest.model_validate_json(body)
        except ValidationError as exc:
            return error_response(400, f"invalid request: {describe(exc)}", "invalid_request_error")
        if missing := unknown(chat_request.model):
            return missing
        thread = request.headers.get(THREAD_HEADER) or chat_request.user
        wanted = request.headers.get(PROGRESS_HEADER) or chat_request.anabranch_progress
        shape = Completions(
            chat_request.model,
            thread,
            include_usage=bool((chat_request.stream_options or {}).get("include_usage")),
            reasoning=(wanted or progress) == "reasoning",
        )
        conversation = chat_request.conversation()
        return await launch(
            request,
            chat_request.model,
            shape,
            _new_turn(conversation) if thread else conversation,  # a thread knows the rest
            chat_request.asked(),
            thread=thread,
            stream=chat_request.stream,
            client=chat_request.client_tools(),
        )

    add_responses_route(app, launch, unknown, threaded, progress)

    return app


class ChatApp(FastAPI):
    """The served graphs' ASGI app. Run on its own, it closes its thread store at shutdown; a
    mounted app gets no lifespan events, so its parent calls `aclose()` at its own shutdown."""

    closer: Callable[[], Awaitable[None]] | None = None

    async def aclose(self) -> None:
        """Close the SQLite connection behind threads, if one was opened."""
        if self.closer is not None:
            await self.closer()


async def _watched(
    request: Request, stream: AsyncIterator[str], handle: RunHandle
) -> AsyncIterator[str]:
    """Relay `stream`, cancelling it (and the LLM calls under it) when the client goes away.

    A server only learns of a disconnect when it reads or writes; while a graph waits on an LLM
    nothing is written, so the client is polled meanwhile.
    """
    queue: asyncio.Queue[str | None] = asyncio.Queue()

    async def pump() -> None:
        try:
            async for item in stream:
                queue.put_nowait(item)
        finally:
            queue.put_nowait(None)

    task = asyncio.create_task(pump())
    try:
        while True:
            try:
                item = await asyncio.wait_for(queue.get(), timeout=0.25)
            except TimeoutError:
                if await request.is_disconnected():
                    return
                continue
            if item is None:
                break
            yield item
        await task  # re-raise what the stream raised, if anything
    finally:
        handle.cancel()
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


async def _until_disconnect(
    request: Request, work: Awaitable[Response], handle: RunHandle
) -> Response:
    """Run `work`, cancelling it (and the LLM calls under it) if the client goes away."""
    task = asyncio.ensure_future(work)
    while not task.done():
        await asyncio.wait({task}, timeout=0.25)
        if not task.done() and await request.is_disconnected():
            handle.cancel()
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
            return error_response(499, "client closed the request", "client_closed")
    return task.result()


def _new_turn(messages: list[Message]) -> list[Message]:
    """What a thread does not know yet: the tool results that end the conversation (answers
    to its last turn's calls), else the last user message."""
    tail = len(messages)
    while tail and messages[tail - 1].get("role") == "tool":
        tail -= 1
    if tail < len(messages):
        return messages[tail:]
    users = [m for m in messages if m.get("role") == "user"]
    return [users[-1] if users else messages[-1]]


def _tools_refusal(
    model: str, client: ClientTools | None, messages: list[Message], chats: Mapping[str, Any]
) -> str | None:
    """Why a graph that takes no tools cannot take this request (tools offered, or a
    conversation holding tool calls and results), naming the graphs that do; None if it can."""
    called = any(m.get("role") == "tool" or m.get("tool_calls") for m in messages)
    if client is None and not called:
        return None
    takers = [n for n, c in chats.items() if getattr(c, "takes_tools", False)]
    where = f" (graphs here that do: {', '.join(takers)})" if takers else ""
    return (f"the {model!r} graph cannot use tools{where}: send the request without `tools` "
            "and tool messages")  # fmt: skip
