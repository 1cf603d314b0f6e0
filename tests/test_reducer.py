"""The reducer knows no agent: each agent's output type and merge rule make the task result."""

from collections.abc import Sequence
from dataclasses import dataclass

import pytest
from typed_agents import Shout, Shouter, Summarizer, Summary, typed_graph

from anabranch import (
    Answer,
    Journal,
    Reducer,
    Subtask,
    SubtaskResult,
    Task,
    TaskResult,
    build_fanout_graph,
    run_batch,
)
from anabranch.graphs.runner import Resume
from anabranch.types import SubtaskError

LONG = " ".join(f"Sentence {i} talks about topic {i % 7} at length." for i in range(12))


def _ok(kind, chunk, output):
    return SubtaskResult(task_id="t", kind=kind, chunk=chunk, status="ok", output=output)


async def test_a_users_agent_output_comes_back_typed_and_merged_over_chunks():
    result = (await typed_graph().ainvoke({"task": Task(id="t", text=LONG)}))["result"]
    assert result.status == "ok" and result.chunks > 2
    summary = result.output("summary")
    assert isinstance(summary, Summary)
    assert summary.words == len(LONG.split()) and summary.text.count(" / ") == result.chunks - 1
    shouts = result.output("shout")  # no merge rule: one per chunk, in order, typed
    assert [type(s) for s in shouts] == [Shout] * result.chunks
    assert shouts[0].loud == LONG[:10].upper()
    assert result.outputs["summary"] == summary.model_dump()  # the JSON form, for files


async def test_typed_outputs_survive_json_and_the_journal(tmp_path):
    tasks = [Task(id=f"t{i}", text=LONG[: 40 * (i + 1)]) for i in range(5)]
    with Journal(tmp_path / "j.sqlite") as journal:
        resume = Resume(journal, run_id="r")
        first = [r async for r in run_batch(tasks, typed_graph(), resume=resume)]
        again = run_batch(tasks, typed_graph(), resume=resume)
        replayed = [r async for r in again]
    assert again.report.tasks_from_journal == 5  # nothing ran the second time
    before = {r.task_id: r.output("summary") for r in first}
    after = {r.task_id: r.output("summary") for r in replayed}
    assert after == before and all(isinstance(s, Summary) for s in after.values())
    read_back = TaskResult.model_validate_json(first[0].model_dump_json())
    assert isinstance(read_back.output("summary"), Summary)


async def test_an_output_that_fails_its_model_is_an_error_not_a_crash():
    task = Task(id="t", text="x")
    subtasks = [Subtask(task_id="t", kind=k, text="x") for k in ("summary", "shout")]
    results = [_ok("summary", 0, {"label": "neutral"}), _ok("shout", 0, {"loud": "X"})]
    result = Reducer([Summarizer(), Shouter()]).reduce(task, subtasks, results)
    assert result.status == "partial" and result.output("shout")[0].loud == "X"
    assert [(e.kind, e.type) for e in result.errors] == [("summary", "InvalidOutput")]
    with pytest.raises(KeyError, match="summary: InvalidOutput"):
        result.output("summary")


def test_failed_and_missing_subtasks_are_reported():
    task = Task(id="t", text="x")
    subtasks = [Subtask(task_id="t", kind=k, text="x") for k in ("summary", "shout", "other")]
    failed = SubtaskResult(
        task_id="t", kind="shout", status="error",
        error=SubtaskError(kind="shout", type="LLMTimeoutError", message="slow", attempts=3),
    )  # fmt: skip
    ok = _ok("summary", 0, {"text": "a", "words": 1})
    result = Reducer([Summarizer()]).reduce(task, subtasks, [ok, failed])
    assert result.status == "partial"
    assert sorted(e.type for e in result.errors) == ["LLMTimeoutError", "MissingResult"]
    assert result.output("summary") == Summary(text="a", words=1)
    assert Reducer([Summarizer()]).reduce(task, subtasks, [failed]).status == "error"


def test_an_agent_without_a_declared_type_keeps_its_json_per_chunk():
    task = Task(id="t", text="x")
    subtasks = [Subtask(task_id="t", kind="raw", chunk=c, chunks=2, text="") for c in (0, 1)]
    results = [_ok("raw", 1, {"n": 2}), _ok("raw", 0, {"n": 1})]
    result = Reducer().reduce(task, subtasks, results)
    assert result.output("raw") == [{"n": 1}, {"n": 2}] and "raw" not in result.output_types


def test_a_merge_rule_that_raises_is_an_error_record():
    @dataclass
    class BadMerge(Summarizer):
        def merge(self, parts: Sequence) -> Summary:
            raise ZeroDivisionError("no parts")

    task = Task(id="t", text="x")
    subtasks = [Subtask(task_id="t", kind="summary", text="x")]
    result = Reducer([BadMerge()]).reduce(
        task, subtasks, [_ok("summary", 0, {"text": "a", "words": 1})]
    )
    assert result.status == "error" and result.errors[0].type == "ZeroDivisionError"


async def test_a_reducer_of_ones_own_replaces_the_default():
    @dataclass
    class CountingReducer:
        def reduce(self, task, subtasks, results):
            return TaskResult(task_id=task.id, status="ok", outputs={"n": len(results)},
                              subtasks=len(subtasks), results=len(results))  # fmt: skip

    @dataclass
    class Echo:
        name: str = "echo"

        async def run(self, subtask: Subtask) -> Answer:
            return Answer(Shout(loud=subtask.text))

    graph = build_fanout_graph([Echo()], reducer=CountingReducer())
    result = (await graph.ainvoke({"task": Task(id="t", text="hi")}))["result"]
    assert result.outputs == {"n": 1}
