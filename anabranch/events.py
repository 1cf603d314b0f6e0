"""The events a running graph streams, one vocabulary for every producer and consumer.

The chain writes them as LangGraph custom stream events; the chat adapters turn the fan-out
graph's updates into them; the chat server relays them (as SSE comment lines and in the
`anabranch` field of a reply); the CLI and the notebooks print them. Each is a small model with a
`type` discriminator, so a consumer matches on the class, never on dict keys, and a JSON reader
on `type`.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from anabranch.types import SubtaskStatus, Usage


class BaseEvent(BaseModel):
    """What every event is: immutable, with a `type` naming its kind."""

    model_config = ConfigDict(frozen=True)


class StepStarted(BaseEvent):
    """A chain step began."""

    type: Literal["step_start"] = "step_start"
    step: int
    """1-based position in the chain."""
    specialist: str


class TextDelta(BaseEvent):
    """A piece of a chain step's answer, as the model writes it."""

    type: Literal["text"] = "text"
    step: int
    specialist: str
    text: str


class StepEnded(BaseEvent):
    """A chain step finished, well or not."""

    type: Literal["step_end"] = "step_end"
    step: int
    specialist: str
    status: SubtaskStatus
    seconds: float


class Planned(BaseEvent):
    """The planner split a task: the agent of each subtask, in order."""

    type: Literal["planned"] = "planned"
    subtasks: list[str]


class AgentDone(BaseEvent):
    """An agent finished one subtask."""

    type: Literal["agent_done"] = "agent_done"
    agent: str
    chunk: int
    status: SubtaskStatus
    usage: Usage


class ModelTurn(BaseEvent):
    """A tool-using agent's model answered one turn: the tools it asked for (none: its answer)."""

    type: Literal["model_turn"] = "model_turn"
    agent: str
    step: int
    """1-based turn of the agent's tool loop."""
    tool_calls: list[str]
    """The names of the tools the model called, in order; empty when it answered."""
    text: str = ""
    """What the model wrote besides its calls (its answer, on the last turn)."""


class ToolStarted(BaseEvent):
    """A tool call began (the calls of one turn start together)."""

    type: Literal["tool_start"] = "tool_start"
    agent: str
    step: int
    call_id: str
    name: str
    arguments: dict[str, Any] | str


class ToolEnded(BaseEvent):
    """A tool call finished: its result, or the error the model reads instead."""

    type: Literal["tool_end"] = "tool_end"
    agent: str
    step: int
    call_id: str
    name: str
    status: SubtaskStatus
    content: str
    """The tool message the model reads: the result, or the error."""
    seconds: float


class NodeDone(BaseEvent):
    """A node of a user's messages graph wrote a message."""

    type: Literal["node_done"] = "node_done"
    node: str


class UsageTotal(BaseEvent):
    """What a whole run cost, sent when it ends."""

    type: Literal["usage"] = "usage"
    prompt_tokens: int
    completion_tokens: int


class Custom(BaseEvent):
    """Whatever a user's graph streamed on its own, carried as is."""

    type: Literal["custom"] = "custom"
    data: Any


Event = Annotated[
    StepStarted
    | TextDelta
    | StepEnded
    | Planned
    | AgentDone
    | ModelTurn
    | ToolStarted
    | ToolEnded
    | NodeDone
    | UsageTotal
    | Custom,
    Field(discriminator="type"),
]
"""Any event; `TypeAdapter(Event).validate_python(data)` reads one back from JSON data."""
