"""What an agent is: a named object with an async `run(subtask)` that returns an Answer.

Agents do not catch their own errors; the graph's agent node does, so that every agent, built in
or user-written, gets the same "errors are data" treatment.

An agent may also say what it returns and how its chunks combine (`TypedAgent`): `output_type`,
the pydantic model of its output, lets `TaskResult.output(name)` give that model back, and
`merge(parts)` turns the outputs of a long text's chunks into one. Without `merge`, a task result
keeps one output per chunk.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Generic, Protocol, TypeVar, runtime_checkable

from pydantic import BaseModel

from anabranch.types import Subtask, ToolCallRecord, Usage

OutputT = TypeVar("OutputT", bound=BaseModel)
"""An agent's output model."""


@dataclass(slots=True)
class Answer:
    """An agent's output plus what it cost to get it."""

    output: BaseModel
    """The agent's output model (its `output_type`, when it declares one)."""
    usage: Usage = field(default_factory=Usage)
    """What its LLM calls cost."""
    attempts: int = 1
    """Requests it took, retries included."""
    tool_calls: list[ToolCallRecord] = field(default_factory=list)
    """The tools it called on the way, in order."""


@runtime_checkable
class Agent(Protocol):
    """Anything with a `name` (the node and subtask kind it serves) and an async `run`."""

    name: str

    async def run(self, subtask: Subtask) -> Answer: ...


@dataclass(frozen=True, slots=True)
class Part(Generic[OutputT]):
    """One chunk's output, as a merge rule receives it."""

    output: OutputT
    """What the agent answered for this chunk."""
    chunk: int
    """The chunk's index in the task's text (parts arrive in this order)."""
    chunks: int
    """How many chunks the task's text was cut into (a part may be missing: its agent failed)."""
    tokens: int
    """The chunk's size in tokens, to weight per-chunk answers by."""


@runtime_checkable
class Merges(Protocol[OutputT]):
    """An agent that combines the outputs of a task's chunks into one (`TaskResult.output` then
    gives one instance, not a list)."""

    def merge(self, parts: Sequence[Part[OutputT]]) -> OutputT: ...


def output_type(agent: object) -> type[BaseModel] | None:
    """The model an agent declares it returns (`output_type` attribute), if it declares one."""
    declared = getattr(agent, "output_type", None)
    return declared if isinstance(declared, type) and issubclass(declared, BaseModel) else None
