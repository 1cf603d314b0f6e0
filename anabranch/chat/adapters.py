"""How a graph talks chat: conversation in, graph input; graph stream out, answer text.

A `ChatGraph` turns the conversation into its graph's input and reads the graph's stream: each
stream item may add text to the answer (which a chat client sees as content) and a progress event
(which standard clients never see). Built in: the fan-out analysis, the specialist chain, and any
graph whose state has OpenAI-style or LangChain `messages`.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from langgraph.graph.state import CompiledStateGraph

from anabranch.agents.specialists import Specialist
from anabranch.errors import ChatGraphError
from anabranch.graphs.chain import chain_result
from anabranch.types import Task, TaskResult, Usage

Message = dict[str, Any]
STREAM_MODES = ["custom", "updates"]


class Turn(Protocol):
    """One request's run of a graph."""

    input: dict[str, Any]
    usage: Usage

    def feed(self, mode: str, chunk: Any) -> tuple[str, list[dict[str, Any]]]:
        """Read one stream item: (answer text it adds, progress events it makes)."""

    def answer(self) -> str:
        """The whole answer; raises ChatGraphError if the run produced none."""


class ChatGraph(Protocol):
    name: str
    description: str
    graph: CompiledStateGraph

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
class AnalyzeTurn:
    input: dict[str, Any]
    usage: Usage = field(default_factory=Usage)
    result: TaskResult | None = None

    def feed(self, mode: str, chunk: Any) -> tuple[str, list[dict[str, Any]]]:
        events: list[dict[str, Any]] = []
        if mode != "updates":
            return "", events
        for node, update in chunk.items():
            update = update or {}
            if "result" in update:
                self.result = update["result"]
            if node == "planner" and "subtasks" in update:
                events.append(
                    {"event": "planned", "subtasks": [s.kind for s in update["subtasks"]]}
                )
            for r in update.get("results", []):  # the planner's own error records come here too
                self.usage += r.usage
                events.append({"event": "agent_done", "agent": r.kind, "chunk": r.chunk,
                               "status": r.status, "usage": r.usage.model_dump()})  # fmt: skip
        return "", events

    def answer(self) -> str:
        if self.result is None:
            raise ChatGraphError("the analysis produced no result")
        r = self.result
        lines = [f"Sentiment: {r.sentiment or 'unknown'}"]
        if r.sentiment_score is not None:
            lines[0] += f" ({r.sentiment_score:+.2f})"
        lines.append("Keywords: " + (", ".join(k.term for k in r.keywords[:8]) or "none"))
        lines.append(f"Tokens: {r.token_count} ({r.tokenizer or 'no tokenizer'})")
        lines += [f"Error in {e.kind}: {e.type}: {e.message}" for e in r.errors]
        return "\n".join(lines)


@dataclass
class AnalyzeChat:
    """The fan-out graph as a chat model: the last user message is the text to analyse."""

    graph: CompiledStateGraph
    name: str = "analyze"
    description: str = "Tokens, keywords and sentiment of the last user message."

    def start(self, conversation: Sequence[Message]) -> AnalyzeTurn:
        task = Task(id=f"chat-{uuid.uuid4().hex[:12]}", text=last_user_text(conversation))
        return AnalyzeTurn({"task": task})


# -- specialist chain ---------------------------------------------------------------------------


@dataclass
class ChainTurn:
    input: dict[str, Any]
    specialists: Sequence[Specialist]
    usage: Usage = field(default_factory=Usage)
    steps: list = field(default_factory=list)

    def feed(self, mode: str, chunk: Any) -> tuple[str, list[dict[str, Any]]]:
        if mode == "updates":
            for update in chunk.values():
                for step in (update or {}).get("steps", []):
                    self.steps.append(step)
                    self.usage += step.usage
            return "", []
        if chunk["event"] != "text":
            return "", [chunk]
        if chunk.get("step") == len(self.specialists):
            return chunk["text"], []  # the final specialist's words are the answer
        return "", []  # earlier steps' words would flood a progress channel

    def answer(self) -> str:
        result = chain_result({**self.input, "steps": self.steps}, self.specialists)
        if not result.complete:
            failed = next((s for s in result.steps if s.error), None)
            why = f"{failed.error.type}: {failed.error.message}" if failed else "incomplete"
            raise ChatGraphError(f"the chain stopped at step {len(result.steps)}: {why}")
        return result.steps[-1].output


@dataclass
class ChainChat:
    """The specialist chain as a chat model: earlier turns become context for the prompt."""

    graph: CompiledStateGraph
    specialists: Sequence[Specialist]
    name: str = "chain"
    description: str = "A chain of specialists refining one answer; the last one replies."

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

    def feed(self, mode: str, chunk: Any) -> tuple[str, list[dict[str, Any]]]:
        if mode != "updates":
            return "", [chunk if isinstance(chunk, dict) else {"event": "custom", "data": chunk}]
        events = []
        for node, update in chunk.items():
            messages = update.get("messages") if isinstance(update, dict) else None
            if messages:
                self.last = content_text(_message_content(messages[-1]))
                events.append({"event": "node_done", "node": node})
        return "", events

    def answer(self) -> str:
        if not self.last:
            raise ChatGraphError("the graph wrote no message")
        return self.last


def _message_content(message: Any) -> Any:
    return message.get("content") if isinstance(message, dict) else getattr(message, "content", "")


@dataclass
class MessagesChat:
    """A user's graph whose state has `messages` (OpenAI dicts or LangChain messages)."""

    graph: CompiledStateGraph
    name: str
    description: str = "A user-defined graph."

    def start(self, conversation: Sequence[Message]) -> MessagesTurn:
        return MessagesTurn({"messages": list(conversation)})
