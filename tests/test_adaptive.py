"""Adaptive concurrency against a server with a real quota, and a server that is down.

The fault server's quota mode is a token bucket of R requests per second that answers 429 with
Retry-After (and OpenAI's x-ratelimit-* headers) beyond it; its capacity can change mid-run.
"""

from __future__ import annotations

import asyncio
import json
import time

import pytest
from conftest import run_cli

from anabranch import Task, run_batch
from anabranch.analysis import build_analysis_graph
from anabranch.llm.endpoint import Endpoint
from anabranch.llm.quota import parse_duration
from anabranch.llm.settings import Limits, RetryPolicy, Timeouts
from anabranch.testing.fault_server import Quota

HI = [{"role": "user", "content": "hi"}]
R = 40
"""The quota, in requests per second."""


async def burst(faults, calls: int, limits: Limits) -> tuple[float, int, int]:
    """`calls` chat calls at once; (seconds, answered, 429s the server sent)."""
    retry = RetryPolicy(max_attempts=8, backoff_initial=0.05)
    async with Endpoint(faults.url, "fault", limits=limits, retry=retry) as llm:
        start = time.perf_counter()
        done = await asyncio.gather(*(llm.chat(HI) for _ in range(calls)), return_exceptions=True)
        seconds = time.perf_counter() - start
    answered = sum(not isinstance(d, BaseException) for d in done)
    return seconds, answered, faults.stats()["faults"].get("quota", 0)


async def test_a_static_cap_hammers_a_quota_and_adaptation_holds_it(faults):
    faults.configure(latency_ms=20, quota=Quota(rps=R, headers=True))
    _, static_ok, static_429 = await burst(faults, 200, Limits(64, adaptive=False))
    faults.configure(latency_ms=20, quota=Quota(rps=R, headers=True))
    seconds, ok, refused = await burst(faults, 200, Limits(64))
    sent = faults.stats()["requests"]
    print(
        f"\nstatic cap 64: {static_ok}/200 answered, {static_429} x 429; adaptive: {ok}/200 "
        f"in {seconds:.1f} s = {ok / seconds / R:.0%} of the quota, {refused / sent:.1%} 429"
    )
    # The static cap earns 429s by the dozen to the hundred (fewer when a busy machine slows the
    # client: 92 at a load of 11), adaptation a handful at most.
    assert static_429 >= 10 * max(refused, 5)
    # Measured: 0 % 429 and the quota's rate (bench_adaptive); the margins absorb a busy machine.
    assert ok == 200 and refused <= 0.05 * sent
    assert ok / seconds >= 0.8 * R


async def test_adaptation_follows_a_quota_that_halves_mid_run(faults):
    faults.configure(latency_ms=20, quota=Quota(rps=R, headers=True))

    async def halve() -> None:
        await asyncio.sleep(2.0)
        await asyncio.to_thread(faults.set_quota, Quota(rps=R / 2, headers=True))

    halving = asyncio.create_task(halve())
    seconds, ok, refused = await burst(faults, 200, Limits(64))
    await halving
    sent = faults.stats()["requests"]
    assert ok == 200 and refused <= 0.1 * sent
    # 2 s at R, then R/2 for the rest: what the quota allows, give or take the bursts.
    assert seconds <= 2 + (200 - 2 * R) / (R / 2) * 1.3 + 2


async def test_without_headers_adaptation_still_completes(faults):
    faults.configure(latency_ms=20, quota=Quota(rps=R, headers=False))
    seconds, ok, refused = await burst(faults, 120, Limits(64))
    sent = faults.stats()["requests"]
    print(f"\nno headers: {ok}/120 in {seconds:.1f} s, {refused / sent:.1%} 429")
    assert ok == 120 and refused <= 0.5 * sent  # measured 11-26 %: a known gap


async def mixed(faults, calls: int = 300) -> tuple[float, int]:
    """`calls` chat calls at once, half answered in 2 words and half in 31, cap 32; (the limit
    at the end, the most the server had in flight)."""
    async with Endpoint(faults.url, "fault", limits=Limits(32)) as llm:
        await asyncio.gather(*(llm.chat([{"role": "user", "content": "word " * (1 + 29 * (i % 2))}])
                               for i in range(calls)))  # fmt: skip
        limit = llm.slot_stats.limit
    return limit, faults.stats()["max_in_flight"]


@pytest.mark.parametrize(
    "speed",
    [{"latency_ms": 100}, {"latency_ms": 20, "ms_per_token": 5}],
    ids=["fixed", "per-token"],
)
async def test_answers_of_mixed_lengths_are_not_taken_for_queueing(faults, speed):
    """A remote server's time is mostly fixed: a 2-word answer takes as long as a 31-word one.
    Judged by the time per token, that read as queueing and ran 1 to 5 at a time."""
    faults.configure(**speed)
    limit, most = await mixed(faults)
    assert limit >= 16 and most >= 24  # measured: 32 and 32 for both (fixed, before: 1.5 and 4)


async def test_a_server_that_queues_is_not_filled_to_the_cap(faults):
    """A server with 4 slots queues the rest, which shows only in the latency."""
    faults.configure(latency_ms=100, slots=4)
    limit, most = await mixed(faults)
    assert limit < 32 and most < 32  # measured: 12.9 at the end, 20 in flight at most


@pytest.mark.slow  # about 10 s
async def test_a_server_that_hangs_is_given_up_on_within_the_bound(faults):
    faults.configure(rates={"hang": 1.0})
    limits = Limits(8, give_up_after=3.0)
    async with Endpoint(faults.url, "fault", limits=limits,
                        timeouts=Timeouts(attempt=1.0, call=5.0)) as llm:  # fmt: skip
        tasks = [Task(id=str(i), text=f"Text {i}.") for i in range(300)]
        start = time.perf_counter()
        batch = run_batch(tasks, build_analysis_graph(llm), concurrency=32)
        results = [r async for r in batch]
        seconds = time.perf_counter() - start
    assert len(results) == 300 and all(r.status == "partial" for r in results)
    kinds = {e.type for r in results for e in r.errors}
    assert "LLMUnavailableError" in kinds
    # About 9 s (one attempt's timeout to notice, the check, the give-up bound, the last probe's
    # deadline), printed, not asserted: a busy machine stretches it (19.9 s at a load of 5).
    print(f"\nhanging server: {seconds:.2f} s")
    # The count is the proof: it stopped sending, no 600 hung requests (waiting out every call
    # would be about 900 requests, 560 s at 8 in flight).
    assert faults.stats()["requests"] < 60


def test_the_cli_shows_concurrency_and_429s(tmp_path, faults):
    faults.configure(latency_ms=20, quota=Quota(rps=R, headers=True))
    tasks = tmp_path / "tasks.jsonl"
    tasks.write_text("".join(json.dumps({"id": str(i), "text": f"T {i}."}) + "\n"
                             for i in range(60)))  # fmt: skip
    proc = run_cli("run", str(tasks), "--llm", faults.url, "--model", "fault", "--no-journal",
                   "--llm-concurrency", "64", "--out", str(tmp_path / "o.jsonl"))  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    assert "LLM concurrency: " in proc.stdout and "requests/s answered" in proc.stdout


def test_reset_durations_read_as_openai_writes_them():
    assert parse_duration("6m0s") == 360 and parse_duration("20ms") == 0.02
    assert parse_duration("1h2m3.5s") == 3723.5 and parse_duration("0.5") == 0.5


@pytest.mark.slow
async def test_on_the_embedded_server_adaptation_stays_within_its_slots():
    from anabranch.llm.local_server import LocalLLMServer

    async with (
        LocalLLMServer(parallel=8) as server,
        Endpoint(server.url, server.model, limits=Limits(32)) as llm,
    ):
        calls = [llm.chat([{"role": "user", "content": f"Say a word about {i}."}],
                          max_tokens=24) for i in range(96)]  # fmt: skip
        start = time.perf_counter()
        await asyncio.gather(*calls)
        adaptive = time.perf_counter() - start
        settled = llm.slot_stats.limit
    print(f"\nembedded server: settled at {settled:.1f} in {adaptive:.1f} s")
    # It does not flood the server's 8 slots: it settles about at them (8.3 in a run here; 2 to 6
    # when answers were judged by their time per token). It starts at 4 and halves when a
    # batching server's growing batch slows each answer, so it is slower than a static 8 (1.25x
    # in that run): that is why the embedded server runs with a static cap equal to its slots.
    assert 1 <= settled <= 16


async def test_a_tokens_per_minute_quota_is_paced(faults):
    """The tokens headers pace requests by their token estimate (prompt and max_tokens, as the
    server counts them): the batch runs at the quota with few 429s (before the pacing: 43-61 %)."""
    # "hi" + max_tokens 9 = 10 tokens a request; 24,000 a minute = 400 a second = 40 requests/s.
    faults.configure(latency_ms=20, quota=Quota(tpm=24_000, headers=True))
    retry = RetryPolicy(max_attempts=12, backoff_initial=0.05)
    async with Endpoint(faults.url, "fault", limits=Limits(64), retry=retry) as llm:
        start = time.perf_counter()
        done = await asyncio.gather(
            *(llm.chat(HI, max_tokens=9) for _ in range(120)), return_exceptions=True
        )
        seconds = time.perf_counter() - start
    stats = faults.stats()
    refused = stats["faults"].get("quota", 0)
    answered = sum(not isinstance(d, BaseException) for d in done)
    print(f"\ntpm quota: {answered}/120 in {seconds:.1f} s, {refused / stats['requests']:.1%} 429")
    assert answered == 120
    # 0 % in runs here; the margin is for a busy machine, where a late request bunches with the
    # next one.
    assert refused <= 0.15 * stats["requests"]
