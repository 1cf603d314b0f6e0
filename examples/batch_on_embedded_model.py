"""A batch of tasks on the embedded local LLM: tokens, keywords and sentiment for each.

    python examples/batch_on_embedded_model.py [N]

Needs the embedded model once: `anabranch setup`.
"""

import asyncio
import itertools
import sys

import anabranch as ab
from anabranch.analysis import AnalysisRecord, build_analysis_graph
from anabranch.inputs import example_tasks
from anabranch.report import render_trace


async def main(n: int) -> None:
    tasks = list(itertools.islice(ab.read_tasks(example_tasks()), n))
    async with ab.open_endpoint(ab.LLMOptions(llm="local"), say=print) as llm:
        graph = build_analysis_graph(llm)  # the three analysts, on the LLM
        batch = ab.run_batch(tasks, graph, concurrency=8)
        async for result in batch:  # in completion order
            print(f"{result.task_id:<12} {result.status:<8} {AnalysisRecord.of(result).sentiment}")
    print(render_trace(batch.report))


if __name__ == "__main__":
    asyncio.run(main(int(sys.argv[1]) if len(sys.argv) > 1 else 12))
