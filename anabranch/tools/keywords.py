"""Keyword extraction with YAKE: unsupervised, offline, no model to download."""

from __future__ import annotations

import asyncio
import re
from dataclasses import dataclass

import yake
from pydantic import BaseModel


class Keyword(BaseModel):
    """A word or short phrase of a text, with how much it matters."""

    term: str
    """As it is written in the text."""
    score: float
    """Relevance in [0, 1]; higher is more relevant, whatever the tool's own scale."""


@dataclass(frozen=True, slots=True)
class YakeKeywords:
    """YAKE scores are "lower is better" and unbounded; we map them to relevance in (0, 1]."""

    top_k: int = 10
    max_ngram: int = 3
    language: str = "en"

    name = "yake"

    def extract_sync(self, text: str) -> list[Keyword]:
        if not text.strip():
            return []
        extractor = yake.KeywordExtractor(lan=self.language, n=self.max_ngram, top=self.top_k)
        # YAKE returns numpy floats: cast before they reach JSON.
        return [
            Keyword(term=term, score=round(1.0 / (1.0 + float(score)), 6))
            for term, score in extractor.extract_keywords(text)
        ]

    async def extract(self, text: str) -> list[Keyword]:
        # YAKE is pure Python and slow on long texts: keep it off the event loop.
        return await asyncio.to_thread(self.extract_sync, text)


_WORD = re.compile("[^\\W_]+(?:['\u2019][^\\W_]+)*")
_SUFFIXES = ("ings", "ing", "ies", "ied", "es", "ed", "ly", "s")


def _stem(word: str) -> str:
    """A word without its commonest English inflection: enough to match `chargers` with
    `charger` or `crashed` with `crash`, not a linguist's stemmer."""
    for suffix in _SUFFIXES:
        if word.endswith(suffix) and len(word) - len(suffix) >= 3:
            return word[: -len(suffix)]
    return word


def occurs_in(term: str, text: str) -> bool:
    """Whether every word of `term` occurs in `text`, ignoring case and inflection."""
    return bool(grounded([term], text))


def grounded(terms: list[str], text: str) -> list[str]:
    """The terms whose every word occurs in `text` (its words read once for all of them)."""
    words = {_stem(w) for w in _WORD.findall(text.lower())}
    kept = []
    for term in terms:
        wanted = [_stem(w) for w in _WORD.findall(term.lower())]
        if wanted and all(w in words for w in wanted):
            kept.append(term)
    return kept
