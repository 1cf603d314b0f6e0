"""Which analysts run where: the `backend` choice (local, llm, llm-probs, llm-blend, or per
agent) and the agents it makes."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Literal, cast

from anabranch.agents.base import Agent
from anabranch.analysis.agents import KeywordAgent, SentimentAgent, ServerTokenizer, TokenizerAgent
from anabranch.analysis.blend import BlendedSentiment
from anabranch.analysis.llm_agents import LLMKeywordAgent, LLMLabelProbabilities, LLMSentimentAgent
from anabranch.errors import ConfigError
from anabranch.llm.endpoint import Endpoint

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
        raise ConfigError("the llm backend needs an endpoint (an LLM server)")
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
        raise ConfigError(f"the {backend} backend needs an endpoint (an LLM server)")
    if backend == "llm-probs":
        return LLMLabelProbabilities(endpoint)
    if backend == "llm-blend":
        return BlendedSentiment(endpoint)
    return LLMSentimentAgent(endpoint)


def local_agents() -> list[Agent]:
    """The three analysts on local tools: no network, no model server."""
    return make_agents("local")
