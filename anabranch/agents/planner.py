"""Planners: every task becomes subtasks, one per agent per chunk.

Chunks exist because a model has a context window: a text longer than `chunk_tokens` is cut at
sentence boundaries (or, for a single overlong sentence, at token boundaries) so that each chunk
fits. Tokens are counted with tiktoken, which is close enough for budgeting any model.
"""

from __future__ import annotations

import asyncio
import logging
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Literal

from pydantic import Field, create_model

from anabranch.errors import AnabranchError
from anabranch.tools.llm import Endpoint
from anabranch.tools.tokenizer import DEFAULT_ENCODING, get_encoding
from anabranch.types import Subtask, Task

logger = logging.getLogger(__name__)

DEFAULT_KINDS = ("tokenize", "keywords", "sentiment")

# A sentence ends at . ! ? followed by space, or at a blank line.
_SENTENCE_END = re.compile(r"(?<=[.!?])\s+|\n\s*\n")

_INLINE_CHARS = 8_000


@dataclass(frozen=True, slots=True)
class Chunk:
    text: str
    tokens: int


def split_into_chunks(text: str, budget: int, encoding: str = DEFAULT_ENCODING) -> list[Chunk]:
    """Cut `text` into chunks of at most `budget` tokens, keeping sentences whole where possible.

    Chunks are exact slices of the text: joined in order they give the text back, so nothing is
    dropped and per-chunk tokens concatenate to the whole text's tokens.
    """
    if budget < 1:
        raise ValueError(f"chunk budget must be at least 1 token, got {budget}")
    enc = get_encoding(encoding)
    total = len(enc.encode_ordinary(text))
    if total <= budget:
        return [Chunk(text, total)]

    chunks: list[Chunk] = []
    start = end = 0  # the chunk being built is text[start:end]
    pending = 0  # its size, summed per sentence: close to the exact count, checked on close

    def close(upto: int) -> None:
        piece = text[start:upto]
        chunks.append(Chunk(piece, len(enc.encode_ordinary(piece))))

    for sentence_end in [m.end() for m in _SENTENCE_END.finditer(text)] + [len(text)]:
        if sentence_end <= end:
            continue
        n = len(enc.encode_ordinary(text[end:sentence_end]))
        if end > start and pending + n > budget:
            close(end)
            start, pending = end, 0
        if n > budget:  # one sentence longer than the budget: cut it at token boundaries
            start = _cut_by_tokens(text, start, sentence_end, budget, enc, chunks)
            end, pending = sentence_end, len(enc.encode_ordinary(text[start:sentence_end]))
            continue
        end, pending = sentence_end, pending + n
    if end > start:
        close(end)
    return chunks


def _cut_by_tokens(text, start, stop, budget, enc, chunks: list[Chunk]) -> int:
    """Append full-budget chunks of text[start:stop] to `chunks`; return where the rest begins.

    A cut falls on a token's first character; re-encoding a slice can merge tokens differently
    at its edges, so each cut is checked and moved back until the slice fits.
    """
    ids = enc.encode_ordinary(text[start:stop])
    _, offsets = enc.decode_with_offsets(ids)
    first = 0
    while len(ids) - first > budget:
        last = first + budget
        while True:
            piece = text[start + offsets[first] : start + offsets[last]]
            count = len(enc.encode_ordinary(piece))
            if count <= budget or last - first <= 1:
                break
            last -= 1
        chunks.append(Chunk(piece, count))
        first = last
    return start + offsets[first]


@dataclass(frozen=True, slots=True)
class RulePlanner:
    """Plans without an LLM: predictable, free, and the fallback of the LLM planner."""

    kinds: Sequence[str] = DEFAULT_KINDS
    """The agent names every task is sent to."""
    chunk_tokens: int = 512
    """Token budget of one chunk; longer texts are cut."""
    encoding: str = DEFAULT_ENCODING

    async def plan(self, task: Task) -> list[Subtask]:
        if len(task.text) < _INLINE_CHARS:
            chunks = split_into_chunks(task.text, self.chunk_tokens, self.encoding)
        else:
            chunks = await asyncio.to_thread(
                split_into_chunks, task.text, self.chunk_tokens, self.encoding
            )
        return subtasks_for(task, self.kinds, chunks)


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
    rule: RulePlanner = field(default_factory=RulePlanner)

    def __post_init__(self) -> None:
        names = tuple(self.descriptions)
        self._schema = create_model(
            "Plan",
            agents=(list[Literal[names]], Field(description="The analyses this task needs.")),
        )

    async def plan(self, task: Task) -> list[Subtask]:
        rule_plan = await self.rule.plan(task)
        menu = "\n".join(f"- {name}: {what}" for name, what in self.descriptions.items())
        request = task.instruction or "Analyse this text."
        messages = [
            {
                "role": "system",
                "content": "You route work to analysis agents. Pick the agents this request "
                f"needs, from:\n{menu}",
            },
            {"role": "user", "content": f"Request: {request}\nText: {task.text[:2000]}"},
        ]
        try:
            parsed = await self.endpoint.parse(messages, self._schema)
        except AnabranchError as exc:
            logger.warning("LLM planner fell back to the rule plan for %s: %s", task.id, exc)
            return rule_plan
        chosen = list(dict.fromkeys(parsed.value.agents))
        if not chosen:
            return rule_plan
        chunks = sorted({(s.chunk, s.text, s.chunk_tokens) for s in rule_plan})
        return subtasks_for(task, chosen, [Chunk(text, tokens) for _, text, tokens in chunks])
