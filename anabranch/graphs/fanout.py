"""The fan-out graph: START -> planner -> Send(agent, subtask) x k -> reducer -> END.

One compiled graph runs one task (docs/architecture.md, rule 7); the batch runner runs many at
once. The graph's input is `{"task": Task}` and its output `{"result": TaskResult}`, so it also
drops into a user's own graph as a node or subgraph over those two keys.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from typing import Any, Protocol

from langgraph.graph import END, START, StateGraph
from langgraph.runtime import Runtime
from langgraph.types import Checkpointer, Send

from anabranch.agents.base import Agent
from anabranch.agents.planner import RulePlanner
from anabranch.agents.reducer import Reducer, TaskReducer
from anabranch.errors import ConfigError
from anabranch.graphs.state import FanoutInput, FanoutOutput, FanoutState, Graph, RunContext, now
from anabranch.graphs.sync import sync_capable
from anabranch.telemetry.tracing import invoke_agent
from anabranch.types import Subtask, SubtaskError, SubtaskResult, Task, Usage

PLANNER = "planner"
REDUCER = "reducer"


class Planner(Protocol):
    async def plan(self, task: Task) -> list[Subtask]: ...


def build_fanout_graph(
    agents: Sequence[Agent],
    planner: Planner | None = None,
    reducer: TaskReducer | None = None,
    *,
    checkpointer: Checkpointer = None,
) -> Graph:
    """Compile a fan-out graph of `agents`. Defaults: the rule planner (every agent for every
    chunk of every task) and the reducer that applies each agent's own merge rule."""
    agents = list(agents)
    if not agents:
        raise ConfigError("a fan-out graph needs at least one agent")
    planner = planner or RulePlanner(kinds=tuple(a.name for a in agents))
    reducer = reducer or Reducer(agents)
    names = [a.name for a in agents]
    if len(set(names)) != len(names):
        raise ConfigError(f"agent names must be unique, got {names}")
    if clash := {PLANNER, REDUCER} & set(names):
        raise ConfigError(f"agent names {sorted(clash)} are reserved for graph nodes")

    async def plan(state: FanoutState, runtime: Runtime[RunContext]) -> dict:
        start = now()
        task = state["task"]
        try:
            subtasks = await planner.plan(task)
        except Exception as exc:  # noqa: BLE001 - errors are data (architecture.md, rule 1)
            failed = Subtask(task_id=task.id, kind=PLANNER, text="")
            return {"subtasks": [failed], "results": [error_result(failed, exc, start)]}
        finally:
            _record(runtime, "split", start)
        # An agent the graph does not have gets an error record instead of a crashed graph.
        unknown = [s for s in subtasks if s.kind not in names]
        errors = [
            error_result(s, LookupError(f"no agent named {s.kind!r} in this graph"), start)
            for s in unknown
        ]
        return {"subtasks": subtasks, "results": errors}

    def route(state: FanoutState) -> list[Send] | str:
        return [Send(s.kind, s) for s in state["subtasks"] if s.kind in names] or REDUCER

    async def reduce(state: FanoutState, runtime: Runtime[RunContext]) -> dict:
        start = now()
        result = reducer.reduce(state["task"], state["subtasks"], state.get("results", []))
        _record(runtime, "aggregate", start)
        return {"result": result}

    builder = StateGraph(
        FanoutState, context_schema=RunContext, input_schema=FanoutInput, output_schema=FanoutOutput
    )
    builder.add_node(PLANNER, plan)
    for agent in agents:
        builder.add_node(agent.name, agent_node(agent))
        builder.add_edge(agent.name, REDUCER)
    builder.add_node(REDUCER, reduce)
    builder.add_edge(START, PLANNER)
    builder.add_conditional_edges(PLANNER, route, [*names, REDUCER])
    builder.add_edge(REDUCER, END)
    return sync_capable(builder.compile(checkpointer=checkpointer))


def agent_node(agent: Agent) -> Callable[..., Awaitable[dict[str, Any]]]:
    """Wrap an agent so that it never raises (cancellation aside): errors become data."""

    async def node(subtask: Subtask, runtime: Runtime[RunContext]) -> dict[str, Any]:
        start = now()
        ledger = getattr(runtime.context, "ledger", None)
        if ledger is not None and (done := ledger.reuse(subtask)) is not None:
            return {"results": [done]}  # finished before a crash: not recomputed
        try:
            answer = await invoke_agent(agent, subtask)  # agent.run, in its span
        except Exception as exc:  # noqa: BLE001 - errors are data (architecture.md, rule 1)
            result = error_result(subtask, exc, start)
        else:
            result = SubtaskResult(
                task_id=subtask.task_id,
                kind=subtask.kind,
                chunk=subtask.chunk,
                chunk_tokens=subtask.chunk_tokens,
                status="ok",
                output=answer.output.model_dump(mode="json"),
                attempts=answer.attempts,
                latency_s=now() - start,
                usage=answer.usage,
                tool_calls=answer.tool_calls,
            )
        _record(runtime, "execute", start)
        if ledger is not None:
            ledger.record_subtask(result)
        return {"results": [result]}

    node.__name__ = f"{agent.name}_node"
    return node


def error_result(subtask: Subtask, exc: Exception, start: float) -> SubtaskResult:
    attempts = getattr(exc, "attempts", 1)
    return SubtaskResult(
        task_id=subtask.task_id,
        kind=subtask.kind,
        chunk=subtask.chunk,
        chunk_tokens=subtask.chunk_tokens,
        status="error",
        error=SubtaskError(
            kind=subtask.kind,
            chunk=subtask.chunk,
            type=type(exc).__name__,
            message=str(exc) or repr(exc),
            attempts=attempts,
        ),
        attempts=attempts,
        latency_s=now() - start,
        usage=getattr(exc, "usage", None) or Usage(),
        tool_calls=getattr(exc, "tool_calls", None) or [],
    )


def _record(runtime: Runtime[RunContext], stage: str, start: float) -> None:
    # Embedded in a user's graph, the runtime context is theirs and may have no clock.
    clock = getattr(runtime.context, "clock", None)
    if clock is not None:
        clock.record(stage, start, now())
