"""A user's own agent with a typed output and a merge rule, importable by the tests and by the
Ray workers they start (a module, not a test file: workers import it by name)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import ClassVar

from pydantic import BaseModel

from anabranch import Answer, Subtask, build_fanout_graph
from anabranch.agents.base import Part
from anabranch.agents.planner import RulePlanner
from anabranch.graphs.state import Graph


class Summary(BaseModel):
    """What the summarizer returns: a few words of each chunk, and how many it read."""

    text: str
    words: int


class Shout(BaseModel):
    """What the shouter returns per chunk (it has no merge rule)."""

    loud: str


@dataclass
class Summarizer:
    """Keeps each chunk's first three words; chunks merge by joining them in order."""

    name: str = "summary"
    output_type: ClassVar[type[Summary]] = Summary

    async def run(self, subtask: Subtask) -> Answer:
        words = subtask.text.split()
        return Answer(Summary(text=" ".join(words[:3]), words=len(words)))

    def merge(self, parts: Sequence[Part[Summary]]) -> Summary:
        return Summary(
            text=" / ".join(p.output.text for p in parts), words=sum(p.output.words for p in parts)
        )


@dataclass
class Shouter:
    name: str = "shout"
    output_type: ClassVar[type[Shout]] = Shout

    async def run(self, subtask: Subtask) -> Answer:
        return Answer(Shout(loud=subtask.text[:10].upper()))


def typed_graph(chunk_tokens: int = 16) -> Graph:
    """The two agents in a fan-out graph whose rule planner cuts texts into small chunks."""
    agents = [Summarizer(), Shouter()]
    return build_fanout_graph(agents, RulePlanner(kinds=[a.name for a in agents],
                                                  chunk_tokens=chunk_tokens))  # fmt: skip
