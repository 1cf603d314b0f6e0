"""Sentiment with VADER: a lexicon model that ships with its package and runs offline."""

from __future__ import annotations

import asyncio
import functools
from typing import Literal

from vaderSentiment.vaderSentiment import SentimentIntensityAnalyzer

SentimentLabel = Literal["positive", "negative", "neutral"]
"""The three sentiment classes every sentiment tool must map to."""

# VADER's own recommended cut-offs on the compound score.
POSITIVE_AT = 0.05
NEGATIVE_AT = -0.05

_INLINE_CHARS = 2_000


def label_for(score: float) -> SentimentLabel:
    """The label for a compound score in [-1, 1]; used for merged scores too."""
    if score >= POSITIVE_AT:
        return "positive"
    if score <= NEGATIVE_AT:
        return "negative"
    return "neutral"


@functools.cache
def _analyzer() -> SentimentIntensityAnalyzer:
    # Loading the lexicon takes ~50 ms; do it once per process.
    return SentimentIntensityAnalyzer()


class VaderSentiment:
    name = "vader"

    def _score(self, text: str) -> float:
        return float(_analyzer().polarity_scores(text)["compound"]) if text.strip() else 0.0

    async def score(self, text: str) -> float:
        if len(text) < _INLINE_CHARS:
            return self._score(text)
        return await asyncio.to_thread(self._score, text)
