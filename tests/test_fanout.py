"""The fan-out graph: planner -> agents -> reducer, one task at a time, errors as data."""

from dataclasses import dataclass
from typing import TypedDict

from langgraph.graph import END, START, StateGraph

from anabranch import Answer, Task, TaskResult, build_fanout_graph, run_batch
from anabranch.agents.planner import RulePlanner
from anabranch.analysis import AnalysisRecord, local_agents
from anabranch.analysis.records import ANALYSTS
from anabranch.types import Subtask


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


async def test_chunked_task_delivers_three_results_per_chunk():
    text = " ".join(f"Sentence {i} is fine and good." for i in range(60))
    graph = build_fanout_graph(local_agents(), RulePlanner(ANALYSTS, chunk_tokens=40))
    batch = run_batch([Task(id="long", text=text)], graph)
    (result,) = [AnalysisRecord.of(r) async for r in batch]
    assert result.chunks > 3 and result.subtasks == result.results == 3 * result.chunks
    assert "".join(result.tokens) == text
