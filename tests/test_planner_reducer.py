import pytest

from anabranch.agents.planner import RulePlanner
from anabranch.agents.reducer import Reducer, merge_keywords, weighted_sentiment
from anabranch.tools.chunking import split_into_chunks
from anabranch.tools.tokenizer import count_tokens
from anabranch.types import (
    Keyword,
    KeywordsOutput,
    SentimentOutput,
    Subtask,
    SubtaskError,
    SubtaskResult,
    Task,
)

LONG = " ".join(f"Sentence {i} talks about topic {i % 7} at length." for i in range(120))


def test_short_text_is_one_chunk():
    (chunk,) = split_into_chunks("Short text.", budget=64)
    assert chunk.text == "Short text." and chunk.tokens == count_tokens("Short text.")


def test_long_text_is_cut_within_budget_and_loses_no_sentence():
    chunks = split_into_chunks(LONG, budget=64)
    assert len(chunks) > 5
    assert all(c.tokens == count_tokens(c.text) <= 64 for c in chunks)
    assert "".join(c.text for c in chunks) == LONG


def test_overlong_sentence_is_cut_at_token_boundaries():
    text = "word " * 300
    chunks = split_into_chunks(text, budget=50)
    assert all(c.tokens <= 50 for c in chunks)
    assert "".join(c.text for c in chunks) == text


def test_bad_budget_is_refused():
    with pytest.raises(ValueError, match="at least 1"):
        split_into_chunks("x", budget=0)


async def test_planner_makes_three_subtasks_per_chunk():
    planner = RulePlanner(chunk_tokens=64)
    short = await planner.plan(Task(id="s", text="Nice phone."))
    assert [s.kind for s in short] == ["tokenize", "keywords", "sentiment"]
    long = await planner.plan(Task(id="l", text=LONG, instruction="be brief"))
    chunks = {s.chunk for s in long}
    assert len(long) == 3 * len(chunks) and len(chunks) > 5
    assert all(s.chunks == len(chunks) and s.instruction == "be brief" for s in long)


def _ok(kind, chunk, output, tokens=10):
    return SubtaskResult(
        task_id="t", kind=kind, chunk=chunk, chunk_tokens=tokens, status="ok", output=output
    )


def test_reducer_merges_chunks_in_order():
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
        _ok(
            "keywords",
            1,
            {
                "keywords": [{"term": "battery", "score": 0.5}, {"term": "screen", "score": 0.8}],
                "invented": 1,
            },
        ),
        _ok("sentiment", 0, {"label": "positive", "score": 0.9}, tokens=10),
    ]
    result = Reducer().reduce(task, subtasks, results)
    assert result.status == "ok" and result.chunks == 2 and result.subtasks == result.results == 6
    assert result.tokens == ["a", " b", " c"] and result.token_count == 3
    assert [(k.term, k.score) for k in result.keywords] == [("Battery", 0.7), ("screen", 0.4)]
    assert result.keywords_invented == 3  # the model's inventions, dropped, still counted
    assert result.sentiment_score == pytest.approx((0.9 * 10 - 0.5 * 30) / 40)
    assert result.sentiment == "negative"


def test_reducer_reports_failed_and_missing_subtasks():
    task = Task(id="t", text="x")
    subtasks = [
        Subtask(task_id="t", kind=k, text="x") for k in ("tokenize", "keywords", "sentiment")
    ]
    failed = SubtaskResult(
        task_id="t",
        kind="keywords",
        status="error",
        error=SubtaskError(kind="keywords", type="LLMTimeoutError", message="slow", attempts=3),
    )
    ok = _ok("tokenize", 0, {"tokens": ["x"], "count": 1, "tokenizer": "x"})
    result = Reducer().reduce(task, subtasks, [ok, failed])
    assert result.status == "partial"
    assert sorted(e.type for e in result.errors) == ["LLMTimeoutError", "MissingResult"]
    assert result.tokens == ["x"] and result.sentiment is None
    all_failed = Reducer().reduce(task, subtasks, [failed])
    assert all_failed.status == "error"


def test_keyword_and_sentiment_helpers():
    merged = merge_keywords(
        [KeywordsOutput(keywords=[Keyword(term="A", score=1.0), Keyword(term="a", score=0.2)])],
        chunks=1,
        top=5,
    )
    assert [(k.term, k.score) for k in merged] == [("A", 1.0)]  # a chunk counts a term once
    assert weighted_sentiment([(SentimentOutput(label="neutral", score=0.2), 0)] * 2) == 0.2


def test_an_output_the_merge_cannot_read_is_an_error_not_a_crash():
    task = Task(id="t", text="x")
    subtasks = [Subtask(task_id="t", kind=k, text="x") for k in ("tokenize", "sentiment")]
    results = [
        _ok("tokenize", 0, {"label": "neutral"}),  # not a TokensOutput
        _ok("sentiment", 0, {"label": "positive", "score": 0.5}),
    ]
    result = Reducer().reduce(task, subtasks, results)
    assert result.status == "partial" and result.sentiment == "positive"
    assert [(e.kind, e.type) for e in result.errors] == [("tokenize", "InvalidOutput")]
