"""The three built-in analysts: tokenize, keywords, sentiment, on local tools or on an LLM.

Each agent depends only on a small protocol, so the local tools (tiktoken, YAKE, VADER) and the
LLM-backed ones are interchangeable, per agent.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Annotated, Literal, Protocol, cast

from pydantic import BaseModel, Field, StringConstraints, create_model

from anabranch.agents.base import Agent, Answer
from anabranch.errors import ConfigError, LLMOutputError
from anabranch.llm.endpoint import Endpoint
from anabranch.tools.keywords import YakeKeywords, grounded
from anabranch.tools.sentiment import POSITIVE_AT, VaderSentiment, label_for
from anabranch.tools.tokenizer import TiktokenTokenizer
from anabranch.types import (
    Keyword,
    KeywordsOutput,
    SentimentLabel,
    SentimentOutput,
    Subtask,
    TokensOutput,
    Usage,
)

logger = logging.getLogger(__name__)

Backend = Literal["local", "llm", "llm-probs", "llm-blend"]
"""`local`: tiktoken, YAKE, VADER in-process. `llm`: an OpenAI-compatible endpoint.
`llm-probs` (sentiment only): the label read off the model's token probabilities. `llm-blend`
(sentiment only): those probabilities and VADER combined."""
SENTIMENT_BACKENDS: tuple[Backend, ...] = ("local", "llm", "llm-probs", "llm-blend")
"""The sentiment analysers `sentiment_agent` builds: VADER; the model's JSON judgement; the
label read off the model's token probabilities; those and VADER combined."""
DEFAULT_LLM_BACKEND: Mapping[str, Backend] = {
    "tokenize": "llm", "keywords": "llm", "sentiment": "llm-blend",
}  # fmt: skip
"""What runs when there is an LLM and no `--backend`: sentiment on the backend that agreed best
with human labels on the project's held-out set and the two public sets measured."""
_VALID: dict[str, tuple[Backend, ...]] = {
    "tokenize": ("local", "llm"), "keywords": ("local", "llm"), "sentiment": SENTIMENT_BACKENDS,
}  # fmt: skip
"""What each analyst can run on (`llm-probs` and `llm-blend` are sentiment's alone)."""


class Tokenizer(Protocol):
    async def tokenize(self, text: str) -> TokensOutput: ...


class KeywordTool(Protocol):
    async def extract(self, text: str) -> list[Keyword]: ...


class SentimentTool(Protocol):
    async def score(self, text: str) -> float: ...


@dataclass
class TokenizerAgent:
    tokenizer: Tokenizer = field(default_factory=TiktokenTokenizer)
    name: str = "tokenize"

    async def run(self, subtask: Subtask) -> Answer:
        return Answer(await self.tokenizer.tokenize(subtask.text))


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


# -- LLM-backed ---------------------------------------------------------------------------------


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
            return await self.fallback.tokenize(text)
        pieces, count = tokenized
        return TokensOutput(tokens=pieces, count=count, tokenizer="server:/tokenize")


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
class LLMKeywordAgent:
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
class LLMSentimentAgent:
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
class LLMLabelProbabilities:
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


class NoProbabilities(LLMOutputError):
    """The server answered without token probabilities: it does not support `logprobs`."""


@dataclass(frozen=True, slots=True)
class Blend:
    """How `BlendedSentiment` combines VADER's compound score with the model's opinion.

    The defaults were chosen on the tuning part of the project's set alone
    (`bench/tune_ensemble.py`, which tries this class over a grid), in the middle of a plateau,
    not at its best point; another model may want others."""

    weight: float = 1.0
    """The model's weight beside VADER's 1."""
    lean: float = 0.5
    """Taken off the model's opinion first: SmolLM2-135M leans toward positive."""
    band: float = 0.15
    """Blended scores within this distance of zero are neutral."""

    def output(self, vader: float, model: float) -> SentimentOutput:
        """The blend of a VADER compound score and the model's P(positive) - P(negative)."""
        blended = (vader + self.weight * (model - self.lean)) / (1 + self.weight)
        # Moved toward 0 by the band less VADER's cut-off, so that the cut-offs every score is
        # read with (a task's merged chunks included) give the blend's label.
        shift = min(abs(blended), self.band - POSITIVE_AT)
        score = round(max(-1.0, min(1.0, math.copysign(abs(blended) - shift, blended))), 6)
        return SentimentOutput(label=label_for(score), score=score)


@dataclass
class BlendedSentiment:
    """VADER's compound score and the model's P(positive) - P(negative), averaged (`Blend`).

    Neither alone is as good: VADER misses what its lexicon lacks (sarcasm, domain words), and a
    small model leans positive (SmolLM2-135M calls 121 of the 151 tuning texts positive) yet
    often tells the sign right where VADER sees no feeling.

    A server without token probabilities gets the model's JSON judgement (its signed
    confidence, no lean taken off) in their place, with a warning, after one request that finds
    out."""

    endpoint: Endpoint
    blend: Blend = field(default_factory=Blend)
    """How the two are combined."""
    name: str = "sentiment"

    def __post_init__(self) -> None:
        self._probabilities = LLMLabelProbabilities(self.endpoint)
        self._judgement: LLMSentimentAgent | None = None
        """Set once the server has shown that it sends no probabilities."""

    async def run(self, subtask: Subtask) -> Answer:
        if not subtask.text.strip():
            return Answer(SentimentOutput(label="neutral", score=0.0))
        vader = await VaderSentiment().score(subtask.text)
        spent = Usage()
        if self._judgement is None:
            try:
                odds, usage, attempts = await self._probabilities.odds(subtask)
            except NoProbabilities as exc:
                if self._judgement is None:  # not found out by a call in flight beside this one
                    logger.warning("%s: %s; sentiment blends the model's JSON judgement instead",
                                   self.endpoint.public_url, exc)  # fmt: skip
                    self._judgement = LLMSentimentAgent(self.endpoint)
                spent = exc.usage
            else:
                model = odds["positive"] - odds["negative"]
                return Answer(self.blend.output(vader, model), usage, attempts)
        judged = await self._judgement.run(subtask)
        assert isinstance(judged.output, SentimentOutput)
        blend = replace(self.blend, lean=0.0)  # no lean measured for the JSON judgement
        output = blend.output(vader, judged.output.score)
        return Answer(output, spent + judged.usage, spent.requests + judged.attempts)


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


DESCRIPTIONS = {
    "tokenize": "split the text into the model's tokens and count them",
    "keywords": "extract the most important words and phrases",
    "sentiment": "judge whether the text is positive, negative or neutral",
}
"""What each built-in analyst does, as the LLM planner shows it to the model."""
AGENT_NAMES = tuple(DESCRIPTIONS)


def parse_backend(spec: str | None, has_llm: bool) -> Backend | dict[str, Backend]:
    """`--backend` as `make_agents` takes it: `local`, `llm`, `llm-probs` or `llm-blend` (llm,
    with sentiment read off token probabilities, alone or blended with VADER), or
    `keywords=llm,sentiment=llm-probs`. None means `DEFAULT_LLM_BACKEND` when there is an LLM,
    else local."""
    if spec is None:
        return dict(DEFAULT_LLM_BACKEND) if has_llm else "local"
    pairs = [part.split("=", 1) for part in spec.split(",") if part.strip()]
    if "=" not in spec:
        if spec.strip() not in SENTIMENT_BACKENDS:  # one for all: any sentiment's backend
            raise ConfigError(
                f"unknown backend {spec.strip()!r}; use one of {', '.join(SENTIMENT_BACKENDS)}"
            )
        return cast(Backend, spec.strip())
    if any(len(pair) != 2 for pair in pairs):
        raise ConfigError(f"backend {spec!r}: use local, llm, or agent=backend pairs")
    choice = {name.strip(): value.strip() for name, value in pairs}
    _check(choice)
    return {name: cast(Backend, value) for name, value in choice.items()}


def _check(choice: Mapping[str, str]) -> None:
    if unknown := set(choice) - set(AGENT_NAMES):
        raise ConfigError(f"unknown agents {sorted(unknown)}; known: {', '.join(AGENT_NAMES)}")
    for name, value in choice.items():
        if value not in _VALID[name]:
            raise ConfigError(f"{name}={value}: use one of {', '.join(_VALID[name])}")


def needs_llm(backend: Backend | Mapping[str, Backend]) -> bool:
    """Some agent on this backend calls an LLM."""
    return any(b != "local" for b in ([backend] if isinstance(backend, str) else backend.values()))


def make_agents(
    backend: Backend | Mapping[str, Backend] = "local", endpoint: Endpoint | None = None
) -> list[Agent]:
    """The three analysts, each on the backend asked for (one for all, or per agent name)."""
    if isinstance(backend, str):  # one for all: llm-probs and llm-blend are sentiment's alone
        tokens_and_keywords = "llm" if backend.startswith("llm") else backend
        choice = {"tokenize": tokens_and_keywords, "keywords": tokens_and_keywords,
                  "sentiment": backend}  # fmt: skip
    else:
        choice = dict(backend)
    _check(choice)
    if needs_llm(choice) and endpoint is None:
        raise ConfigError("the llm backend needs an LLM (--llm local or a URL)")
    if endpoint is None:
        return [TokenizerAgent(), KeywordAgent(), SentimentAgent()]
    on = {name: choice.get(name, "local") for name in AGENT_NAMES}
    return [
        TokenizerAgent(ServerTokenizer(endpoint)) if on["tokenize"] == "llm" else TokenizerAgent(),
        LLMKeywordAgent(endpoint) if on["keywords"] == "llm" else KeywordAgent(),
        sentiment_agent(on["sentiment"], endpoint),
    ]


def sentiment_agent(backend: str, endpoint: Endpoint | None = None) -> Agent:
    """The sentiment analyst on one of `SENTIMENT_BACKENDS` (what `anabranch eval` compares)."""
    if backend not in SENTIMENT_BACKENDS:
        raise ConfigError(
            f"unknown sentiment backend {backend!r}; known: {', '.join(SENTIMENT_BACKENDS)}"
        )
    if backend == "local":
        return SentimentAgent()
    if endpoint is None:
        raise ConfigError(f"the {backend} backend needs an LLM (--llm local or a URL)")
    if backend == "llm-probs":
        return LLMLabelProbabilities(endpoint)
    if backend == "llm-blend":
        return BlendedSentiment(endpoint)
    return LLMSentimentAgent(endpoint)


def local_agents() -> list[Agent]:
    """The three analysts on local tools: no network, no model server."""
    return make_agents("local")
