"""The blend: VADER and the model's token probabilities averaged, the default sentiment with
an LLM (it agreed best with human labels of the backends measured)."""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass, field, replace

from anabranch.agents.base import Answer
from anabranch.analysis.agents import SentimentMerge
from anabranch.analysis.llm_agents import LLMLabelProbabilities, LLMSentimentAgent, NoProbabilities
from anabranch.analysis.outputs import SentimentOutput
from anabranch.llm.endpoint import Endpoint
from anabranch.telemetry import fell_back
from anabranch.tools.sentiment import POSITIVE_AT, VaderSentiment, label_for
from anabranch.types import Subtask, Usage

logger = logging.getLogger(__name__)


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
class BlendedSentiment(SentimentMerge):
    """VADER's compound score and the model's P(positive) - P(negative), averaged (`Blend`).

    Neither alone is as good: VADER misses what its lexicon lacks (sarcasm, domain words), and a
    small model leans positive (SmolLM2-135M calls 121 of the 151 tuning texts positive) yet
    often tells the sign right where VADER sees no feeling.

    A server without token probabilities gets the model's JSON judgement (its signed
    confidence, no lean taken off) in their place, with a warning, after one request that finds
    out; the endpoint keeps what it found (`Learnt.logprobs`), in its memory when it has one,
    so the next process does not ask again. Each such subtask is a fallback the run's trace
    counts."""

    endpoint: Endpoint
    blend: Blend = field(default_factory=Blend)
    """How the two are combined."""
    name: str = "sentiment"

    def __post_init__(self) -> None:
        self._probabilities = LLMLabelProbabilities(self.endpoint)
        self._judgement = LLMSentimentAgent(self.endpoint)
        self._warned = False

    async def run(self, subtask: Subtask) -> Answer:
        if not subtask.text.strip():
            return Answer(SentimentOutput(label="neutral", score=0.0))
        vader = await VaderSentiment().score(subtask.text)
        spent = Usage()
        knowledge = self.endpoint.knowledge
        if knowledge.now.logprobs is not False:
            try:
                odds, usage, attempts = await self._probabilities.odds(subtask)
            except NoProbabilities as exc:
                knowledge.learn(logprobs=False)
                if not self._warned:  # once, not by every call in flight beside this one
                    self._warned = True
                    logger.warning("%s: %s; sentiment blends the model's JSON judgement instead",
                                   self.endpoint.public_url, exc)  # fmt: skip
                spent = exc.usage
            else:
                knowledge.learn(logprobs=True)
                model = odds["positive"] - odds["negative"]
                return Answer(self.blend.output(vader, model), usage, attempts)
        fell_back(
            self.name, "the model's JSON judgement", "the server sends no token probabilities"
        )
        judged = await self._judgement.run(subtask)
        assert isinstance(judged.output, SentimentOutput)
        blend = replace(self.blend, lean=0.0)  # no lean measured for the JSON judgement
        output = blend.output(vader, judged.output.score)
        return Answer(output, spent + judged.usage, spent.requests + judged.attempts)
