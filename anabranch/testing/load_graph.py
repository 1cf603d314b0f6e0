"""A graph that only calls the LLM: for measuring the framework and the server, not an analysis.

Three agents, each one chat call of a fixed short message per subtask, in the fan-out graph (rule
planner, reducer): everything but the call is the framework's own cost. `bench/` measures with it,
in one process and on a Ray cluster (`GraphSpec("anabranch.testing.load_graph:load_graph",
{"llm": LLMOptions(url, "m", limits=Limits(64))})`).
"""

from __future__ import annotations

from dataclasses import dataclass

from pydantic import BaseModel

from anabranch.agents.base import Answer
from anabranch.graphs.fanout import build_fanout_graph
from anabranch.graphs.spec import Share
from anabranch.graphs.state import Graph
from anabranch.llm.connect import LLMOptions, build_endpoint
from anabranch.llm.endpoint import Endpoint
from anabranch.types import Subtask

MESSAGES = [{"role": "user", "content": "Analyse this short text."}]
AGENTS = ("first", "second", "third")


class Reply(BaseModel):
    """What a chat agent keeps of its answer: its length (the text itself is not read)."""

    completion_tokens: int


@dataclass
class ChatAgent:
    """One chat call per subtask, its answer unread."""

    endpoint: Endpoint
    name: str

    async def run(self, subtask: Subtask) -> Answer:
        completion = await self.endpoint.chat(MESSAGES, max_tokens=16)
        return Answer(Reply(completion_tokens=completion.usage.completion_tokens), completion.usage)


def load_graph(llm: LLMOptions, share: Share | None = None) -> Graph:
    """The three chat agents on one endpoint to `llm` (on this worker's share of its limits)."""
    endpoint = build_endpoint(llm, limits=(share or Share()).limits(llm.limits))
    return build_fanout_graph(agents=[ChatAgent(endpoint, name) for name in AGENTS])
