"""The text analysis is an application of the core: its agents' merge rules, its flat record,
and the results.jsonl it writes, field for field what anabranch 0.1 wrote."""

import json
from pathlib import Path

import pytest
from conftest import run_cli

from anabranch import Reducer, Subtask, SubtaskResult, Task, TaskResult
from anabranch.agents.base import Part
from anabranch.analysis import (
    AnalysisRecord,
    Keyword,
    KeywordsOutput,
    SentimentOutput,
    local_agents,
)
from anabranch.analysis.outputs import merge_keywords, merge_sentiment

DATA = Path(__file__).parent / "data"


def _ok(kind, chunk, output, tokens=10):
    return SubtaskResult(
        task_id="t", kind=kind, chunk=chunk, chunk_tokens=tokens, status="ok", output=output
    )


def test_the_analysts_merge_chunks_in_order():
    task = Task(id="t", text="ignored by the reducer")
    subtasks = [
        Subtask(task_id="t", kind=k, chunk=c, chunks=2, text="")
        for c in (0, 1)
        for k in ("tokenize", "keywords", "sentiment")
    ]
    results = [  # delivered out of order, as concurrent branches do
        _ok("tokenize", 1, {"tokens": [" c"], "count": 1, "tokenizer": "x"}),
        _ok("sentiment", 1, {"label": "negative", "score": -0.5}, tokens=30),
        _ok("keywords", 0, {"keywords": [{"term": "Battery", "score": 0.9}], "invented": 2}),
        _ok("tokenize", 0, {"tokens": ["a", " b"], "count": 2, "tokenizer": "x"}),
        _ok("keywords", 1, {"keywords": [{"term": "battery", "score": 0.5},
                                         {"term": "screen", "score": 0.8}], "invented": 1}),
        _ok("sentiment", 0, {"label": "positive", "score": 0.9}, tokens=10),
    ]  # fmt: skip
    result = AnalysisRecord.of(Reducer(local_agents()).reduce(task, subtasks, results))
    assert result.status == "ok" and result.chunks == 2 and result.subtasks == result.results == 6
    assert result.tokens == ["a", " b", " c"] and result.token_count == 3
    assert [(k.term, k.score) for k in result.keywords] == [("Battery", 0.7), ("screen", 0.4)]
    assert result.keywords_invented == 3  # the model's inventions, dropped, still counted
    assert result.sentiment_score == pytest.approx((0.9 * 10 - 0.5 * 30) / 40)
    assert result.sentiment == "negative"


def test_keyword_and_sentiment_rules():
    one = KeywordsOutput(keywords=[Keyword(term="A", score=1.0), Keyword(term="a", score=0.2)])
    merged = merge_keywords([Part(one, chunk=0, chunks=1, tokens=3)], top=5)
    assert [(k.term, k.score) for k in merged.keywords] == [("A", 1.0)]  # a term counts once
    neutral = Part(SentimentOutput(label="neutral", score=0.2), chunk=0, chunks=2, tokens=0)
    assert merge_sentiment([neutral, neutral]).score == 0.2  # no lengths: equal weights


def test_a_failed_analyst_leaves_the_others_in_the_record():
    task = Task(id="t", text="x")
    subtasks = [Subtask(task_id="t", kind=k, text="x") for k in ("tokenize", "sentiment")]
    results = [
        _ok("tokenize", 0, {"label": "neutral"}),  # not a TokensOutput
        _ok("sentiment", 0, {"label": "positive", "score": 0.5}),
    ]
    record = AnalysisRecord.of(Reducer(local_agents()).reduce(task, subtasks, results))
    assert record.status == "partial" and record.sentiment == "positive"
    assert record.tokenizer is None and record.tokens == []
    assert [(e.kind, e.type) for e in record.errors] == [("tokenize", "InvalidOutput")]


def test_results_jsonl_keeps_the_fields_and_values_anabranch_0_1_wrote(tmp_path):
    out = tmp_path / "results.jsonl"
    done = run_cli("run", str(DATA / "analysis_v0_1_tasks.jsonl"), "--out", str(out),
                   "--backend", "local")  # fmt: skip
    assert done.returncode == 0, done.stderr
    written = [json.loads(line) for line in out.read_text().splitlines()]
    expected = [json.loads(line) for line in (DATA / "analysis_v0_1_results.jsonl").open()]
    by_id = {r["task_id"]: r for r in expected}
    assert len(written) == len(expected) == 15
    for record in written:
        assert list(record) == list(by_id[record["task_id"]])  # the same fields, in order
        assert record == by_id[record["task_id"]]  # and the same values


def test_a_result_written_by_0_1_reads_back_as_typed_outputs():
    lines = (DATA / "analysis_v0_1_results.jsonl").read_text().splitlines()
    for line in lines:
        old = json.loads(line)
        result = TaskResult.model_validate_json(line)
        assert AnalysisRecord.of(result).model_dump(mode="json") == old
        if old["sentiment"] is not None:
            sentiment = result.output("sentiment")
            assert isinstance(sentiment, SentimentOutput)
            assert sentiment.label == old["sentiment"]
