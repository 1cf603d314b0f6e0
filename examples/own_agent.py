"""Your own agent beside the built-in ones: any object with a `name` and an async `run`.

    python examples/own_agent.py

Declare `output_type` and `result.output(name)` gives your model back (one per chunk, or
merged when the agent has a `merge` rule). Runs offline.
"""

import asyncio
from dataclasses import dataclass

from pydantic import BaseModel

import anabranch as ab
from anabranch.analysis import AnalysisRecord, local_agents


class Shouting(BaseModel):
    """What the agent found: how much of the text is in capitals."""

    capital_share: float


@dataclass
class ShoutingDetector:
    """Counts capital letters; an agent may call anything, an LLM included."""

    name: str = "shouting"
    output_type = Shouting

    async def run(self, subtask: ab.Subtask) -> ab.Answer:
        letters = [c for c in subtask.text if c.isalpha()]
        share = sum(c.isupper() for c in letters) / len(letters) if letters else 0.0
        return ab.Answer(Shouting(capital_share=round(share, 3)))


async def main() -> None:
    graph = ab.build_fanout_graph([*local_agents(), ShoutingDetector()])
    tasks = [
        ab.Task(id="calm", text="The parcel arrived on time."),
        ab.Task(id="loud", text="THIS IS THE WORST SERVICE EVER!"),
    ]
    async for result in ab.run_batch(tasks, graph):
        (shouting,) = result.output("shouting")  # one chunk: one Shouting
        print(result.task_id, AnalysisRecord.of(result).sentiment, shouting.capital_share)


if __name__ == "__main__":
    asyncio.run(main())
