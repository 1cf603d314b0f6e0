"""The Batch API layer against the fault server's files and batches (real processes, real
SQLite journals): waves, splitting, resubmits, errors as data, and a crash that pays nothing
twice. The server's counts (batches created, requests per batch, requests paid) are the truth."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import ROOT, run_cli, write_tasks
from pydantic import BaseModel

from anabranch import Endpoint, build_fanout_graph, run_batch
from anabranch.agents.planner import LLMPlanner, RulePlanner
from anabranch.analysis import make_agents
from anabranch.batches_store import BatchStore
from anabranch.errors import LLMOutputError, LLMStatusError
from anabranch.llm.settings import BatchSettings, Prices
from anabranch.testing.fault_batches import BatchFaults
from anabranch.types import Task

QUICK = {"gather": 0.1, "poll_initial": 0.05, "poll_max": 0.1}
"""Batch settings for a server whose batches take a fraction of a second."""


def endpoint(server, **settings) -> Endpoint:
    return Endpoint(server.url, "fault", batch=BatchSettings(**(QUICK | settings)))


def asks(n: int, prefix: str = "hello") -> list[list[dict[str, str]]]:
    return [[{"role": "user", "content": f"{prefix} {i}"}] for i in range(n)]


async def chat_all(ep: Endpoint, conversations, **kwargs):
    return await asyncio.gather(
        *(ep.chat(c, **kwargs) for c in conversations), return_exceptions=True
    )


def batches(server) -> dict:
    return server.stats()["batches"]


def test_calls_in_flight_go_as_one_batch_and_each_gets_its_own_answer(faults):
    async def main():
        async with endpoint(faults, prices=Prices(2.5, 10)) as ep:
            answers = await chat_all(ep, asks(40))
            return answers, ep.batch_report

    answers, report = asyncio.run(main())
    assert [a.text for a in answers] == [f"echo: hello {i}" for i in range(40)]
    assert all(a.usage.requests == 1 and a.usage.completion_tokens for a in answers)
    seen = batches(faults)
    assert seen["batches_created"] == 1 and seen["requests_per_batch"] == [40]
    assert seen["requests_paid"] == 40 and seen["paid_twice"] == 0
    assert faults.stats()["requests"] == 0  # nothing went live
    assert report.waves == 1 and report.requests == 40 and report.states == {"completed": 1}
    assert report.batch_cost == pytest.approx(report.live_cost / 2) and report.live_cost > 0


def test_a_wave_is_split_to_the_providers_limits(faults):
    async def main():
        async with endpoint(faults, max_requests=8) as ep:
            return await chat_all(ep, asks(20))

    answers = asyncio.run(main())
    assert all(not isinstance(a, BaseException) for a in answers)
    assert sorted(batches(faults)["requests_per_batch"]) == [4, 8, 8]


def test_a_wave_is_split_by_bytes_too(faults):
    async def main():
        async with endpoint(faults, max_bytes=2048) as ep:
            return await chat_all(ep, asks(20, "x" * 200))

    assert all(not isinstance(a, BaseException) for a in asyncio.run(main()))
    sizes = batches(faults)["requests_per_batch"]
    assert len(sizes) > 1 and sum(sizes) == 20 and max(sizes) <= 2048 // 300 + 1


@pytest.mark.parametrize(
    ("fault", "second"),
    [
        ({"expire": 1, "expire_done": 0.75}, 5),  # the unfinished quarter, nothing more
        ({"lose": 1, "lose_share": 0.2}, 4),  # the requests in neither file
        ({"fail": 1}, 20),  # a failed batch: all of it again
    ],
    ids=["expired", "lost", "failed"],
)
def test_what_a_batch_did_not_finish_goes_in_the_next_one(faults, fault, second):
    faults.configure(batches=BatchFaults(**fault))

    async def main():
        async with endpoint(faults) as ep:
            return await chat_all(ep, asks(20)), ep.batch_report

    answers, report = asyncio.run(main())
    assert [a.text for a in answers] == [f"echo: hello {i}" for i in range(20)]
    seen = batches(faults)
    assert seen["requests_per_batch"] == [20, second]
    assert seen["requests_paid"] == 20 and seen["paid_twice"] == 0
    assert report.resubmitted == second and report.waves == 2
    assert sum(a.usage.requests for a in answers) == 20 + second


def test_with_live_fallback_what_a_batch_did_not_finish_goes_live(faults):
    faults.configure(batches=BatchFaults(expire=1, expire_done=0.75))

    async def main():
        async with endpoint(faults, live_fallback=True) as ep:
            return await chat_all(ep, asks(20)), ep.batch_report

    answers, report = asyncio.run(main())
    assert [a.text for a in answers] == [f"echo: hello {i}" for i in range(20)]
    assert batches(faults)["requests_per_batch"] == [20]  # no second batch
    assert faults.stats()["requests"] == 5 and report.live == 5  # the unfinished quarter
    assert sorted(a.usage.requests for a in answers) == [1] * 15 + [2] * 5


def test_a_permanent_error_is_the_calls_error_and_a_transient_one_is_retried(faults):
    faults.configure(batches=BatchFaults(request_faults={"400": 0.2, "500": 0.3}, seed=3))

    async def main():
        async with endpoint(faults, max_rounds=20) as ep:
            return await chat_all(ep, asks(50))

    answers = asyncio.run(main())
    failed = [a for a in answers if isinstance(a, BaseException)]
    assert failed and all(isinstance(e, LLMStatusError) and e.status == 400 for e in failed)
    assert all("bad request" in str(e) for e in failed)
    answered = [a for a in answers if not isinstance(a, BaseException)]
    assert len(answered) + len(failed) == 50
    assert any(a.attempts > 1 for a in answered)  # some got a 500 first, then an answer
    seen = batches(faults)
    assert len(seen["requests_per_batch"]) > 1 and seen["paid_twice"] == 0
    assert seen["requests_paid"] == len(answered)


class Verdict(BaseModel):
    label: str
    score: float


def test_a_repair_re_ask_joins_the_next_wave(faults):
    faults.configure(batches=BatchFaults(request_faults={"invalid": 0.4}, seed=1))

    async def main():
        async with endpoint(faults) as ep:
            parsed = await asyncio.gather(
                *(ep.parse(c, Verdict) for c in asks(30)), return_exceptions=True
            )
            return parsed, ep.batch_report

    parsed, report = asyncio.run(main())
    sizes = batches(faults)["requests_per_batch"]
    assert len(sizes) == 2 and report.waves == 2  # the answers, then the re-asks of bad ones
    assert 0 < sizes[1] < 30
    repaired = [p for p in parsed if not isinstance(p, BaseException) and p.attempts == 2]
    still_bad = [p for p in parsed if isinstance(p, BaseException)]
    assert len(repaired) + len(still_bad) == sizes[1]
    assert all(isinstance(e, LLMOutputError) for e in still_bad) and repaired


def test_an_llm_planner_graph_runs_in_two_waves(faults):
    """The plans go in one wave; the agents they pick call in the next. (The fault server's
    model picks the first agent it is offered: keywords, on the LLM.)"""
    tasks = [Task(id=f"t{i}", text=f"I like item {i} a lot.") for i in range(30)]

    async def main():
        async with endpoint(faults) as ep:
            agents = make_agents("llm", ep)
            menu = {"keywords": "the text's key phrases", "sentiment": "how the text feels"}
            rule = RulePlanner(kinds=[a.name for a in agents])
            graph = build_fanout_graph(agents, LLMPlanner(ep, menu, rule=rule))
            results = [r async for r in run_batch(tasks, graph, concurrency=30)]
            return results, ep.batch_report

    results, report = asyncio.run(main())
    assert sorted(r.task_id for r in results) == sorted(t.id for t in tasks)
    assert all(r.status == "ok" and list(r.outputs) == ["keywords"] for r in results)
    sizes = batches(faults)["requests_per_batch"]
    assert report.waves == 2 and sizes == [30, 30]  # the plans; then one call per plan
    assert faults.stats()["requests"] == 0


def test_a_journal_lets_the_next_endpoint_poll_the_same_batch(faults, tmp_path):
    """An endpoint closed while its batch runs (as a crash leaves it): the next one with the
    same journal and run asks for the same requests, polls that batch and pays for nothing."""
    faults.configure(batches=BatchFaults(step_seconds=1.0))
    journal = tmp_path / "journal.sqlite"

    async def first():
        async with endpoint(faults, journal=journal, run_id="r1") as ep:
            calls = [asyncio.ensure_future(ep.chat(c)) for c in asks(12)]
            while batches(faults)["batches_created"] == 0:
                await asyncio.sleep(0.05)
            await asyncio.sleep(0.3)  # the batch's id is journaled
            for call in calls:
                call.cancel()

    async def second():
        async with endpoint(faults, journal=journal, run_id="r1") as ep:
            return await chat_all(ep, asks(12)), ep.batch_report

    asyncio.run(first())
    assert batches(faults)["states"] != {"completed": 1}  # still running when the first left
    answers, report = asyncio.run(second())
    assert [a.text for a in answers] == [f"echo: hello {i}" for i in range(12)]
    seen = batches(faults)
    assert seen["batches_created"] == 1 and seen["requests_paid"] == 12
    assert report.batches == 1 and report.requests == 12
    store = BatchStore(journal, "r1")
    assert [b.state for b in store.batches()] == ["completed"]
    assert {r.state for r in store.requests().values()} == {"answered"}
    store.close()

    async def third():  # answered and journaled: a third asks the provider for nothing
        async with endpoint(faults, journal=journal, run_id="r1") as ep:
            return await chat_all(ep, asks(12)), ep.batch_report

    answers, report = asyncio.run(third())
    assert [a.usage.requests for a in answers] == [0] * 12 and report.from_journal == 12
    assert batches(faults)["batches_created"] == 1


# -- the command: 300 tasks, and kill -9 during a batch -------------------------------------------


def _run_command(server, tasks: Path, out: Path, *extra: str) -> list[str]:
    return [
        sys.executable,
        "-m",
        "anabranch",
        "run",
        str(tasks),
        "--out",
        str(out),
        "--llm",
        server.url,
        "--model",
        "fault",
        "--backend",
        "llm",
        "--batch-api",
        "--batch-poll",
        "0.2",
        *extra,
    ]


@pytest.mark.slow  # two command runs of 300 tasks: 40-70 s on a busy machine
def test_300_tasks_by_batch_each_delivered_once_and_a_kill_costs_nothing(faults, tmp_path):
    tasks, out = tmp_path / "tasks.jsonl", tmp_path / "results.jsonl"
    ids = write_tasks(tasks, 300)
    faults.configure(batches=BatchFaults(step_seconds=4.0))
    first = subprocess.Popen(
        _run_command(faults, tasks, out),
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=os.environ.copy(),
    )
    try:
        while batches(faults)["states"].get("in_progress", 0) == 0:
            assert first.poll() is None, first.communicate()
            time.sleep(0.1)
        time.sleep(0.5)
    finally:
        first.send_signal(signal.SIGKILL)
        first.communicate(timeout=30)
    assert batches(faults)["requests_paid"] == 0  # killed before the batch ended

    proc = subprocess.run(
        _run_command(faults, tasks, out), cwd=ROOT, capture_output=True, text=True, timeout=300
    )
    assert proc.returncode == 0, proc.stderr
    seen = batches(faults)
    # One batch for all 300 tasks' calls, created by the first run, polled by the second.
    assert seen["batches_created"] == 1, seen
    assert seen["requests_per_batch"] == [600] and seen["requests_paid"] == 600
    assert seen["paid_twice"] == 0
    assert faults.stats()["requests"] == 0  # no live call
    lines = [json.loads(line) for line in out.read_text().splitlines()]
    assert sorted(r["task_id"] for r in lines) == ids
    assert all(r["status"] == "ok" for r in lines)
    assert "Batch API: waves 1, batches 1 (600 requests)" in proc.stdout

    run_id = proc.stdout.rsplit("(run ", 1)[1].split(")")[0]
    shown = run_cli("runs", "show", run_id, str(tmp_path / "results.jsonl.journal"))
    assert shown.returncode == 0, shown.stderr
    assert "wave 1  completed    600 requests" in shown.stdout


@pytest.mark.slow  # three command starts: 10-30 s on a busy machine
def test_the_batch_api_needs_a_server_that_has_one(tmp_path):
    tasks = tmp_path / "tasks.jsonl"
    write_tasks(tasks, 2)
    for where in (["--llm", "local"], ["--llm", "http://127.0.0.1:9", "--executor", "ray"]):
        proc = run_cli("run", str(tasks), *where, "--batch-api", "--out", str(tmp_path / "o"))
        assert proc.returncode == 2 and "--batch-api needs a server" in proc.stderr
    proc = run_cli("run", str(tasks), "--llm", "http://127.0.0.1:9", "--batch-api",
                   "--prices", "cheap", "--out", str(tmp_path / "o"))  # fmt: skip
    assert proc.returncode == 2 and "--prices takes INPUT,OUTPUT" in proc.stderr


def test_the_enqueued_token_limit_is_kept_by_waiting_and_splitting(faults):
    """A provider fails a batch that takes its queue past the enqueued token limit; the layer
    splits the wave to fit and sends a file once earlier batches have ended."""
    limit = 200
    faults.configure(batches=BatchFaults(max_enqueued_tokens=limit))

    async def main(settings):
        async with endpoint(faults, **settings) as ep:
            return await chat_all(ep, asks(40), max_tokens=10)

    answers = asyncio.run(main({"max_enqueued_tokens": limit}))
    assert [a.text for a in answers] == [f"echo: hello {i}" for i in range(40)]
    seen = batches(faults)
    assert len(seen["requests_per_batch"]) >= 3 and seen["over_token_limit"] == 0
    assert seen["most_enqueued_tokens"] <= limit and seen["states"] == {
        "completed": len(seen["requests_per_batch"])
    }
    faults.configure(batches=BatchFaults(max_enqueued_tokens=limit))
    asyncio.run(main({"max_rounds": 1}))  # without the setting: the provider refuses
    assert batches(faults)["over_token_limit"] == 1
