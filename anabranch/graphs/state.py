"""Graph state and run context shared by the graph builders and the runner."""

from __future__ import annotations

import operator
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Annotated, Any, Protocol, TypedDict

from langchain_core.runnables import RunnableConfig
from langgraph.pregel import Pregel

from anabranch.types import Subtask, SubtaskResult, Task, TaskResult

Graph = Pregel[Any, Any, Any, Any]
"""A compiled LangGraph graph (a `CompiledStateGraph`, say), whatever its state and context."""


class FanoutInput(TypedDict):
    task: Task


class FanoutOutput(TypedDict):
    result: TaskResult


class FanoutState(TypedDict, total=False):
    task: Task
    subtasks: list[Subtask]
    results: Annotated[list[SubtaskResult], operator.add]
    """Each agent branch appends its one result; LangGraph merges the branches with `+`."""
    result: TaskResult


@dataclass(slots=True)
class StageClock:
    """Wall-time span of each stage across a batch: first start to last end.

    Stages overlap when tasks run concurrently, so per-stage spans do not add up to the run's
    wall time; they show where the time went.
    """

    spans: dict[str, list[float]] = field(default_factory=dict)

    def record(self, stage: str, start: float, end: float) -> None:
        span = self.spans.get(stage)
        if span is None:
            self.spans[stage] = [start, end]
        else:
            span[0] = min(span[0], start)
            span[1] = max(span[1], end)

    def seconds(self, stage: str) -> float:
        span = self.spans.get(stage)
        return span[1] - span[0] if span else 0.0


class SubtaskLedger(Protocol):
    """Where an agent node finds a subtask an earlier attempt finished, and records its own."""

    def reuse(self, subtask: Subtask) -> SubtaskResult | None: ...

    def record_subtask(self, result: SubtaskResult) -> None: ...


@dataclass(slots=True)
class RunContext:
    """Per-run context handed to nodes by LangGraph (`Runtime.context`); optional."""

    clock: StageClock | None = None
    """Where the stages' times are kept, for the run's trace."""
    ledger: SubtaskLedger | None = None
    """The journal's view of the run, when the batch has a journal."""


SAMPLING = "sampling"
"""The key in a run's `configurable` that carries what the run's LLM calls are asked for."""


def requested_sampling(config: RunnableConfig | None) -> Mapping[str, Any]:
    """What a run's caller asked its LLM calls to use, as OpenAI request fields (`max_tokens`,
    `temperature`, `top_p`, `stop`, `seed`, `response_format`); empty when it asked nothing.

    The chat server puts a request's parameters here (`config["configurable"]["sampling"]`);
    a node takes `config: RunnableConfig` and merges them into its own LLM call.
    """
    return ((config or {}).get("configurable") or {}).get(SAMPLING) or {}


def now() -> float:
    return time.perf_counter()
