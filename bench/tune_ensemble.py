"""The settings of the `llm-blend` sentiment backend, chosen on the project's tune split.

For each text of the tune part of `anabranch/data/sentiment_eval.jsonl`, takes VADER's compound
score and the model's P(positive) - P(negative) read off its first answer token (on the embedded
model, or a server given with --llm), then tries `Blend` (the backend's own combination: the
blended score is (VADER + weight x (model - lean)) / (1 + weight), neutral within the band) over
a grid of weights, leans and bands. It prints
VADER alone, the model alone, the best settings, and the grid around the settings that ship, so
that a plateau can be told from a lucky point. The held-out part is never read here: it is what
`anabranch eval` reports on.

With the embedded SmolLM2-135M, two runs (the server batches requests, so a text or two can
change between runs): VADER 70.2 %, the model alone 53.6 %, the best points 76.8 % and 77.5 %
(weights 0.5 to 1.5, leans 0.4 to 0.6, bands 0.15 to 0.25), the shipped settings (weight 1, lean
0.5, band 0.15) 76.2 % and 76.8 %, and at band 0.15 their neighbours 72.2 % to 76.8 %. Without
the lean (a plain average) the best weight is 0: the model's lean toward positive hid its worth.

    python bench/tune_ensemble.py [--llm local|URL]
"""

from __future__ import annotations

import argparse
import asyncio
import itertools

from anabranch.analysis import Blend, LLMLabelProbabilities
from anabranch.analysis.evaluation import builtin_set, read_labelled
from anabranch.llm.connect import LLMOptions, open_endpoint
from anabranch.tools.sentiment import VaderSentiment
from anabranch.types import Subtask

WEIGHTS = [0.0, 0.25, 0.5, 0.75, 1.0, 1.5, 2.0]
LEANS = [0.0, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6]
BANDS = [0.02, 0.05, 0.1, 0.15, 0.2, 0.25, 0.3]


async def features(llm: str) -> list[tuple[str, float, float]]:
    """(human label, VADER compound, model P(positive) - P(negative)) per tune text."""
    items = read_labelled(builtin_set(), split="tune").items
    async with open_endpoint(LLMOptions(llm=llm)) as endpoint:
        agent = LLMLabelProbabilities(endpoint)

        async def one(text: str) -> float:
            odds, _, _ = await agent.odds(Subtask(task_id="t", kind="sentiment", text=text))
            return odds["positive"] - odds["negative"]

        model = await asyncio.gather(*(one(item.text) for item in items))
    vader = [await VaderSentiment().score(item.text) for item in items]
    return [(i.label, v, m) for i, v, m in zip(items, vader, model, strict=True)]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--llm", default="local")
    rows = asyncio.run(features(parser.parse_args().llm))

    def agreement(weight: float, lean: float, band: float) -> float:
        blend = Blend(weight, lean, band)
        return sum(blend.output(v, m).label == gold for gold, v, m in rows) / len(rows)

    print(f"tune split, {len(rows)} texts")
    print(f"VADER alone (band 0.05): {agreement(0.0, 0.0, 0.05):.1%}")
    # The model alone: so much weight on it that VADER's share vanishes.
    model_alone = max(agreement(1e9, 0.0, b) for b in BANDS)
    print(f"model alone (best band): {model_alone:.1%}")
    grid = sorted(
        ((agreement(w, c, b), w, c, b) for w, c, b in itertools.product(WEIGHTS, LEANS, BANDS)),
        reverse=True,
    )
    for score, weight, lean, band in grid[:5]:
        print(f"weight {weight:g}, lean {lean:g}, band {band:g}: {score:.1%}")
    shipped = Blend()
    weight, lean, band = shipped.weight, shipped.lean, shipped.band
    print(f"shipped: weight {weight:g}, lean {lean:g}, band {band:g}: "
          f"{agreement(weight, lean, band):.1%}; around it (band across):")  # fmt: skip
    for w, c in itertools.product(
        (weight - 0.25, weight, weight + 0.25), (lean - 0.1, lean, lean + 0.1)
    ):
        cells = " ".join(f"{agreement(w, c, b):.1%}" for b in (band - 0.05, band, band + 0.05))
        print(f"  weight {w:g}, lean {c:g}: {cells}")


if __name__ == "__main__":
    main()
