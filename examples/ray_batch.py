"""Your own graph on a Ray cluster: give `run_batch` a recipe instead of a compiled graph.

    python examples/ray_batch.py                 # a local cluster of two workers
    python examples/ray_batch.py auto            # the Ray cluster this machine belongs to

A compiled graph holding an endpoint cannot travel to other processes, so each worker builds its
own from a factory function named `module:function`. The factory may take `share`: the limits
you give an endpoint there are the whole cluster's, and `share.limits(...)` is this worker's
part. Needs `pip install 'anabranch[ray]'`; this one runs offline (local analysts only).
"""

import asyncio
import sys
from dataclasses import dataclass
from pathlib import Path

from pydantic import BaseModel

import anabranch as ab
from anabranch.analysis import local_agents
from anabranch.graphs.cluster import RayExecutor
from anabranch.graphs.spec import Share
from anabranch.graphs.state import Graph


class Length(BaseModel):
    """How long the text is, in words."""

    words: int


@dataclass
class WordCounter:
    """An agent of your own: any object with a `name` and an async `run`."""

    name: str = "words"
    output_type = Length

    async def run(self, subtask: ab.Subtask) -> ab.Answer:
        return ab.Answer(Length(words=len(subtask.text.split())))


def my_graph(share: Share | None = None) -> Graph:
    """Built once on each worker. An LLM agent would get an endpoint here, for instance
    `ab.Endpoint(url, model, limits=share.limits(ab.Limits(concurrency=64, rpm=3000)))`."""
    return ab.build_fanout_graph([*local_agents(), WordCounter()])


async def main(address: str | None) -> None:
    import ray

    # The workers import this file as the module `ray_batch`: ship its folder to them.
    ray.init(address=address, runtime_env={"working_dir": str(Path(__file__).parent)},
             include_dashboard=False, configure_logging=False)  # fmt: skip
    tasks = [ab.Task(id=f"t{i}", text="Ray runs this graph on two workers. " * (i % 5 + 1))
             for i in range(40)]  # fmt: skip
    spec = ab.GraphSpec("ray_batch:my_graph")
    executor = RayExecutor(workers=2)
    batch = ab.run_batch(tasks, spec, concurrency=16, executor=executor)  # 8 on each worker
    words = {r.task_id: r.output("words")[0].words async for r in batch}
    print(f"{len(words)} tasks delivered by the cluster; words in t0..t4:",
          [words[f"t{i}"] for i in range(5)])  # fmt: skip
    ray.shutdown()


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1] if len(sys.argv) > 1 else None))
