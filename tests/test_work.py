"""A batch's concurrency counts the runs at work: a run waiting out a Retry-After gives its
place to another, within a bound on the runs under way."""

from __future__ import annotations

import asyncio

from anabranch import Task, run_batch
from anabranch.graphs.progress import Display
from anabranch.graphs.spec import GraphSpec
from anabranch.llm.connect import LLMOptions
from anabranch.llm.settings import Limits
from anabranch.work import WorkGate, waiting


def _spec(url: str) -> GraphSpec:
    llm = LLMOptions(url, "fault", limits=Limits(4))
    backend = "tokenize=local,keywords=local,sentiment=llm"  # one LLM call a task
    return GraphSpec("anabranch.analysis.recipe:analysis_graph", {"llm": llm, "backend": backend})


async def test_a_run_waiting_out_a_retry_after_lets_the_next_run_start(faults):
    """One run at a time, and the first task's call answered 429 with two whole seconds of
    Retry-After: the other tasks run and come back while it waits. Counted as at work, the
    waiting run held the only place, and the first result was the one retried."""
    faults.configure(latency_ms=10, script=["429"], retry_after=2, retry_after_format="seconds")
    tasks = [Task(id=f"t{i}", text=f"A short text, number {i}.") for i in range(4)]
    batch = run_batch(tasks, _spec(faults.url), concurrency=1, display=Display(progress=False))
    requests = [result.usage.requests async for result in batch]
    assert requests == [1, 1, 1, 2]


async def test_the_gate_lets_runs_start_for_calls_that_wait_up_to_its_bound():
    gate = WorkGate(2, most=3)
    release = asyncio.Event()
    waits = asyncio.Event()

    async def run(waits_out_a_retry: bool) -> None:
        async with gate.working():
            if waits_out_a_retry:
                with waiting():
                    await waits.wait()
            await release.wait()

    runs = [asyncio.create_task(run(waits_out_a_retry=i < 2)) for i in range(5)]
    await asyncio.sleep(0.05)
    # Two at work, both waiting: one more starts (the bound, 3), not two.
    assert gate.taken == 3 and gate.waiting == 2
    waits.set()
    await asyncio.sleep(0.05)
    assert gate.taken == 3  # over the concurrency now, until runs end: none is stopped
    release.set()
    await asyncio.gather(*runs)
    assert gate.taken == 0 and gate.waiting == 0
