"""The batch runner: every task delivered once, whatever the order, the input or the graph; the
executor it is given started, used and closed."""

import asyncio
import contextlib
import random
from dataclasses import dataclass

import pytest

from anabranch import Answer, Task, TaskResult, build_fanout_graph, run_batch
from anabranch.analysis import SentimentOutput, local_agents
from anabranch.errors import ConfigError, InputError, StateError
from anabranch.graphs.executor import InProcess
from anabranch.graphs.spec import GraphSpec
from anabranch.graphs.state import RunContext
from anabranch.types import Subtask


@dataclass
class SlowSentiment:
    """A user-defined agent with random latency, so runs complete out of input order."""

    name: str = "sentiment"

    async def run(self, subtask: Subtask) -> Answer:
        await asyncio.sleep(random.uniform(0, 0.02))
        return Answer(SentimentOutput(label="neutral", score=0.0))


async def test_runner_delivers_every_task_whatever_the_order():
    tokenizer, keywords, _ = local_agents()
    graph = build_fanout_graph([tokenizer, keywords, SlowSentiment()])
    tasks = [Task(id=f"t{i}", text=f"Task number {i} is here.") for i in range(100)]
    batch = run_batch(tasks, graph, concurrency=8)
    order = [r.task_id async for r in batch]
    assert sorted(order) == sorted(t.id for t in tasks)
    assert order != [t.id for t in tasks]  # random latencies reorder completions
    counts = [(s.input_count, s.output_count) for s in batch.report.stages]
    assert counts == [(100, 100), (100, 300), (300, 300), (300, 100), (100, 100)]
    assert batch.report.tasks_ok == 100


async def test_runner_turns_rejected_lines_and_crashing_graphs_into_results():
    class Crashing:
        async def ainvoke(self, state, context=None):
            raise RuntimeError("graph fell over")

    items = [Task(id="a", text="x"), InputError("f:2: not valid JSON", task_id="line-2")]
    batch = run_batch(items, Crashing(), concurrency=2)
    results = {r.task_id: r async for r in batch}
    assert results["a"].status == "error" and results["a"].errors[0].message == "graph fell over"
    assert results["line-2"].status == "rejected"
    assert (batch.report.tasks_failed, batch.report.tasks_rejected) == (1, 1)


async def test_a_slow_consumer_holds_the_workers_back():
    """Memory holds the runs in flight and a bounded number of results, not the whole batch."""
    drawn = 0

    def tasks():
        nonlocal drawn
        for i in range(500):
            drawn += 1
            yield Task(id=str(i), text="Fine.")

    batch = run_batch(tasks(), build_fanout_graph(local_agents()), concurrency=4)
    results = batch.__aiter__()
    await anext(results)
    await asyncio.sleep(0.5)  # the consumer dawdles; finished runs must not pile up
    assert drawn <= 4 * 3
    rest = [r async for r in results]
    assert len(rest) == 499 and drawn == 500


async def test_an_input_that_breaks_ends_the_batch_with_its_error():
    """Not data, and never a hang: the error reaches the caller."""

    def tasks():
        yield from (Task(id=f"t{i}", text="fine") for i in range(3))
        raise OSError("the disk went away")

    batch = run_batch(tasks(), build_fanout_graph(local_agents()), concurrency=4)
    with pytest.raises(OSError, match="disk went away"):
        async with asyncio.timeout(30):
            [r async for r in batch]


@dataclass
class Recording:
    """An executor of the user's own: runs in this process, and notes what the runner asks."""

    calls: list = None  # type: ignore[assignment]
    inner: InProcess = None  # type: ignore[assignment]

    def __post_init__(self):
        self.calls, self.inner = [], InProcess()

    async def start(self, graph, concurrency):
        self.calls.append(("start", concurrency))
        await self.inner.start(graph, concurrency)

    async def run(self, task: Task, context: RunContext) -> TaskResult:
        self.calls.append(("run", task.id))
        return await self.inner.run(task, context)

    async def close(self):
        self.calls.append(("close",))
        await self.inner.close()


async def test_an_executor_of_ones_own_is_started_given_each_task_and_closed():
    executor = Recording()
    spec = GraphSpec("anabranch.analysis.recipe:analysis_graph", {"llm": None})
    batch = run_batch([Task(id=f"t{i}", text="Fine.") for i in range(5)], spec, concurrency=3,
                      executor=executor)  # fmt: skip
    assert sorted([r.task_id async for r in batch]) == [f"t{i}" for i in range(5)]
    assert executor.calls[0] == ("start", 3) and executor.calls[-1] == ("close",)
    assert sorted(c[1] for c in executor.calls if c[0] == "run") == [f"t{i}" for i in range(5)]
    assert batch.report.tasks_ok == 5


async def test_an_executor_is_closed_when_the_consumer_stops_early():
    executor = Recording()
    tasks = [Task(id=str(i), text="Fine.") for i in range(50)]
    batch = run_batch(tasks, build_fanout_graph(local_agents()), concurrency=2, executor=executor)
    async with contextlib.aclosing(batch.__aiter__()) as results:
        await anext(results)
    assert executor.calls[-1] == ("close",)
    assert sum(c[0] == "run" for c in executor.calls) < 50


async def test_the_report_before_the_end_is_a_state_error_not_a_config_error():
    batch = run_batch([Task(id="t", text="Fine.")], build_fanout_graph(local_agents()))
    with pytest.raises(StateError, match="iterated to its end"):
        batch.report  # noqa: B018 - the property is what is tried
    [r async for r in batch]
    assert batch.report.tasks_ok == 1
    with pytest.raises(ConfigError, match="concurrency"):
        run_batch([], build_fanout_graph(local_agents()), concurrency=0)


async def test_an_executor_that_fails_to_start_is_still_closed():
    """A cluster joined, some workers up, then one cannot build the graph: nothing is left
    running."""

    class FailsToStart(Recording):
        async def start(self, graph, concurrency):
            await super().start(graph, concurrency)
            raise ConfigError("a worker could not build the graph")

    executor = FailsToStart()
    batch = run_batch(
        [Task(id="t", text="Fine.")], build_fanout_graph(local_agents()), executor=executor
    )
    with pytest.raises(ConfigError, match="could not build"):
        [r async for r in batch]
    assert executor.calls == [("start", 16), ("close",)]
