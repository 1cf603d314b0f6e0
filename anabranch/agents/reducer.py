"""The reducer: merges the branch outputs of one task into one TaskResult, partial if need be.

Merge rules, chunk by chunk in order:
- tokens are concatenated;
- keywords are merged by lower-cased term; a term's score is its mean relevance over all chunks
  (absent = 0), so a term that matters in every chunk outranks one that matters in one;
- sentiment is the mean of the chunk scores weighted by chunk length in tokens.
Outputs of agents the reducer has no rule for are kept as they are, per chunk, in `outputs`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from pydantic import ValidationError

from anabranch.tools.sentiment import label_for
from anabranch.types import (
    Keyword,
    KeywordsOutput,
    SentimentOutput,
    Subtask,
    SubtaskError,
    SubtaskResult,
    Task,
    TaskResult,
    TaskStatus,
    TokensOutput,
    Usage,
)


@dataclass(frozen=True, slots=True)
class Reducer:
    top_keywords: int = 10
    """How many merged keywords a task result keeps."""

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
        ok = sorted((r for r in results if r.status == "ok"), key=lambda r: r.chunk)
        usage = sum((r.usage for r in results), Usage())
        chunks = max((s.chunks for s in subtasks), default=1)

        result = TaskResult(
            task_id=task.id,
            status="ok",
            chunks=chunks,
            subtasks=len(subtasks),
            results=len(results),
            usage=usage,
            metadata=task.metadata,
        )
        keyword_chunks: list[KeywordsOutput] = []
        sentiments: list[tuple[SentimentOutput, int]] = []
        for r in ok:
            try:
                if r.kind == "tokenize":
                    out = TokensOutput.model_validate(r.output)
                    result.tokens.extend(out.tokens)
                    result.token_count += out.count
                    result.tokenizer = out.tokenizer
                elif r.kind == "keywords":
                    keyword_chunks.append(KeywordsOutput.model_validate(r.output))
                elif r.kind == "sentiment":
                    sentiments.append((SentimentOutput.model_validate(r.output), r.chunk_tokens))
                else:
                    result.outputs.setdefault(r.kind, []).append(r.output or {})
            except ValidationError as exc:  # an agent's output that the merge cannot read
                errors.append(
                    SubtaskError(
                        kind=r.kind,
                        chunk=r.chunk,
                        type="InvalidOutput",
                        message=f"output does not fit the {r.kind} merge rule: {exc}",
                    )
                )
        result.errors = errors
        result.status = _status(len(subtasks), len(errors))
        result.keywords = merge_keywords(keyword_chunks, chunks, self.top_keywords)
        result.keywords_invented = sum(out.invented for out in keyword_chunks)
        if sentiments:
            result.sentiment_score = weighted_sentiment(sentiments)
            result.sentiment = label_for(result.sentiment_score)
        return result


def _status(planned: int, failed: int) -> TaskStatus:
    if failed == 0:
        return "ok"
    return "error" if failed >= planned else "partial"


def merge_keywords(per_chunk: Sequence[KeywordsOutput], chunks: int, top: int) -> list[Keyword]:
    totals: dict[str, float] = {}
    spelling: dict[str, str] = {}
    for out in per_chunk:
        seen: set[str] = set()
        for kw in out.keywords:
            key = kw.term.strip().lower()
            if not key or key in seen:  # a chunk counts a term once, at its best score
                continue
            seen.add(key)
            totals[key] = totals.get(key, 0.0) + kw.score
            spelling.setdefault(key, kw.term.strip())
    ranked = sorted(totals.items(), key=lambda kv: (-kv[1], kv[0]))[:top]
    n = max(chunks, 1)
    return [Keyword(term=spelling[k], score=round(total / n, 6)) for k, total in ranked]


def weighted_sentiment(scored: Sequence[tuple[SentimentOutput, int]]) -> float:
    """Chunk scores weighted by chunk length; equal weights when no chunk has a length."""
    weights = [max(tokens, 0) for _, tokens in scored]
    if sum(weights) == 0:
        weights = [1] * len(scored)
    mean = sum(out.score * w for (out, _), w in zip(scored, weights, strict=True)) / sum(weights)
    return round(mean, 6)
