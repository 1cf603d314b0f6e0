"""Planners: every task becomes subtasks, one per agent per chunk.

The chunks come from the chunking tool (a model has a context window); a planner decides which
agents see them: the rule planner by the words of the task's instruction (`routes`), the LLM
planner by asking the model to pick among every registered agent.
"""

from __future__ import annotations

import asyncio
import logging
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Literal

from pydantic import Field, create_model

from anabranch.errors import (
    AnabranchError,
    LLMConnectionError,
    LLMOutputError,
    LLMRateLimitError,
    LLMRunawayError,
    LLMStatusError,
    LLMTimeoutError,
    LLMUnavailableError,
)
from anabranch.llm.endpoint import Endpoint
from anabranch.telemetry import fell_back
from anabranch.tools.chunking import Chunk, split_into_chunks
from anabranch.tools.tokenizer import DEFAULT_ENCODING
from anabranch.types import Subtask, Task

logger = logging.getLogger(__name__)

_INLINE_CHARS = 8_000
"""Shorter texts are chunked on the event loop; longer ones on a thread, so none blocks it."""


@dataclass(frozen=True, slots=True)
class RulePlanner:
    """Plans without an LLM: predictable, free, and the fallback of the LLM planner."""

    kinds: Sequence[str]
    """The agent names a task is sent to when no route matches its instruction."""
    chunk_tokens: int = 512
    """Token budget of one chunk; longer texts are cut."""
    encoding: str = DEFAULT_ENCODING
    routes: Mapping[str, Sequence[str]] = field(default_factory=dict)
    """Instruction word -> the agents a task whose instruction has a word starting with it is
    sent to instead (`{"summar": ["summarize"]}`: "Summarize report B"); every matching route
    counts, in order. No match (or no instruction): `kinds`."""

    def kinds_for(self, task: Task) -> Sequence[str]:
        """The agents the task's instruction asks for, else `kinds`."""
        instruction = task.instruction or ""
        routed = [
            name
            for word, names in self.routes.items()
            if re.search(rf"\b{re.escape(word)}", instruction, re.IGNORECASE)
            for name in names
        ]
        return list(dict.fromkeys(routed)) or self.kinds

    async def plan(self, task: Task) -> list[Subtask]:
        if len(task.text) < _INLINE_CHARS:
            chunks = split_into_chunks(task.text, self.chunk_tokens, self.encoding)
        else:
            chunks = await asyncio.to_thread(
                split_into_chunks, task.text, self.chunk_tokens, self.encoding
            )
        return subtasks_for(task, self.kinds_for(task), chunks)


def subtasks_for(task: Task, kinds: Sequence[str], chunks: Sequence[Chunk]) -> list[Subtask]:
    """One subtask per kind per chunk, chunk-major so that early chunks start first."""
    return [
        Subtask(
            task_id=task.id,
            kind=kind,
            chunk=i,
            chunks=len(chunks),
            chunk_tokens=chunk.tokens,
            text=chunk.text,
            instruction=task.instruction,
        )
        for i, chunk in enumerate(chunks)
        for kind in kinds
    ]


@dataclass
class LLMPlanner:
    """The LLM picks which registered agents a task needs; chunking stays rule-based.

    The schema admits only registered agent names, so the model cannot invent one; any failure
    (unreachable, invalid, empty) falls back to the rule plan, so planning never loses a task.
    """

    endpoint: Endpoint
    descriptions: Mapping[str, str]
    """Agent name -> what it does, as the model will read it."""
    rule: RulePlanner | None = None
    """Chunks the text, and plans alone when the model fails; default: every described agent."""

    def __post_init__(self) -> None:
        names = tuple(self.descriptions)
        self._rule = self.rule or RulePlanner(kinds=names)
        self._schema = create_model(
            "Plan",
            agents=(
                list[Literal[names]],  # type: ignore[valid-type]  # a Literal built at run time
                # Bounded, and a set: under grammar decoding a small model repeated agent names
                # until max_tokens cut the JSON (maxItems bounds llama.cpp's grammar).
                Field(description="The agents this task needs.", max_length=len(names),
                      json_schema_extra={"uniqueItems": True}),
            ),
        )  # fmt: skip
        self._max_tokens = 16 + 8 * len(names)
        """What the plan's JSON can need: a few tokens per agent name, and the braces."""

    async def plan(self, task: Task) -> list[Subtask]:
        rule_plan = await self._rule.plan(task)
        menu = "\n".join(f"- {name}: {what}" for name, what in self.descriptions.items())
        request = task.instruction or "Analyse this text."
        messages = [
            {
                "role": "system",
                "content": "You route work to agents. Pick the agents this request "
                f"needs, from:\n{menu}",
            },
            {"role": "user", "content": f"Request: {request}\nText: {task.text[:2000]}"},
        ]
        try:
            parsed = await self.endpoint.parse(messages, self._schema, max_tokens=self._max_tokens)
        except AnabranchError as exc:
            logger.warning("LLM planner fell back to the rule plan for %s: %s", task.id, exc)
            fell_back("planner", "the rule plan", _why(exc))
            return rule_plan
        chosen: list[str] = list(dict.fromkeys(parsed.value.model_dump()["agents"]))
        if not chosen:
            fell_back("planner", "the rule plan", "the model chose no agent")
            return rule_plan
        chunks = sorted({(s.chunk, s.text, s.chunk_tokens) for s in rule_plan})
        return subtasks_for(task, chosen, [Chunk(text, tokens) for _, text, tokens in chunks])


_REASONS: tuple[tuple[type[AnabranchError], str], ...] = (
    (LLMRunawayError, "the model repeated itself until cut"),
    (LLMOutputError, "invalid JSON"),
    (LLMTimeoutError, "timed out"),
    (LLMUnavailableError, "the server was down"),
    (LLMConnectionError, "connection failed"),
    (LLMRateLimitError, "rate-limited"),
)
"""Why a plan fell back, in the few words the run's trace counts it under (first match)."""


def _why(exc: AnabranchError) -> str:
    for kind, reason in _REASONS:
        if isinstance(exc, kind):
            return reason
    if isinstance(exc, LLMStatusError) and exc.status is not None:
        return f"HTTP {exc.status}"
    return type(exc).__name__
