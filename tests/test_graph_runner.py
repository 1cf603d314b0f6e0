import asyncio
import random
from dataclasses import dataclass
from typing import TypedDict

import pytest
from langgraph.graph import END, START, StateGraph

from anabranch import Answer, Task, TaskResult, build_fanout_graph, run_batch
from anabranch.agents.planner import RulePlanner
from anabranch.analysis import AnalysisRecord, SentimentOutput, local_agents, make_agents
from anabranch.analysis.records import ANALYSTS
from anabranch.errors import InputError
from anabranch.llm.endpoint import Endpoint
from anabranch.types import Subtask


@dataclass
class SlowSentiment:
    """A user-defined agent with random latency, so runs complete out of input order."""

    name: str = "sentiment"

    async def run(self, subtask: Subtask) -> Answer:
        await asyncio.sleep(random.uniform(0, 0.02))
        return Answer(SentimentOutput(label="neutral", score=0.0))


@dataclass
class Broken:
    name: str = "keywords"

    async def run(self, subtask: Subtask) -> Answer:
        raise RuntimeError(f"cannot handle {subtask.task_id}")


async def test_graph_runs_one_task_end_to_end():
    out = await build_fanout_graph(local_agents()).ainvoke(
        {"task": Task(id="t", text="I love this phone.")}
    )
    result = AnalysisRecord.of(out["result"])
    assert result.status == "ok" and result.subtasks == result.results == 3
    assert result.tokens[:2] == ["I", " love"] and result.sentiment == "positive"
    assert any(k.term.lower() == "phone" for k in result.keywords)


async def test_failing_agent_is_data_and_siblings_still_deliver():
    tokenizer, _, sentiment = local_agents()
    graph = build_fanout_graph([tokenizer, Broken(), sentiment])
    result = AnalysisRecord.of(
        (await graph.ainvoke({"task": Task(id="t", text="Great.")}))["result"]
    )
    assert result.status == "partial"
    (error,) = result.errors
    assert (error.kind, error.type, error.message) == (
        "keywords",
        "RuntimeError",
        "cannot handle t",
    )
    assert result.tokens and result.sentiment == "positive"


async def test_unknown_agent_and_failing_planner_become_errors():
    @dataclass
    class Planner:
        kinds: tuple

        async def plan(self, task):
            if task.text == "boom":
                raise ValueError("planner exploded")
            return [Subtask(task_id=task.id, kind=k, text=task.text) for k in self.kinds]

    graph = build_fanout_graph(local_agents(), Planner(("tokenize", "translate")))
    result = AnalysisRecord.of((await graph.ainvoke({"task": Task(id="t", text="hi")}))["result"])
    assert result.status == "partial" and result.errors[0].type == "LookupError"
    assert "translate" in result.errors[0].message and result.tokens == ["hi"]
    boom = (await graph.ainvoke({"task": Task(id="b", text="boom")}))["result"]
    assert boom.status == "error" and boom.errors[0].message == "planner exploded"


async def test_graph_drops_into_a_users_graph_as_a_subgraph():
    class Outer(TypedDict, total=False):
        task: Task
        result: TaskResult
        verdict: str

    def judge(state: Outer) -> dict:
        return {"verdict": f"{state['result'].task_id}:{state['result'].output('sentiment').label}"}

    builder = StateGraph(Outer)
    builder.add_node("analyze", build_fanout_graph(local_agents()))
    builder.add_node("judge", judge)
    builder.add_edge(START, "analyze")
    builder.add_edge("analyze", "judge")
    builder.add_edge("judge", END)
    out = await builder.compile().ainvoke({"task": Task(id="x", text="Awful service.")})
    assert out["verdict"] == "x:negative"


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


async def test_chunked_task_delivers_three_results_per_chunk():
    text = " ".join(f"Sentence {i} is fine and good." for i in range(60))
    graph = build_fanout_graph(local_agents(), RulePlanner(ANALYSTS, chunk_tokens=40))
    batch = run_batch([Task(id="long", text=text)], graph)
    (result,) = [AnalysisRecord.of(r) async for r in batch]
    assert result.chunks > 3 and result.subtasks == result.results == 3 * result.chunks
    assert "".join(result.tokens) == text


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


def test_graphs_and_batches_work_from_sync_code(faults):
    """LangGraph users embed graphs in sync code; an LLM-backed graph must run there too."""
    llm = Endpoint(faults.url, "fault")
    graph = build_fanout_graph(make_agents("llm", llm))
    out = graph.invoke({"task": Task(id="t", text="Sync callers are welcome.")})
    assert out["result"].status == "ok" and out["result"].usage.requests == 2
    updates = list(graph.stream({"task": Task(id="u", text="Streamed.")}, stream_mode="updates"))
    assert {node for update in updates for node in update} == {
        "planner", "tokenize", "keywords", "sentiment", "reducer"
    }  # fmt: skip
    batch = run_batch([Task(id=str(i), text="Fine.") for i in range(20)], graph, concurrency=4)
    results = list(batch)
    assert len(results) == 20 and batch.report.tasks_ok == 20


async def test_an_input_that_breaks_ends_the_batch_with_its_error():
    """Not data, and never a hang: the error reaches the caller."""

    def tasks():
        yield from (Task(id=f"t{i}", text="fine") for i in range(3))
        raise OSError("the disk went away")

    batch = run_batch(tasks(), build_fanout_graph(local_agents()), concurrency=4)
    with pytest.raises(OSError, match="disk went away"):
        async with asyncio.timeout(30):
            [r async for r in batch]
