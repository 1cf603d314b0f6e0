"""Generations that cannot run away: a loop until max_tokens is asked again, then an error; a
fallback is said with its count."""

import json

import pytest

from anabranch import Task
from anabranch.agents.planner import LLMPlanner
from anabranch.errors import LLMRunawayError
from anabranch.journal import Journal
from anabranch.llm.endpoint import Endpoint
from anabranch.llm.runaway import REROLL_TEMPERATURE, repeated_tail
from anabranch.llm.settings import RetryPolicy
from anabranch.telemetry import TimelineRecorder
from anabranch.telemetry.switch import RECORDER
from anabranch.testing.fault_bodies import LOOP_PIECE
from tests.conftest import run_cli

HI = [{"role": "user", "content": "hi"}]


def test_a_tail_that_repeats_is_found_and_prose_is_not():
    loop = '{"agents": ["sentiment", ' + '"sentiment", ' * 30 + '"senti'
    assert repeated_tail(loop) == '"sentiment", '
    assert repeated_tail("ha" * 40) == "ha"
    assert repeated_tail("The parcel came late, but the staff were kind. " * 2) is None
    assert repeated_tail("abc" * 7) is None  # too short to be sure
    assert repeated_tail('{"label": "positive", "score": 0.8}') is None


def _endpoint(server) -> Endpoint:
    return Endpoint(server.url, "fault", retry=RetryPolicy(2, backoff_initial=0.01))


async def test_a_loop_cut_at_max_tokens_is_asked_again_another_way(faults):
    faults.configure(script=["repeat"])
    async with _endpoint(faults) as llm:
        completion = await llm.chat(HI, max_tokens=40, temperature=0.0)
    assert completion.text == "echo: hi" and completion.attempts == 2
    first, again = faults.stats()["params"]
    assert first["temperature"] == 0.0 and "seed" not in first
    assert again["temperature"] == REROLL_TEMPERATURE and isinstance(again["seed"], int)


async def test_a_second_loop_is_an_error_that_names_the_piece(faults):
    faults.configure(rates={"repeat": 1.0})
    async with _endpoint(faults) as llm:
        with pytest.raises(LLMRunawayError) as caught:
            await llm.chat(HI, max_tokens=40)
    message = str(caught.value)
    assert LOOP_PIECE in message and "until cut at max_tokens (40)" in message
    assert caught.value.attempts == 2 and caught.value.usage.requests == 2
    assert faults.stats()["requests"] == 2  # asked once more, not retried as a transient


async def test_a_stream_that_loops_is_stopped_as_it_comes(faults):
    faults.configure(rates={"repeat": 1.0})
    heard: list[str] = []
    async with _endpoint(faults) as llm:
        with pytest.raises(LLMRunawayError, match="in a stream, which was stopped"):
            await llm.stream_chat(HI, heard.append, max_tokens=400)
    assert 20 <= len(heard) < 400  # stopped once the tail repeated, long before max_tokens
    assert faults.stats()["requests"] == 1


async def test_a_looping_planner_falls_back_and_the_batch_counts_it(faults):
    faults.configure(rates={"repeat": 1.0})
    recorder = TimelineRecorder()
    token = RECORDER.set(recorder)
    try:
        async with _endpoint(faults) as llm:
            planner = LLMPlanner(llm, {"tokenize": "t", "keywords": "k", "sentiment": "s"})
            for i in range(3):
                plan = await planner.plan(Task(id=f"t{i}", text="Nice phone."))
                assert [s.kind for s in plan] == ["tokenize", "keywords", "sentiment"]
    finally:
        RECORDER.reset(token)
    (fallback,) = recorder.finish().fallbacks
    assert (fallback.what, fallback.to, fallback.count) == ("planner", "the rule plan", 3)
    assert fallback.reason == "the model repeated itself until cut"
    assert faults.stats()["requests"] == 6  # each plan asked twice, not waited out thrice


@pytest.mark.slow  # an `anabranch run` process: about 10 s on a busy machine
def test_a_run_whose_planner_fell_back_says_so_with_its_count(tmp_path, faults):
    faults.configure(rates={"invalid": 1.0})
    tasks = tmp_path / "t.jsonl"
    tasks.write_text("".join(json.dumps({"id": f"t{i}", "text": "Nice phone."}) + "\n"
                             for i in range(5)))  # fmt: skip
    out = tmp_path / "o.jsonl"
    proc = run_cli("run", str(tasks), "--llm", faults.url, "--model", "fault", "--planner", "llm",
                   "--backend", "local", "--out", str(out))  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    said = "planner: 5 of 5 tasks fell back to the rule plan (invalid JSON)"
    assert said in proc.stderr.splitlines() and said in proc.stdout  # the end, and the trace
    with Journal(str(out) + ".journal") as journal:
        (run,) = journal.runs()
        report = journal.report(run.run_id)
    assert report is not None and report.timeline is not None
    assert [f.count for f in report.timeline.fallbacks] == [5]  # kept with the run's report
