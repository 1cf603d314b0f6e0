"""The analysis' agents on local tools (tiktoken, YAKE, VADER), and the merge rules every
tokenizer, keyword and sentiment agent shares, LLM-backed ones included.

Each agent depends only on a small protocol, so the local tools and the LLM-backed ones are
interchangeable, per agent.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import ClassVar, Protocol

from anabranch.agents.base import Answer, Part
from anabranch.analysis.outputs import (
    KeywordsOutput,
    SentimentOutput,
    TokensOutput,
    merge_keywords,
    merge_sentiment,
    merge_tokens,
)
from anabranch.llm.endpoint import Endpoint
from anabranch.telemetry import fell_back
from anabranch.tools.keywords import Keyword, YakeKeywords
from anabranch.tools.sentiment import VaderSentiment, label_for
from anabranch.tools.tokenizer import TiktokenTokenizer
from anabranch.types import Subtask


class TokensMerge:
    """What a tokenizer agent returns, and how its chunks combine: concatenated."""

    output_type: ClassVar[type[TokensOutput]] = TokensOutput

    def merge(self, parts: Sequence[Part[TokensOutput]]) -> TokensOutput:
        return merge_tokens(parts)


class KeywordsMerge:
    """What a keyword agent returns, and how its chunks combine: mean relevance per term."""

    output_type: ClassVar[type[KeywordsOutput]] = KeywordsOutput

    def merge(self, parts: Sequence[Part[KeywordsOutput]]) -> KeywordsOutput:
        return merge_keywords(parts)


class SentimentMerge:
    """What a sentiment agent returns, and how its chunks combine: weighted by length."""

    output_type: ClassVar[type[SentimentOutput]] = SentimentOutput

    def merge(self, parts: Sequence[Part[SentimentOutput]]) -> SentimentOutput:
        return merge_sentiment(parts)


class Tokenizer(Protocol):
    async def tokenize(self, text: str) -> TokensOutput: ...


class KeywordTool(Protocol):
    async def extract(self, text: str) -> list[Keyword]: ...


class SentimentTool(Protocol):
    async def score(self, text: str) -> float: ...


@dataclass
class TokenizerAgent(TokensMerge):
    """The text's tokens, from tiktoken or (`ServerTokenizer`) the model's own tokenizer."""

    tokenizer: Tokenizer = field(default_factory=TiktokenTokenizer)
    """What counts the tokens."""
    name: str = "tokenize"

    async def run(self, subtask: Subtask) -> Answer:
        return Answer(await self.tokenizer.tokenize(subtask.text))


@dataclass
class KeywordAgent(KeywordsMerge):
    """Keywords from a local extractor (YAKE by default)."""

    tool: KeywordTool = field(default_factory=YakeKeywords)
    """What extracts them."""
    name: str = "keywords"

    async def run(self, subtask: Subtask) -> Answer:
        return Answer(KeywordsOutput(keywords=await self.tool.extract(subtask.text)))


@dataclass
class SentimentAgent(SentimentMerge):
    """Sentiment from a local scorer (VADER by default)."""

    tool: SentimentTool = field(default_factory=VaderSentiment)
    """What scores the text in [-1, 1]."""
    name: str = "sentiment"

    async def run(self, subtask: Subtask) -> Answer:
        score = await self.tool.score(subtask.text)
        return Answer(SentimentOutput(label=label_for(score), score=score))


@dataclass
class ServerTokenizer:
    """The model's own tokenizer through the server's /tokenize (llama.cpp, vLLM); tiktoken when
    the server has none. The output says which one was used."""

    endpoint: Endpoint
    fallback: TiktokenTokenizer = field(default_factory=TiktokenTokenizer)

    async def tokenize(self, text: str) -> TokensOutput:
        if not text:
            return TokensOutput(tokens=[], count=0, tokenizer="server:/tokenize")
        tokenized = await self.endpoint.tokenize(text)
        if tokenized is None:
            fell_back("tokenize", "tiktoken", "the server has no /tokenize")
            return await self.fallback.tokenize(text)
        pieces, count = tokenized
        return TokensOutput(tokens=pieces, count=count, tokenizer="server:/tokenize")
