"""Would VADER and the model, combined, beat VADER? Measured on the project's tune split.

For each text of the tune part of `anabranch/data/sentiment_eval.jsonl`, takes VADER's compound
score and the model's P(positive) - P(negative) (the `llm-probs` backend, on the embedded model or
a server given with --llm), then tries every weight and band on a grid and prints the best by
agreement with the human labels, beside VADER alone and the model alone (the combined score is
(VADER + weight x model) / (1 + weight), neutral within the band). The held-out part is never read
here: it is what `anabranch eval` reports on. With the embedded SmolLM2-135M the best weight is 0:
the model adds nothing VADER lacks, so no such ensemble ships; a stronger model may differ.

    python bench/tune_ensemble.py [--llm local|URL]
"""

from __future__ import annotations

import argparse
import asyncio

from anabranch.agents.analysts import LLMLabelProbabilities
from anabranch.evaluation import builtin_set, read_labelled
from anabranch.llm.connect import LLMOptions, open_endpoint
from anabranch.tools.sentiment import VaderSentiment
from anabranch.types import SentimentOutput, Subtask

WEIGHTS = [0.0, 0.25, 0.5, 0.75, 1.0, 1.5, 2.0, 3.0, 4.0]
BANDS = [0.0, 0.02, 0.05, 0.1, 0.15, 0.2, 0.3]


def label(score: float, band: float) -> str:
    return "positive" if score >= band else "negative" if score <= -band else "neutral"


async def features(llm: str) -> list[tuple[str, float, float]]:
    """(human label, VADER compound, model score) per tune text."""
    items = read_labelled(builtin_set(), split="tune").items
    async with open_endpoint(LLMOptions(llm=llm)) as endpoint:
        agent = LLMLabelProbabilities(endpoint)

        async def one(text: str) -> float:
            answer = await agent.run(Subtask(task_id="t", kind="sentiment", text=text))
            assert isinstance(answer.output, SentimentOutput)
            return answer.output.score

        model = await asyncio.gather(*(one(item.text) for item in items))
    vader = [await VaderSentiment().score(item.text) for item in items]
    return [(i.label, v, m) for i, v, m in zip(items, vader, model, strict=True)]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--llm", default="local")
    rows = asyncio.run(features(parser.parse_args().llm))

    def agreement(weight: float, band: float) -> float:
        hits = sum(label((v + weight * m) / (1 + weight), band) == gold for gold, v, m in rows)
        return hits / len(rows)

    grid = sorted(((agreement(w, b), w, b) for w in WEIGHTS for b in BANDS), reverse=True)
    print(f"tune split, {len(rows)} texts")
    print(f"VADER alone (band 0.05): {agreement(0.0, 0.05):.1%}")
    model_alone = max(sum(label(m, b) == g for g, _, m in rows) / len(rows) for b in BANDS)
    print(f"model alone (best band): {model_alone:.1%}")
    for score, weight, band in grid[:5]:
        print(f"weight {weight:g}, band {band:g}: {score:.1%}")


if __name__ == "__main__":
    main()
