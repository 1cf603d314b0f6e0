"""How a graph talks chat: conversation in, graph input; graph stream out, answer text.

A `ChatGraph` turns the conversation into its graph's input and reads the graph's stream: each
stream item may add text to the answer (which a chat client sees as content) and a progress event
(which standard clients never see). Built in: the fan-out analysis, the specialist chain, and any
graph whose state has OpenAI-style or LangChain `messages`.
"""

from __future__ import annotations

import importlib
import json
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol, cast

from langgraph.pregel import Pregel
from langgraph.types import StreamMode

from anabranch.agents.specialists import DEFAULT_CHAIN, Specialist
from anabranch.chat.params import HONOURABLE
from anabranch.errors import ChatGraphError, ConfigError
from anabranch.events import (
    AgentDone,
    BaseEvent,
    Custom,
    Event,
    NodeDone,
    Planned,
    TextDelta,
)
from anabranch.graphs.chain import build_chain_graph, chain_result
from anabranch.graphs.state import Graph
from anabranch.llm.endpoint import Endpoint
from anabranch.types import Task, TaskResult, Usage

Message = dict[str, Any]
STREAM_MODES: list[StreamMode] = ["custom", "updates"]


class Turn(Protocol):
    """One request's run of a graph."""

    input: dict[str, Any]
    usage: Usage

    def feed(self, mode: str, chunk: Any) -> tuple[str, list[Event]]:
        """Read one stream item: (answer text it adds, progress events it makes)."""

    def answer(self) -> str:
        """The whole answer; raises ChatGraphError if the run produced none."""

    @property
    def finish_reason(self) -> str:
        """Why the answer ended, once it has: `stop`, or `length` when it was cut at
        `max_tokens`."""


class ChatGraph(Protocol):
    name: str
    description: str
    graph: Graph
    honours: frozenset[str]
    """The request parameters the graph's LLM calls take from the run's configuration
    (`graphs.state.requested_sampling`; names from `chat.params.HONOURABLE`); a request that
    sets another is refused."""
    takes_tools: bool
    """Whether the graph takes the client's tools (`agents.deferred.client_tools(config)`) and
    may answer with calls of them (its last message's `tool_calls`); a request with `tools`
    to a graph that does not is refused."""

    def start(self, conversation: Sequence[Message]) -> Turn: ...


def last_user_text(conversation: Sequence[Message]) -> str:
    for message in reversed(conversation):
        if message.get("role") == "user":
            return content_text(message.get("content"))
    raise ChatGraphError("the conversation has no user message")


def content_text(content: Any) -> str:
    """OpenAI content is a string or a list of parts; only text parts matter here."""
    if isinstance(content, list):
        return "".join(p.get("text", "") for p in content if isinstance(p, dict))
    return str(content or "")


# -- fan-out analysis ---------------------------------------------------------------------------


@dataclass
class FanoutTurn:
    input: dict[str, Any]
    render: Callable[[TaskResult], str]
    usage: Usage = field(default_factory=Usage)
    result: TaskResult | None = None

    def feed(self, mode: str, chunk: Any) -> tuple[str, list[Event]]:
        events: list[Event] = []
        if mode != "updates":  # an agent's own events (a tool loop's turns and calls) pass
            return "", [cast(Event, chunk)] if isinstance(chunk, BaseEvent) else events
        for node, update in chunk.items():
            update = update or {}
            if "result" in update:
                self.result = update["result"]
            if node == "planner" and "subtasks" in update:
                events.append(Planned(subtasks=[s.kind for s in update["subtasks"]]))
            for r in update.get("results", []):  # the planner's own error records come here too
                self.usage += r.usage
                events.append(
                    AgentDone(agent=r.kind, chunk=r.chunk, status=r.status, usage=r.usage)
                )
        return "", events

    finish_reason = "stop"

    def answer(self) -> str:
        if self.result is None:
            raise ChatGraphError("the fan-out graph produced no result")
        return self.render(self.result)


def render_outputs(result: TaskResult) -> str:
    """Any fan-out graph's result as text: each agent's output as JSON, then the errors."""
    lines = [f"{name}: {json.dumps(output, ensure_ascii=False)}"
             for name, output in result.outputs.items()]  # fmt: skip
    lines += [f"Error in {e.kind}: {e.type}: {e.message}" for e in result.errors]
    return "\n".join(lines) or "no output"


@dataclass
class FanoutChat:
    """A fan-out graph as a chat model: the last user message is the task's text; the answer is
    the task's result, rendered by `render`."""

    graph: Graph
    name: str = "fanout"
    description: str = "A fan-out graph run on the last user message."
    render: Callable[[TaskResult], str] = render_outputs
    """How a task result becomes the answer's text."""
    honours: frozenset[str] = frozenset()
    """None by default: the answer is a rendering of the agents' structured outputs, which
    sampling parameters and stop sequences would only break."""
    takes_tools: bool = False
    """Its agents answer subtasks, not a conversation that could hold a client's tool calls."""

    def start(self, conversation: Sequence[Message]) -> FanoutTurn:
        task = Task(id=f"chat-{uuid.uuid4().hex[:12]}", text=last_user_text(conversation))
        return FanoutTurn({"task": task}, self.render)


# -- specialist chain ---------------------------------------------------------------------------


@dataclass
class ChainTurn:
    input: dict[str, Any]
    specialists: Sequence[Specialist]
    usage: Usage = field(default_factory=Usage)
    steps: list = field(default_factory=list)

    def feed(self, mode: str, chunk: Any) -> tuple[str, list[Event]]:
        if mode == "updates":
            for update in chunk.values():
                for step in (update or {}).get("steps", []):
                    self.steps.append(step)
                    self.usage += step.usage
            return "", []
        if not isinstance(chunk, TextDelta):
            return "", [chunk]
        if chunk.step == len(self.specialists):
            return chunk.text, []  # the final specialist's words are the answer
        return "", []  # earlier steps' words would flood a progress channel

    @property
    def finish_reason(self) -> str:
        return "length" if self.steps and self.steps[-1].truncated else "stop"

    def answer(self) -> str:
        result = chain_result({"prompt": self.input["prompt"], "steps": self.steps},
                              self.specialists)  # fmt: skip
        if not result.complete:
            failed = next((s.error for s in result.steps if s.error), None)
            why = f"{failed.type}: {failed.message}" if failed else "incomplete"
            raise ChatGraphError(f"the chain stopped at step {len(result.steps)}: {why}")
        return result.steps[-1].output


@dataclass
class ChainChat:
    """The specialist chain as a chat model: earlier turns become context for the prompt."""

    graph: Graph
    specialists: Sequence[Specialist]
    name: str = "chain"
    description: str = "A chain of specialists refining one answer; the last one replies."
    honours: frozenset[str] = HONOURABLE
    """All of them: every step takes max_tokens, temperature, top_p and seed; the last, whose
    words are the answer, also the stop sequences and the response format."""
    takes_tools: bool = False
    """Its steps refine one text; the agent graph (`assistant`) is the one that converses."""

    def start(self, conversation: Sequence[Message]) -> ChainTurn:
        question = last_user_text(conversation)
        earlier = [
            f"{m['role']}: {content_text(m.get('content'))}"
            for m in conversation[:-1]
            if m.get("role") in ("user", "assistant")
        ]
        prompt = question
        if earlier:
            prompt = "Conversation so far:\n" + "\n".join(earlier[-6:]) + f"\n\nNow: {question}"
        return ChainTurn({"prompt": prompt}, self.specialists)


# -- any messages graph -------------------------------------------------------------------------


@dataclass
class MessagesTurn:
    input: dict[str, Any]
    usage: Usage = field(default_factory=Usage)
    last: str = ""
    finish_reason: str = "stop"
    tool_calls: list[Message] = field(default_factory=list)
    """The last message's calls of the client's tools (chat `tool_calls` entries)."""

    def feed(self, mode: str, chunk: Any) -> tuple[str, list[Event]]:
        if mode != "updates":
            return "", [cast(Event, chunk) if isinstance(chunk, BaseEvent) else Custom(data=chunk)]
        events: list[Event] = []
        for node, update in chunk.items():
            if isinstance(update, dict) and isinstance(update.get("usage"), Usage):
                self.usage += update["usage"]  # a node that says what its calls cost
            messages = update.get("messages") if isinstance(update, dict) else None
            if messages:
                self.last = content_text(_message_content(messages[-1]))
                self.tool_calls = _tool_calls(messages[-1])
                self.finish_reason = _finish_reason(messages[-1])
                events.append(NodeDone(node=node))
        return "", events

    def answer(self) -> str:
        if not self.last and not self.tool_calls:
            raise ChatGraphError("the graph wrote no message")
        return self.last


def _message_content(message: Any) -> Any:
    """A message's content, in any of the shapes LangGraph accepts: an OpenAI dict, a LangChain
    message, or a `(role, content)` pair."""
    if isinstance(message, dict):
        return message.get("content")
    if isinstance(message, tuple | list) and len(message) == 2:
        return message[1]
    return getattr(message, "content", "")


def _tool_calls(message: Any) -> list[Message]:
    """A message's tool calls as chat `tool_calls` entries: an OpenAI dict's as they are, a
    LangChain message's (`name`, `args`, `id`) in OpenAI's shape."""
    if isinstance(message, dict):
        return list(message.get("tool_calls") or [])
    return [{"id": c.get("id") or f"call_{uuid.uuid4().hex[:24]}", "type": "function",
             "function": {"name": c["name"], "arguments": json.dumps(c.get("args") or {})}}
            for c in getattr(message, "tool_calls", None) or []]  # fmt: skip


def _finish_reason(message: Any) -> str:
    """`tool_calls` when it calls tools; `length` when a LangChain message says its model was
    cut at max_tokens."""
    if _tool_calls(message):
        return "tool_calls"
    metadata = getattr(message, "response_metadata", None) or {}
    return "length" if metadata.get("finish_reason") == "length" else "stop"


@dataclass
class MessagesChat:
    """A user's graph whose state has `messages` (OpenAI dicts or LangChain messages).

    `honours` names the request parameters its LLM calls take: a node reads them with
    `requested_sampling(config)` and passes them on; a graph served as `module:attr` honours
    none, so a request that sets one is refused until it is wrapped here with them named."""

    graph: Graph
    name: str
    description: str = "A user-defined graph."
    honours: frozenset[str] = frozenset()
    """The request parameters the graph's LLM calls take (names from `params.HONOURABLE`)."""
    takes_tools: bool = False
    """True for a graph whose LLM node offers the client's tools (`client_tools(config)`) and
    writes the model's calls of them as its last message's `tool_calls`."""

    def start(self, conversation: Sequence[Message]) -> MessagesTurn:
        return MessagesTurn({"messages": list(conversation)})


# -- built-in graphs by name --------------------------------------------------------------------


def chat_graph(
    name: str, endpoint: Endpoint | None = None, *, backend: str | None = None
) -> ChatGraph:
    """A graph to serve, by name: `analyze`, `chain`, `assistant` (the analysers as a model's
    tools), or `module:attr` naming a ChatGraph or a compiled graph whose state has `messages`.

    A user's graph runs on the whole conversation each turn and keeps nothing of its own in the
    server's thread store: the server checkpoints the conversation, not the graph's insides (a
    graph compiled with a checkpointer of its own keeps that one).
    """
    if name == "analyze":
        from anabranch.analysis import analysis_chat

        return analysis_chat(endpoint, backend=backend)
    if name == "chain":
        if endpoint is None:
            raise ConfigError("the chain graph needs an LLM (`llm`: local or a URL)")
        graph = build_chain_graph(DEFAULT_CHAIN, endpoint, checkpointer=False)
        return ChainChat(graph, DEFAULT_CHAIN)
    if name == "assistant":
        if endpoint is None:
            raise ConfigError("the assistant graph needs an LLM (`llm`: local or a URL)")
        from anabranch.analysis.tools import assistant_chat

        return assistant_chat(endpoint)
    module, _, attr = name.partition(":")
    if not attr:
        raise ConfigError(f"unknown graph {name!r}: use analyze, chain, assistant or module:attr")
    try:
        target = getattr(importlib.import_module(module), attr)
    except (ImportError, AttributeError) as exc:
        raise ConfigError(f"cannot load graph {name!r}: {exc}") from exc
    if hasattr(target, "start"):
        return cast(ChatGraph, target)
    if not isinstance(target, Pregel):
        raise ConfigError(f"{name!r} is neither a ChatGraph nor a compiled graph")
    if target.checkpointer is None:  # it would inherit the server's store as a subgraph
        target = target.copy({"checkpointer": False})
    return MessagesChat(target, name=attr)
