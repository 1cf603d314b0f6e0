"""The analysers as tools a model calls: tokenize, keywords and sentiment.

A chat user who asks "how positive are these three reviews?" gets an agent whose model calls
`sentiment` once per review, the three calls at once (the tool loop runs one turn's calls
together), and answers from what they returned. `anabranch serve` offers it as the `assistant`
model. The tools are plain functions: CPU work, so the loop runs them on threads, off the event
loop.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from pydantic import BaseModel

from anabranch.agents.llm import LLMAgent
from anabranch.agents.tools import Tool, tool
from anabranch.llm.endpoint import Endpoint
from anabranch.tools.keywords import YakeKeywords
from anabranch.tools.sentiment import SentimentLabel, _analyzer, label_for
from anabranch.tools.tokenizer import DEFAULT_ENCODING, get_encoding, readable_pieces

if TYPE_CHECKING:
    from anabranch.chat.agent_chat import AgentChat


class Tokens(BaseModel):
    """What `tokenize` returns."""

    count: int
    first: list[str]
    """The first tokens, readable."""


class Sentiment(BaseModel):
    """What `sentiment` returns."""

    label: SentimentLabel
    score: float
    """VADER's compound score, in [-1, 1]."""


def tokenize(text: str) -> Tokens:
    """Count the tokens of a text (tiktoken's cl100k_base) and show the first ones.

    Args:
        text: the text to tokenize
    """
    encoding = get_encoding(DEFAULT_ENCODING)
    ids = encoding.encode_ordinary(text)
    first = readable_pieces(encoding.decode_tokens_bytes(ids[:12]))
    return Tokens(count=len(ids), first=first)


def keywords(text: str, top: int = 5) -> list[str]:
    """The key terms of a text, most relevant first (YAKE).

    Args:
        text: the text to read
        top: how many terms at most
    """
    return [k.term for k in YakeKeywords(top_k=top).extract_sync(text)]


def sentiment(text: str) -> Sentiment:
    """How positive or negative one text is (VADER). Call it once per text.

    Args:
        text: one text, e.g. one review
    """
    score = float(_analyzer().polarity_scores(text)["compound"]) if text.strip() else 0.0
    return Sentiment(label=label_for(score), score=round(score, 4))


ANALYSIS_TOOLS: tuple[Tool, ...] = (tool(tokenize), tool(keywords), tool(sentiment))
"""The three analysers, as tools."""


def assistant(endpoint: Endpoint, name: str = "assistant") -> LLMAgent:
    """An agent that answers questions about texts with the analysers as its tools."""
    return LLMAgent(
        name,
        endpoint,
        instructions="You answer questions about texts. Use the tools: call sentiment once for "
        "each text whose tone matters (all the calls in one turn), keywords for topics, "
        "tokenize for lengths. Then answer briefly from their results.",
        tools=ANALYSIS_TOOLS,
    )


def assistant_chat(endpoint: Endpoint) -> AgentChat:
    """The assistant as a chat model over the whole conversation: the stream's progress shows
    each model turn and tool call; a client's own tools are offered beside the analysers, and
    the model's calls of them are the answer, for the client to run (chat/agent_chat.py)."""
    from anabranch.chat.agent_chat import AgentChat

    return AgentChat(assistant(endpoint), description="Answers about texts, calling the "
                     "analysers as tools (and the client's own tools).")  # fmt: skip
