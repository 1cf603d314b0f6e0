"""The three built-in analysts: tokenize, keywords, sentiment.

Each agent depends only on a small protocol, so the local tools (tiktoken, YAKE, VADER) and the
LLM-backed ones are interchangeable per agent.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol

from anabranch.agents.base import Answer
from anabranch.agents.outputs import KeywordsOutput, SentimentOutput, TokensOutput
from anabranch.tools.keywords import YakeKeywords
from anabranch.tools.sentiment import VaderSentiment, label_for
from anabranch.tools.tokenizer import TiktokenTokenizer
from anabranch.types import Keyword, Subtask


class Tokenizer(Protocol):
    name: str

    async def tokenize(self, text: str) -> tuple[list[str], int]: ...


class KeywordTool(Protocol):
    async def extract(self, text: str) -> list[Keyword]: ...


class SentimentTool(Protocol):
    async def score(self, text: str) -> float: ...


@dataclass
class TokenizerAgent:
    tokenizer: Tokenizer = field(default_factory=TiktokenTokenizer)
    name: str = "tokenize"

    async def run(self, subtask: Subtask) -> Answer:
        tokens, count = await self.tokenizer.tokenize(subtask.text)
        return Answer(TokensOutput(tokens=tokens, count=count, tokenizer=self.tokenizer.name))


@dataclass
class KeywordAgent:
    tool: KeywordTool = field(default_factory=YakeKeywords)
    name: str = "keywords"

    async def run(self, subtask: Subtask) -> Answer:
        return Answer(KeywordsOutput(keywords=await self.tool.extract(subtask.text)))


@dataclass
class SentimentAgent:
    tool: SentimentTool = field(default_factory=VaderSentiment)
    name: str = "sentiment"

    async def run(self, subtask: Subtask) -> Answer:
        score = await self.tool.score(subtask.text)
        return Answer(SentimentOutput(label=label_for(score), score=score))


def local_agents() -> list[TokenizerAgent | KeywordAgent | SentimentAgent]:
    """The three analysts on local tools: no network, no model server."""
    return [TokenizerAgent(), KeywordAgent(), SentimentAgent()]
