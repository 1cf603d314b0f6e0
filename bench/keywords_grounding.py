"""How many LLM keywords occur in the text they were drawn from, without and with grounding.

Runs the LLM keyword agent over the texts of the project's labelled set (held-out part by
default) on the embedded model, or a server given with --llm, twice: as the model answers
(`grounded=False`) and grounded (inventions dropped, YAKE filling in below three). Prints the
share of keywords that occur in their text, the inventions dropped, and the texts left with fewer
than three keywords.

    python bench/keywords_grounding.py [--llm local|URL] [--split held-out|tune|all]
"""

from __future__ import annotations

import argparse
import asyncio

from anabranch.analysis import KeywordsOutput, LLMKeywordAgent
from anabranch.analysis.evaluation import builtin_set, read_labelled
from anabranch.llm.connect import LLMOptions, open_endpoint
from anabranch.tools.keywords import occurs_in
from anabranch.types import Subtask


async def measure(llm: str, split: str | None) -> None:
    items = read_labelled(builtin_set(), split=split).items
    async with open_endpoint(LLMOptions(llm=llm)) as endpoint:
        for grounded in (False, True):
            agent = LLMKeywordAgent(endpoint, grounded=grounded)

            async def one(text: str, agent: LLMKeywordAgent = agent) -> KeywordsOutput | None:
                try:
                    answer = await agent.run(Subtask(task_id="t", kind="keywords", text=text))
                except Exception:  # noqa: BLE001 - a failed call is counted, not fatal
                    return None
                assert isinstance(answer.output, KeywordsOutput)
                return answer.output

            outputs = await asyncio.gather(*(one(item.text) for item in items))
            pairs = [(item.text, out) for item, out in zip(items, outputs, strict=True) if out]
            terms = [(text, k.term) for text, out in pairs for k in out.keywords]
            occurring = sum(occurs_in(term, text) for text, term in terms)
            invented = sum(out.invented for _, out in pairs)
            short = sum(len(out.keywords) < 3 for _, out in pairs)
            print(
                f"grounded={grounded}: {len(pairs)}/{len(items)} texts answered, "
                f"{len(terms)} keywords, {occurring / max(len(terms), 1):.1%} occur in their "
                f"text; {invented} inventions dropped; {short} texts with fewer than 3",
                flush=True,
            )


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--llm", default="local")
    parser.add_argument("--split", default="held-out")
    args = parser.parse_args()
    asyncio.run(measure(args.llm, None if args.split == "all" else args.split))


if __name__ == "__main__":
    main()
