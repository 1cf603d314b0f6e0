"""The analysis' result as one flat record: the line `anabranch run` writes to results.jsonl.

The core's TaskResult keeps each agent's output under its name; users of the analysis (and files
written by anabranch 0.1) read `tokens`, `keywords` and `sentiment` at the top level. This record
is that view, field for field what 0.1 wrote.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, Field

from anabranch.analysis.outputs import Keyword, KeywordsOutput, SentimentOutput, TokensOutput
from anabranch.tools.sentiment import SentimentLabel
from anabranch.types import SubtaskError, TaskResult, TaskStatus, Usage

ANALYSTS = ("tokenize", "keywords", "sentiment")
"""The agents whose merged outputs the record lifts to the top level (an agent of one of these
names that keeps its outputs per chunk, a user's own, stays in `outputs`)."""


class AnalysisRecord(BaseModel):
    """One task of the analysis, flat."""

    task_id: str
    status: TaskStatus
    tokens: list[str] = Field(default_factory=list)
    token_count: int = 0
    tokenizer: str | None = None
    """Which tokenizer produced `tokens` (e.g. `tiktoken:cl100k_base`, `server:/tokenize`)."""
    keywords: list[Keyword] = Field(default_factory=list)
    keywords_invented: int = 0
    """Keywords the model gave that do not occur in the text, dropped (over all chunks)."""
    sentiment: SentimentLabel | None = None
    sentiment_score: float | None = None
    """In [-1, 1], weighted by chunk length."""
    outputs: dict[str, Any] = Field(default_factory=dict)
    """Outputs of the other agents (a user's own), by name, as the TaskResult holds them."""
    chunks: int = 1
    subtasks: int = 0
    """How many subtasks the planner made."""
    results: int = 0
    """How many subtask results reached the reducer."""
    errors: list[SubtaskError] = Field(default_factory=list)
    usage: Usage = Field(default_factory=Usage)
    metadata: dict[str, Any] = Field(default_factory=dict)

    @classmethod
    def of(cls, result: TaskResult) -> AnalysisRecord:
        """The record of a task result of the analysis graph (or of any fan-out graph: agents
        other than the three analysts stay in `outputs`)."""
        lifted = {name for name in ANALYSTS if isinstance(result.outputs.get(name), dict)}
        record = cls(
            task_id=result.task_id,
            status=result.status,
            outputs={k: v for k, v in result.outputs.items() if k not in lifted},
            chunks=result.chunks,
            subtasks=result.subtasks,
            results=result.results,
            errors=result.errors,
            usage=result.usage,
            metadata=result.metadata,
        )
        if "tokenize" in lifted:
            tokens = result.output("tokenize", TokensOutput)
            record.tokens, record.token_count = tokens.tokens, tokens.count
            record.tokenizer = tokens.tokenizer
        if "keywords" in lifted:
            keywords = result.output("keywords", KeywordsOutput)
            record.keywords, record.keywords_invented = keywords.keywords, keywords.invented
        if "sentiment" in lifted:
            sentiment = result.output("sentiment", SentimentOutput)
            record.sentiment, record.sentiment_score = sentiment.label, sentiment.score
        return record


def analysis_line(result: TaskResult) -> str:
    """A result as the analysis writes it to results.jsonl: its flat record (the fields 0.1
    wrote), the `line` the CLI gives the output file and `Journal.export`."""
    return AnalysisRecord.of(result).model_dump_json()


def render_analysis(result: TaskResult) -> str:
    """A task result of the analysis as a few lines a person reads (the chat answer)."""
    r = AnalysisRecord.of(result)
    lines = [f"Sentiment: {r.sentiment or 'unknown'}"]
    if r.sentiment_score is not None:
        lines[0] += f" ({r.sentiment_score:+.2f})"
    lines.append("Keywords: " + (", ".join(k.term for k in r.keywords[:8]) or "none"))
    lines.append(f"Tokens: {r.token_count} ({r.tokenizer or 'no tokenizer'})")
    lines += [f"Error in {e.kind}: {e.type}: {e.message}" for e in r.errors]
    return "\n".join(lines)
