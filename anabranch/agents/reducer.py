"""The reducer: merges the branch outputs of one task into one TaskResult, partial if need be.

The reducer knows no agent by name. Each agent's outputs are read as its `output_type` (when it
declares one) and combined by its own `merge` rule (when it has one), chunk by chunk in order; an
agent without a rule keeps one output per chunk. Any object with the same `reduce` method
(`TaskReducer`) can take the default's place in `build_fanout_graph`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from pydantic import BaseModel, ValidationError

from anabranch.agents.base import Agent, Merges, Part, output_type
from anabranch.types import (
    Subtask,
    SubtaskError,
    SubtaskResult,
    Task,
    TaskResult,
    TaskStatus,
    Usage,
    model_path,
)


class TaskReducer(Protocol):
    """What the fan-out graph's reducer node calls once per task, with every subtask the planner
    made and every result that came back (errors included). It must always return a result:
    tasks in == results out."""

    def reduce(
        self, task: Task, subtasks: Sequence[Subtask], results: Sequence[SubtaskResult]
    ) -> TaskResult: ...


@dataclass(frozen=True)
class Reducer:
    """The default reducer: each agent's merge rule, errors gathered, the status counted."""

    agents: Sequence[Agent] = ()
    """The graph's agents, whose output types and merge rules the reducer applies."""
    _by_name: Mapping[str, Agent] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "_by_name", {a.name: a for a in self.agents})

    def reduce(
        self, task: Task, subtasks: Sequence[Subtask], results: Sequence[SubtaskResult]
    ) -> TaskResult:
        by_key = {(r.kind, r.chunk): r for r in results}
        errors = [r.error for r in results if r.error is not None]
        # A planned subtask without a result would be a silent loss: make it a visible error.
        errors += [
            SubtaskError(
                kind=s.kind,
                chunk=s.chunk,
                type="MissingResult",
                message="the agent node returned no result for this subtask",
            )
            for s in subtasks
            if (s.kind, s.chunk) not in by_key
        ]
        chunks = max((s.chunks for s in subtasks), default=1)
        ok: dict[str, list[SubtaskResult]] = {}
        for r in sorted((r for r in results if r.status == "ok"), key=lambda r: r.chunk):
            ok.setdefault(r.kind, []).append(r)
        result = TaskResult(
            task_id=task.id,
            status="ok",
            chunks=chunks,
            subtasks=len(subtasks),
            results=len(results),
            usage=sum((r.usage for r in results), Usage()),
            tool_calls=[c for r in sorted(results, key=_order) for c in r.tool_calls],
            metadata=task.metadata,
        )
        for kind, done in ok.items():
            agent = self._by_name.get(kind)
            try:
                self._combine(result, kind, agent, done, chunks)
            except ValidationError as exc:  # an output that its own model cannot read
                errors.append(
                    SubtaskError(kind=kind, chunk=done[0].chunk, type="InvalidOutput",
                                 message=f"output does not fit {kind}'s output model: {exc}")
                )  # fmt: skip
            except Exception as exc:  # noqa: BLE001 - a user's merge rule: errors are data
                errors.append(
                    SubtaskError(kind=kind, chunk=done[0].chunk, type=type(exc).__name__,
                                 message=f"{kind}'s merge rule failed: {exc}")
                )  # fmt: skip
        result.errors = errors
        result.status = _status(len(subtasks), len(errors))
        return result

    def _combine(
        self,
        result: TaskResult,
        kind: str,
        agent: Agent | None,
        done: Sequence[SubtaskResult],
        chunks: int,
    ) -> None:
        model = output_type(agent)
        if model is None:  # nothing declared: the outputs as they came, one per chunk
            result.outputs[kind] = [r.output or {} for r in done]
            return
        values = [model.model_validate(r.output or {}) for r in done]
        merged: Any
        if isinstance(agent, Merges):
            parts = [
                Part(output=v, chunk=r.chunk, chunks=chunks, tokens=r.chunk_tokens)
                for v, r in zip(values, done, strict=True)
            ]
            merged = agent.merge(parts)
            result.outputs[kind] = _json(merged)
            model = type(merged)
        else:
            result.outputs[kind] = [_json(v) for v in values]
        result.output_types[kind] = model_path(model)
        result._types[kind] = model


def _order(result: SubtaskResult) -> tuple[str, int]:
    return result.kind, result.chunk


def _json(value: BaseModel) -> dict[str, Any]:
    return value.model_dump(mode="json")


def _status(planned: int, failed: int) -> TaskStatus:
    if failed == 0:
        return "ok"
    return "error" if failed >= planned else "partial"
