"""The output model of each built-in analyst.

The keyword and sentiment models double as the JSON schemas LLM-backed agents send in
`response_format`, so field descriptions here are what the model reads.
"""

from __future__ import annotations

from pydantic import BaseModel, Field

from anabranch.types import Keyword, SentimentLabel


class TokensOutput(BaseModel):
    tokens: list[str]
    count: int
    tokenizer: str


class KeywordsOutput(BaseModel):
    keywords: list[Keyword] = Field(
        description="The most important words or short phrases of the text, most relevant first, "
        "each with a relevance score between 0 and 1."
    )


class SentimentOutput(BaseModel):
    label: SentimentLabel = Field(description="The overall sentiment of the text.")
    score: float = Field(
        ge=-1.0, le=1.0, description="-1 is very negative, 0 neutral, 1 very positive."
    )
