"""What an agent is: a named object with an async `run(subtask)` that returns an Answer.

Agents do not catch their own errors; the graph's agent node does, so that every agent, built in
or user-written, gets the same "errors are data" treatment.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol, runtime_checkable

from pydantic import BaseModel

from anabranch.types import Subtask, Usage


@dataclass(slots=True)
class Answer:
    """An agent's output plus what it cost to get it."""

    output: BaseModel
    usage: Usage = field(default_factory=Usage)
    attempts: int = 1


@runtime_checkable
class Agent(Protocol):
    """Anything with a `name` (the node and subtask kind it serves) and an async `run`."""

    name: str

    async def run(self, subtask: Subtask) -> Answer: ...
