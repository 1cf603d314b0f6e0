"""A chain of specialists on the embedded local LLM, ending in a Chain Execution Results report.

python examples/chain_of_specialists.py "Your question" [report.md]
"""

import asyncio
import dataclasses
import sys
from pathlib import Path

import anabranch as ab
from anabranch.agents.specialists import DEFAULT_CHAIN
from anabranch.chain_report import render_chain_report
from anabranch.events import Event, StepStarted, TextDelta
from anabranch.graphs.chain import run_specialists


def show(event: Event) -> None:
    if isinstance(event, StepStarted):
        print(f"\n## Step {event.step}: {event.specialist}")
    elif isinstance(event, TextDelta):
        print(event.text, end="", flush=True)


async def main(prompt: str, out: Path) -> None:
    # Short steps keep the example quick; drop the replace for full answers.
    team = [dataclasses.replace(s, max_tokens=80) for s in DEFAULT_CHAIN]
    options = ab.LLMOptions(llm="local", limits=ab.Limits(concurrency=1))
    async with ab.open_endpoint(options) as llm:
        result = await run_specialists(prompt, team, llm, on_event=show)
    out.write_text(render_chain_report(result), encoding="utf-8")
    print(f"\n\ncomplete: {result.complete}; report: {out}")


if __name__ == "__main__":
    question = sys.argv[1] if len(sys.argv) > 1 else "How do I make a batch job restartable?"
    asyncio.run(main(question, Path(sys.argv[2] if len(sys.argv) > 2 else "report.md")))
