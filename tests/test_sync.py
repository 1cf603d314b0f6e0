"""Sync callers get thin wrappers over the async graph and runner (graphs/sync.py)."""

from anabranch import Task, build_fanout_graph, run_batch
from anabranch.analysis import make_agents
from anabranch.llm.endpoint import Endpoint


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
