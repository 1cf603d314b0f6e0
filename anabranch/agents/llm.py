"""LLMAgent: an agent declared, not written: instructions, an output type, tools.

    summarizer = LLMAgent("summarize", endpoint, instructions="Summarize the text.",
                          output_type=Summary)

It is an agent like any other (a `name` and an async `run`), so a fan-out graph, the batch
runner and the chat server take it as they take a hand-written one. Every call goes through the
endpoint: retries, limits, adaptive concurrency and the cache apply. A pydantic `output_type` is
asked for as structured output and validated, the validation error fed back to the model for one
more try (`Endpoint.parse`); `str` asks for plain text (kept as a TextOutput). With `tools`, the
model may call them first (agents/tools.py): each call and its result is kept in the subtask's
result, and shown as it happens on the graph's custom stream (`ModelTurn`, `ToolStarted`,
`ToolEnded`).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from pydantic import BaseModel

from anabranch.agents.base import Answer, Part
from anabranch.agents.deferred import ClientTools
from anabranch.agents.tools import (
    DEFAULT_TOOL_TIMEOUT,
    Emit,
    Tool,
    run_tool_loop,
    unique_tools,
)
from anabranch.errors import ConfigError
from anabranch.llm.endpoint import Endpoint
from anabranch.llm.settings import Sampling
from anabranch.llm.structured import validate
from anabranch.types import Subtask, ToolCallRecord, Usage


class TextOutput(BaseModel):
    """The output of an agent whose `output_type` is `str`: the model's answer as it wrote it."""

    text: str


@dataclass
class LLMAgent:
    """An agent that asks a model, with instructions, an output type and tools."""

    name: str
    """The agent's name: its graph node and the subtask kind it serves."""
    endpoint: Endpoint
    """Where its calls go (retries, limits and the cache are the endpoint's)."""
    instructions: str | Callable[[Subtask], str] = ""
    """The system message, or a function of the subtask that writes it."""
    output_type: type[BaseModel] | type[str] = str
    """A pydantic model (asked for as structured output, validated), or `str` (plain text,
    kept as a TextOutput)."""
    tools: Sequence[Tool | Callable[..., Any]] = ()
    """Functions the model may call (plain functions are made Tools by `tool`)."""
    sampling: Sampling | None = None
    """Temperature and max_tokens for this agent; None: the endpoint's."""
    max_steps: int = 8
    """Model turns the tool loop may take; a model still calling tools on the last one ends the
    subtask with a ToolLoopError record."""
    tool_timeout: float = DEFAULT_TOOL_TIMEOUT
    """Seconds a tool call may take when its tool sets no deadline of its own."""
    merge: Callable[[Sequence[Part[Any]]], BaseModel] | None = None
    """How the outputs of a long text's chunks combine into one (None: one output per chunk)."""
    _tools: list[Tool] = field(init=False, repr=False)

    def __post_init__(self) -> None:
        if self.output_type is str:
            self.output_type = TextOutput
        if not (isinstance(self.output_type, type) and issubclass(self.output_type, BaseModel)):
            raise ConfigError(f"output_type must be str or a pydantic model, not "
                              f"{self.output_type!r}")  # fmt: skip
        if self.max_steps < 1:
            raise ConfigError(f"max_steps must be at least 1, got {self.max_steps}")
        self._tools = unique_tools(self.tools)

    @property
    def model(self) -> type[BaseModel]:
        """The output model (TextOutput for `str`)."""
        assert isinstance(self.output_type, type) and issubclass(self.output_type, BaseModel)
        return self.output_type

    def messages(self, subtask: Subtask) -> list[dict[str, Any]]:
        """What the model is sent first: the instructions, then the request and the text."""
        system = self.instructions(subtask) if callable(self.instructions) else self.instructions
        user = subtask.text
        if subtask.chunks > 1:
            user = f"(Part {subtask.chunk + 1} of {subtask.chunks} of a longer text.)\n{user}"
        if subtask.instruction:
            user = f"Request: {subtask.instruction}\n\nText:\n{user}"
        sent = [{"role": "system", "content": system}] if system else []
        return [*sent, {"role": "user", "content": user}]

    async def run(self, subtask: Subtask) -> Answer:
        return await self.answer(self.messages(subtask))

    async def answer(
        self, messages: list[dict[str, Any]], client: ClientTools | None = None
    ) -> Answer:
        """The agent on a conversation of the caller's own (a chain step's, a chat's): the tool
        loop if it has tools, then its output. `messages` is extended with the tool turns.
        `client`: tools the caller runs itself (agents/deferred.py); when the model calls one,
        the answer's output is the `ClientCalls` to run, not the output type."""
        sampling = self.sampling or self.endpoint.sampling
        usage, attempts = Usage(), 0
        calls: list[ToolCallRecord] = []
        if self._tools or (client is not None and client.offered):
            opening = list(messages)
            loop = await run_tool_loop(
                self.endpoint,
                messages,
                self._tools,
                agent=self.name,
                max_steps=self.max_steps,
                default_timeout=self.tool_timeout,
                temperature=sampling.temperature,
                max_tokens=sampling.max_tokens,
                emit=_stream_writer(),
                client=client,
            )
            usage, attempts, calls, text = loop.usage, loop.attempts, loop.calls, loop.text
            if loop.client_calls is not None:
                return Answer(loop.client_calls, usage, attempts, calls)
            if self.model is TextOutput:
                return Answer(TextOutput(text=text), usage, attempts, calls)
            try:
                return Answer(validate(text, self.model), usage, attempts, calls)
            except ValueError:  # an answer in prose: ask for it in the schema, with the facts
                messages = _final_request(opening, calls, text)
        elif self.model is TextOutput:
            completion = await self.endpoint.chat(
                messages, temperature=sampling.temperature, max_tokens=sampling.max_tokens
            )
            return Answer(TextOutput(text=completion.text), completion.usage, completion.attempts)
        parsed = await self.endpoint.parse(
            messages, self.model, temperature=sampling.temperature, max_tokens=sampling.max_tokens
        )
        return Answer(parsed.value, usage + parsed.usage, attempts + parsed.attempts, calls)


def _final_request(
    opening: list[dict[str, Any]], calls: Sequence[ToolCallRecord], answer: str
) -> list[dict[str, Any]]:
    """The structured-output request after a tool loop: the opening, what the tools said, the
    model's answer in prose. Flat text, so that any server reads it (tool messages need
    `tools`)."""
    facts = "\n".join(
        f"- {c.name}({c.arguments}) -> {c.result if c.error is None else 'error: ' + c.error}"
        for c in calls
    )
    return [
        *opening,
        {
            "role": "user",
            "content": f"Tool results:\n{facts}\n\nYour answer:\n{answer}\n\n"
            "Give that answer again in the required form.",
        },
    ]


def _stream_writer() -> Emit | None:
    """The running graph's custom stream, when the agent runs inside one."""
    from langgraph.config import get_stream_writer

    try:
        return get_stream_writer()
    except RuntimeError:  # called outside a graph: nobody is listening
        return None
