"""What the analysis' agents return, and how a long text's chunks combine into one answer.

Merge rules, chunk by chunk in order:
- tokens are concatenated (and counted);
- keywords are merged by lower-cased term; a term's score is its mean relevance over all chunks
  (absent = 0), so a term that matters in every chunk outranks one that matters in one;
- sentiment is the mean of the chunk scores weighted by chunk length in tokens.
"""

from __future__ import annotations

from collections.abc import Sequence

from pydantic import BaseModel, Field

from anabranch.agents.base import Part
from anabranch.tools.keywords import Keyword
from anabranch.tools.sentiment import SentimentLabel, label_for
from anabranch.tools.tokenizer import TokensOutput

TOP_KEYWORDS = 10
"""How many merged keywords a task keeps."""

__all__ = [
    "TOP_KEYWORDS",
    "Keyword",
    "KeywordsOutput",
    "SentimentLabel",
    "SentimentOutput",
    "TokensOutput",
    "merge_keywords",
    "merge_sentiment",
    "merge_tokens",
]


class KeywordsOutput(BaseModel):
    """The keyword agent's answer."""

    keywords: list[Keyword] = Field(
        description="The most important words or short phrases of the text, most relevant first, "
        "each with a relevance score between 0 and 1."
    )
    invented: int = 0
    """Keywords the model gave that do not occur in the text, dropped (LLM keywords only)."""


class SentimentOutput(BaseModel):
    """The sentiment agent's answer."""

    label: SentimentLabel = Field(description="The overall sentiment of the text.")
    score: float = Field(
        ge=-1.0, le=1.0, description="-1 is very negative, 0 neutral, 1 very positive."
    )


def merge_tokens(parts: Sequence[Part[TokensOutput]]) -> TokensOutput:
    """The chunks' tokens in order; the tokenizer is the last chunk's (they are all the same)."""
    return TokensOutput(
        tokens=[t for p in parts for t in p.output.tokens],
        count=sum(p.output.count for p in parts),
        tokenizer=parts[-1].output.tokenizer if parts else "",
    )


def merge_keywords(
    parts: Sequence[Part[KeywordsOutput]], top: int = TOP_KEYWORDS
) -> KeywordsOutput:
    """Mean relevance of each term over all the task's chunks (a missing chunk counts 0)."""
    totals: dict[str, float] = {}
    spelling: dict[str, str] = {}
    for part in parts:
        seen: set[str] = set()
        for kw in part.output.keywords:
            key = kw.term.strip().lower()
            if not key or key in seen:  # a chunk counts a term once, at its best score
                continue
            seen.add(key)
            totals[key] = totals.get(key, 0.0) + kw.score
            spelling.setdefault(key, kw.term.strip())
    ranked = sorted(totals.items(), key=lambda kv: (-kv[1], kv[0]))[:top]
    n = max(parts[0].chunks if parts else 1, 1)
    return KeywordsOutput(
        keywords=[Keyword(term=spelling[k], score=round(total / n, 6)) for k, total in ranked],
        invented=sum(p.output.invented for p in parts),
    )


def merge_sentiment(parts: Sequence[Part[SentimentOutput]]) -> SentimentOutput:
    """Chunk scores weighted by chunk length (equal weights when no chunk has a length); the
    label is read off the merged score."""
    weights = [max(p.tokens, 0) for p in parts]
    if sum(weights) == 0:
        weights = [1] * len(parts)
    mean = sum(p.output.score * w for p, w in zip(parts, weights, strict=True)) / sum(weights)
    score = round(mean, 6)
    return SentimentOutput(label=label_for(score), score=score)
