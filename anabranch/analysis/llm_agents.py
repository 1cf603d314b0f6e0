"""The analysis' agents on an LLM: keywords and sentiment asked of the model as structured
output, or sentiment read off its token probabilities."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Annotated, Literal

from pydantic import BaseModel, Field, StringConstraints, create_model

from anabranch.agents.base import Answer
from anabranch.analysis.agents import KeywordsMerge, SentimentMerge
from anabranch.analysis.outputs import Keyword, KeywordsOutput, SentimentLabel, SentimentOutput
from anabranch.errors import LLMOutputError, NoProbabilities
from anabranch.llm.endpoint import Endpoint
from anabranch.tools.keywords import YakeKeywords, grounded
from anabranch.types import Subtask, Usage


class _SentimentJudgement(BaseModel):
    label: SentimentLabel = Field(description="The overall sentiment of the text.")
    confidence: Literal["low", "medium", "high"]
    """Words, not a number: a server's grammar enforces an enum, not a numeric range."""


_CONFIDENCE = {"low": 0.34, "medium": 0.67, "high": 1.0}


def _messages(system: str, subtask: Subtask) -> list[dict[str, str]]:
    guidance = f"\nGuidance from the user: {subtask.instruction}" if subtask.instruction else ""
    return [
        {"role": "system", "content": system + guidance},
        {"role": "user", "content": subtask.text},
    ]


@dataclass
class LLMKeywordAgent(KeywordsMerge):
    """Asks the model for a ranked list of keywords; ranks become scores in (0, 1].

    Grounded: a keyword that does not occur in the text (ignoring case and inflection) is an
    invention, dropped and counted; when fewer than `min_keywords` remain, YAKE's fill in."""

    endpoint: Endpoint
    top_k: int = 6
    max_tokens: int = 200
    """Room for top_k terms of up to 40 characters plus the JSON around them."""
    grounded: bool = True
    """Drop keywords that do not occur in the text."""
    min_keywords: int = 3
    """Fewer grounded keywords than this, and the lexical extractor's fill in."""
    name: str = "keywords"

    def __post_init__(self) -> None:
        # Bounds in the schema become bounds in the server's grammar: a small model cannot ramble
        # past max_tokens and leave truncated JSON.
        term = Annotated[str, StringConstraints(min_length=1, max_length=40)]
        self._schema = create_model(
            "KeywordList",
            keywords=(
                list[term],
                Field(
                    max_length=self.top_k,
                    description="The most important words or short phrases of the text, "
                    "most important first.",
                ),
            ),
        )

    async def run(self, subtask: Subtask) -> Answer:
        if not subtask.text.strip():
            return Answer(KeywordsOutput(keywords=[]))
        parsed = await self.endpoint.parse(
            _messages(
                f"Extract at most {self.top_k} keywords or key phrases from the user's text. "
                "Use words that appear in the text.",
                subtask,
            ),
            self._schema,
            max_tokens=self.max_tokens,
        )
        found: list[str] = parsed.value.model_dump()["keywords"]  # a model built at run time
        terms = list(dict.fromkeys(t.strip() for t in found if t.strip()))
        terms = terms[: self.top_k]
        invented = 0
        if self.grounded:
            kept = grounded(terms, subtask.text)
            invented = len(terms) - len(kept)
            if len(kept) < min(self.min_keywords, self.top_k):
                known = {t.lower() for t in kept}
                lexical = await YakeKeywords(top_k=self.top_k).extract(subtask.text)
                kept += [k.term for k in lexical if k.term.lower() not in known]
            terms = kept[: self.top_k]
        keywords = [
            Keyword(term=t, score=round(1 - i / len(terms), 6)) for i, t in enumerate(terms)
        ]
        output = KeywordsOutput(keywords=keywords, invented=invented)
        return Answer(output, parsed.usage, parsed.attempts)


@dataclass
class LLMSentimentAgent(SentimentMerge):
    """Asks the model for a label and its confidence; the score is the signed confidence, so
    label and score always agree."""

    endpoint: Endpoint
    max_tokens: int = 48
    name: str = "sentiment"

    async def run(self, subtask: Subtask) -> Answer:
        if not subtask.text.strip():
            return Answer(SentimentOutput(label="neutral", score=0.0))
        parsed = await self.endpoint.parse(
            _messages(
                "Classify the sentiment of the user's text as positive, negative or neutral.",
                subtask,
            ),
            _SentimentJudgement,
            max_tokens=self.max_tokens,
        )
        judgement = parsed.value
        sign = {"positive": 1.0, "negative": -1.0, "neutral": 0.0}[judgement.label]
        score = sign * _CONFIDENCE[judgement.confidence]
        output = SentimentOutput(label=judgement.label, score=score)
        return Answer(output, parsed.usage, parsed.attempts)


_LABEL_PROMPT = """Classify the sentiment of the user's text. Answer with one word.
positive: the writer is pleased, praises, thanks or recommends.
negative: the writer complains, criticises, is upset or disappointed (sarcasm counts for what it \
means).
neutral: facts, questions or requests without feeling either way.

Text: The soup was wonderful and the staff were so kind.
Sentiment: positive
Text: My parcel arrived broken and nobody answers my emails.
Sentiment: negative
Text: The store opens at nine on weekdays.
Sentiment: neutral"""
"""Label definitions and three examples written for the prompt (none from an evaluation set)."""


@dataclass
class LLMLabelProbabilities(SentimentMerge):
    """Reads the label off the model's probabilities for the first token of its answer, instead
    of letting it write JSON: one token generated, no grammar, and a confidence that is the
    model's own. The score is P(positive) - P(negative)."""

    endpoint: Endpoint
    top_logprobs: int = 20
    """Alternatives asked for: enough to find the three labels' spellings among them."""
    name: str = "sentiment"

    async def run(self, subtask: Subtask) -> Answer:
        if not subtask.text.strip():
            return Answer(SentimentOutput(label="neutral", score=0.0))
        odds, usage, attempts = await self.odds(subtask)
        label = max(odds, key=odds.__getitem__)
        score = round(odds["positive"] - odds["negative"], 6)
        return Answer(SentimentOutput(label=label, score=score), usage, attempts)

    async def odds(self, subtask: Subtask) -> tuple[dict[SentimentLabel, float], Usage, int]:
        messages = _messages(_LABEL_PROMPT, subtask)
        # The answer begun for the model: a small model otherwise starts "The sentiment of...",
        # and its first token says nothing. Servers that continue a final assistant message
        # (llama.cpp, vLLM) go on from it; others answer afresh, with the word first.
        messages.append({"role": "assistant", "content": "Sentiment:"})
        completion = await self.endpoint.chat(
            messages, max_tokens=1, temperature=0.0, top_logprobs=self.top_logprobs
        )
        if not completion.alternatives:
            raise NoProbabilities(
                "the server sent no token probabilities (it needs `logprobs` support)",
                attempts=completion.attempts,
                usage=completion.usage,
            )
        odds = label_probabilities(completion.alternatives)
        if odds is None:
            raise LLMOutputError(
                "the model's likeliest first tokens hold none of the labels: "
                f"{[t for t, _ in completion.alternatives[:5]]}",
                attempts=completion.attempts,
                usage=completion.usage,
            )
        return odds, completion.usage, completion.attempts


def label_probabilities(
    alternatives: Sequence[tuple[str, float]],
) -> dict[SentimentLabel, float] | None:
    """Each label's share of the probability the first tokens give the three labels (a token
    counts for a label when it starts the label's word: `pos`, `Positive`, ` negative`)."""
    mass: dict[SentimentLabel, float] = {"positive": 0.0, "negative": 0.0, "neutral": 0.0}
    for token, logprob in alternatives:
        piece = token.strip().lower()
        if len(piece) < 3:  # `ne` could start `negative` or `neutral`
            continue
        for label in mass:
            if label.startswith(piece):
                mass[label] += math.exp(logprob)
    total = sum(mass.values())
    if total <= 0:
        return None
    return {label: p / total for label, p in mass.items()}
