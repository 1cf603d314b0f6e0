"""The rule planner cuts texts into chunks that fit a budget and sends each chunk to every agent."""

import pytest

from anabranch.agents.planner import RulePlanner
from anabranch.tools.chunking import split_into_chunks
from anabranch.tools.tokenizer import count_tokens
from anabranch.types import Task

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


async def test_planner_makes_one_subtask_per_agent_per_chunk():
    planner = RulePlanner(("a", "b", "c"), chunk_tokens=64)
    short = await planner.plan(Task(id="s", text="Nice phone."))
    assert [s.kind for s in short] == ["a", "b", "c"]
    long = await planner.plan(Task(id="l", text=LONG, instruction="be brief"))
    chunks = {s.chunk for s in long}
    assert len(long) == 3 * len(chunks) and len(chunks) > 5
    assert all(s.chunks == len(chunks) and s.instruction == "be brief" for s in long)
