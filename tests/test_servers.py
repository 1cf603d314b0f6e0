"""Servers we did not write: whole-second Retry-After, sporadic 429s, dead and slow servers,
refused keys, cut bodies and streams, answers too large. The fault server plays each."""

from __future__ import annotations

import asyncio
import json
import logging
import os
import random

import pytest
from conftest import run_cli, write_tasks

from anabranch.errors import (
    LLMAuthError,
    LLMConnectionError,
    LLMError,
    LLMOutputError,
    LLMTimeoutError,
    LLMUnavailableError,
)
from anabranch.llm.endpoint import Endpoint
from anabranch.llm.limits import CallLimiter
from anabranch.llm.quota import QuotaLearner
from anabranch.llm.settings import Limits, RetryPolicy, Timeouts
from anabranch.testing.fault_server import Quota

HI = [{"role": "user", "content": "hi"}]


async def many(llm: Endpoint, calls: int) -> list[object]:
    return await asyncio.gather(*(llm.chat(HI) for _ in range(calls)), return_exceptions=True)


async def test_sporadic_429s_and_500s_cost_the_retried_request_not_the_batch(faults):
    """15 % random 429s (Retry-After: 1, whole seconds) and 15 % 500s: before, each 429 halved
    the concurrency and paused the endpoint, and the batch ran two requests at a time. What the
    server has in flight is compared with the same batch without faults, on the same machine: at
    a load of 15 on 2 cores, a client keeps fewer than its 32 in flight with or without faults."""
    retry = RetryPolicy(max_attempts=8, backoff_initial=0.05, backoff_max=0.2)
    most = []
    for rates in ({}, {"429": 0.15, "500": 0.15}):
        faults.configure(latency_ms=200, rates=rates, retry_after=1,
                         retry_after_format="seconds", seed=3)  # fmt: skip
        async with Endpoint(faults.url, "fault", limits=Limits(32), retry=retry) as llm:
            done = await many(llm, 200)
        assert all(not isinstance(d, BaseException) for d in done)
        most.append(faults.stats()["max_in_flight"])
    clean, faulty = most
    assert faulty >= 0.5 * clean, most  # before: 2 against 32


def _first_suspicion(window: str) -> tuple[QuotaLearner, bool]:
    """A new learner fed `window` (`.` an answer, `R` a 429) at once, inside its first second."""
    learner = QuotaLearner()
    signals = [learner.refused(0) if c == "R" else learner.answered() for c in window]
    return learner, bool(signals[-1])


@pytest.mark.parametrize("window", [".." * 15 + "RR", "." * 10 + "R" * 22, "." * 30 + "R...R"])
def test_a_first_burst_that_ran_dry_is_paced_at_a_seconds_worth(window):
    """A quota's first burst (its bucket, a second's worth) came back clean, then 429s: what
    got through is counted over a second, not over the instant the burst took. Answers sent
    before the bucket emptied may come in among its first 429s (the third window): taken for
    sporadic, a first trial paced at 153 requests/s against a quota of 40."""
    learner, suspected = _first_suspicion(window)
    assert suspected and learner.rate is not None
    assert learner.rate <= window.count(".")


def test_sporadic_429s_in_the_first_second_are_paced_at_the_rate_measured():
    """15 % random 429s from the first answer on: no burst ran dry, so a suspicion's trial
    paces at what the server answered so far, per second of it. Counted over a whole second
    as a burst is, a fast server's trials ran at a tenth of its rate (bench_adaptive's random
    case: 7.2 times its fault-free time where a static cap took 3.8)."""
    window = ".....R..........R.........R....R"  # 32 answers, 4 of them 429s: a suspicion
    learner, suspected = _first_suspicion(window)
    assert suspected and learner.rate is not None
    assert learner.rate >= 10 * window.count(".")


def test_a_first_trial_is_not_judged_on_three_429s_in_a_row():
    """Whole-second Retry-Afters bring sporadic 429s back in waves. A first trial ended by its
    first three answers, all 429s, measured that nothing got through it, and the second trial
    paced at its floor, 0.5 requests/s: a 5 s batch with 15 % random 429s ran in 80 s."""
    learner, suspected = _first_suspicion(".....R..........R.........R....R")
    assert suspected and learner.rate is not None
    first = learner.rate
    for c in "RRR.....":  # each waited for the trial's pacing, as a batch's requests do
        learner.waited()
        learner.refused(0) if c == "R" else learner.answered()
    assert learner.rate is None or learner.rate >= 0.5 * first, (learner.rate, first)


async def test_a_trial_waits_for_the_attempts_at_the_server_not_for_the_slots_held():
    """Calls that wait for the pacing hold their slots with nothing at the server. A trial that
    skipped as many answers as slots were held (26) waited for them at the rate it paced."""
    limiter = CallLimiter(Limits(64), "http://127.0.0.1:1")
    learner = limiter.headers.learner
    limiter.slots.limit = 64.0  # past its slow start
    for _ in range(26):  # 26 calls hold slots; 2 of them have an attempt out
        await limiter.slots.acquire()
    sending = [limiter.sending(60.0) for _ in range(2)]
    for attempt in sending:
        attempt.__enter__()
    for c in ".....R..........R.........R....":
        learner.refused(0) if c == "R" else learner.answered()
    limiter.failed(overloaded=True, retry_after=1.0)  # the 429 that raises the suspicion
    first = learner.rate
    assert first is not None
    for attempt in sending:  # the two out answer: the trial counts from the next
        attempt.__exit__(None, None, None)
        limiter.succeeded(0.02, 1)
    for c in "RRR.....":
        learner.waited()
        learner.refused(0) if c == "R" else learner.answered()
    assert learner.rate != first, "the trial still waits for answers it skipped"
    await limiter.breaker.aclose()


@pytest.mark.parametrize("seed", range(4))
def test_the_sporadic_share_is_that_of_every_answer(seed):
    """Under 15 % random 429s, the share that later suspicions are judged against is the share
    over every answer so far. Taken as the highest share of any window or trial, it read up to
    30 % (its cap), and a window then had to be over half 429s to be a suspicion."""
    rng = random.Random(seed)
    learner = QuotaLearner()
    for _ in range(2000):
        learner.refused(0) if rng.random() < 0.15 else learner.answered()
    assert learner.baseline == pytest.approx(0.15, abs=0.03)


async def test_a_quota_without_headers_and_whole_second_retry_after_is_learnt(faults):
    """A quota of 40 requests/s whose 429s say only `Retry-After: 1`: the endpoint finds the
    rate instead of waiting a whole second for every request (before: 18-19 % of the quota)."""
    faults.configure(latency_ms=20, quota=Quota(rps=40), retry_after_format="seconds")
    async with Endpoint(faults.url, "fault", limits=Limits(64),
                        retry=RetryPolicy(max_attempts=8)) as llm:  # fmt: skip
        loop = asyncio.get_running_loop()
        start = loop.time()
        done = await many(llm, 400)
        seconds = loop.time() - start
        paced = llm._limiter.headers.learner.rate
    stats = faults.stats()
    refused = stats["faults"].get("quota", 0) / stats["requests"]
    print(f"\n400 calls in {seconds:.1f} s = {400 / seconds / 40:.0%} of the quota, "
          f"{refused:.1%} 429, paced at {paced}")  # fmt: skip
    assert all(not isinstance(d, BaseException) for d in done)
    # Not asserted: that it paced at all (a client slowed by a busy machine may not exceed the
    # quota, and then it is right not to pace); the outcome is what the server counted.
    assert 400 / seconds >= 0.6 * 40  # measured 85-98 % (bench_adaptive); margin for load
    assert refused <= 0.1  # measured 2-5 % (the first burst's); before this rule 11-13 %


@pytest.mark.parametrize("style", ["seconds", "date"])
async def test_retry_after_is_read_in_both_of_http_forms(faults, style):
    faults.configure(script=["429"], retry_after=1, retry_after_format=style)
    async with Endpoint(faults.url, "fault") as llm:
        completion = await llm.chat(HI)
    assert completion.attempts == 2


async def test_a_hung_server_is_said_out_loud_and_the_give_up_names_it(faults, caplog):
    faults.configure(rates={"hang": 1.0})
    limits = Limits(4, breaker_failures=2, give_up_after=2.0)
    caplog.set_level(logging.WARNING, logger="anabranch")
    async with Endpoint(faults.url, "fault", limits=limits,
                        timeouts=Timeouts(attempt=0.5, call=20.0)) as llm:  # fmt: skip
        done = await many(llm, 12)
    assert all(isinstance(d, LLMUnavailableError) for d in done[4:]), done
    said = caplog.text
    assert "server not answering since" in said and "giving up in" in said
    assert "gave up" in said and "127.0.0.1" in said and "run the same command again" in said


@pytest.mark.slow  # an attempt timeout over the check's 5 s, then the give-up
async def test_a_hung_server_opens_the_breaker_at_its_first_timeouts(faults):
    """The cheap check is asked while the attempts hang, so their timeouts open the breaker at
    once: no second round of attempts is sent while the check runs (before: 4 + 4 + probes).
    The give-up counts from the first hung request: 1 s after it, the breaker's opening at
    6 s finds it passed, and sends no probe (counted from the opening, it sent one)."""
    faults.configure(rates={"hang": 1.0})
    limits = Limits(4, breaker_failures=10, give_up_after=1.0)
    async with Endpoint(faults.url, "fault", limits=limits,
                        timeouts=Timeouts(attempt=6.0, call=6.0)) as llm:  # fmt: skip
        done = await many(llm, 24)
    assert all(isinstance(d, LLMError) for d in done), done
    assert sum(isinstance(d, LLMUnavailableError) for d in done) >= 20
    assert faults.stats()["requests"] == 4


async def test_a_slow_server_is_not_taken_for_a_dead_one(faults):
    """Timeouts alone do not open the breaker while the server answers its cheap check."""
    faults.configure(latency_ms=1500)
    limits = Limits(4, breaker_failures=2, give_up_after=1.0)
    retry = RetryPolicy(max_attempts=2, backoff_initial=0.01)
    async with Endpoint(faults.url, "fault", limits=limits, retry=retry,
                        timeouts=Timeouts(attempt=0.3, call=5.0)) as llm:  # fmt: skip
        done = await many(llm, 8)
        await asyncio.sleep(0.5)  # the checks answer
        assert llm.outage is None
    assert all(isinstance(d, LLMTimeoutError) for d in done), done
    assert "attempt timeout" in str(done[0])


@pytest.mark.parametrize("stretch", [1.0, 10.0])
async def test_a_server_slower_than_the_deadline_is_waited_for_unless_the_deadline_was_given(
    faults, stretch
):
    """Fast answers first, then each takes 1.5 s against a 1 s deadline: a deadline free to
    stretch follows the measured speed (as the embedded model on a busy laptop), a fixed one
    (`--deadline` given) fails the calls with a timeout."""
    timeouts = Timeouts(attempt=0.5, call=1.0, stretch=stretch)
    retry = RetryPolicy(max_attempts=1)
    async with Endpoint(faults.url, "fault", timeouts=timeouts, retry=retry) as llm:
        faults.configure(latency_ms=50)
        await many(llm, 4)
        faults.configure(latency_ms=1500)
        done = await many(llm, 4)
    if stretch > 1:
        assert all(not isinstance(d, BaseException) for d in done), done
    else:
        assert all(isinstance(d, LLMTimeoutError) for d in done), done


async def test_the_deadline_bounds_the_wait_for_a_server_that_is_down(faults):
    faults.configure(rates={"hang": 1.0})
    limits = Limits(2, breaker_failures=1, give_up_after=None)  # it would wait for ever
    async with Endpoint(faults.url, "fault", limits=limits,
                        timeouts=Timeouts(attempt=0.3, call=1.5)) as llm:  # fmt: skip
        done = await many(llm, 10)
    assert all(isinstance(d, LLMError) for d in done)
    assert any(isinstance(d, LLMUnavailableError) and "deadline" in str(d) for d in done)


async def test_a_refused_key_stops_sending(faults):
    faults.configure(rates={"401": 0.5, "500": 0.5}, retry_after=0, seed=1)
    async with Endpoint(faults.url, "fault", limits=Limits(1)) as llm:
        done = await many(llm, 20)
        assert llm.refused_key is not None
    assert all(isinstance(d, LLMError) for d in done)
    assert sum(isinstance(d, LLMAuthError) for d in done) >= 19
    assert faults.stats()["requests"] <= 5  # not 20 calls x 4 attempts


@pytest.mark.slow  # an anabranch process end to end
def test_a_refused_key_ends_the_run_with_exit_2_and_names_the_key(tmp_path, faults):
    faults.configure(rates={"401": 1.0})
    write_tasks(tmp_path / "tasks.jsonl", 8)
    env = {**os.environ, "ANABRANCH_LLM_API_KEY": "sk-wrong-key-for-the-test"}
    proc = run_cli("run", str(tmp_path / "tasks.jsonl"), "--llm", faults.url, "--model", "fault",
                   "--out", str(tmp_path / "o.jsonl"), env=env)  # fmt: skip
    assert proc.returncode == 2, proc.stderr
    assert "refused the API key" in proc.stderr and "$ANABRANCH_LLM_API_KEY" in proc.stderr
    assert "127.0.0.1" in proc.stderr and "sk-wrong" not in proc.stderr + proc.stdout
    assert len((tmp_path / "o.jsonl").read_text().splitlines()) == 8  # delivered, kept
    assert faults.stats()["requests"] <= 16


async def test_a_close_delimited_stream_cut_before_its_end_is_an_error(faults):
    faults.configure(script=["stream_cut"])
    async with Endpoint(faults.url, "fault", retry=RetryPolicy(max_attempts=1)) as llm:
        with pytest.raises(LLMConnectionError, match="finish_reason"):
            await llm.stream_chat([{"role": "user", "content": "one two three four"}],
                                  lambda _: None)  # fmt: skip


async def test_a_body_cut_mid_way_says_so_not_timed_out(faults):
    faults.configure(rates={"cut": 1.0})
    retry = RetryPolicy(max_attempts=3, backoff_initial=0.01, backoff_max=0.02)
    async with Endpoint(faults.url, "fault", retry=retry) as llm:
        with pytest.raises(LLMConnectionError) as caught:
            await llm.chat(HI)
    message = str(caught.value)
    assert "connection failed, 3 attempt(s) in" in message and "timed out" not in message


@pytest.mark.parametrize("framing", ["length", "close"])
@pytest.mark.parametrize("padding", ["text", "whitespace"])
async def test_an_answer_past_the_size_cap_fails_its_call(faults, padding, framing):
    faults.configure(answer_bytes=4 * 2**20, answer_padding=padding, answer_framing=framing)
    limits = Limits(max_response_bytes=2**20)
    async with Endpoint(faults.url, "fault", limits=limits) as llm:
        with pytest.raises(LLMOutputError, match="larger than"):
            await llm.chat(HI)


def held_bytes(exc: BaseException | None) -> int:
    """What an error's tracebacks keep alive in their frames' locals: bytes, and lists of them."""
    held, seen = 0, set()
    while exc is not None and id(exc) not in seen:  # a chain may come back to itself
        seen.add(id(exc))
        tb = exc.__traceback__
        while tb is not None:
            for value in tb.tb_frame.f_locals.values():
                pieces = value if isinstance(value, list) else [value]
                held += sum(len(p) for p in pieces if isinstance(p, bytes | bytearray | str))
            tb = tb.tb_next
        exc = exc.__cause__ or exc.__context__
    return held


async def test_an_answer_past_the_cap_is_not_kept_by_its_error(faults):
    """An error's traceback must not keep what was read before the cap: while the error is
    handled, the other calls in flight read theirs (100 MB answers, 8 at a time: peak RSS 330
    MB against 240 MB)."""
    faults.configure(answer_bytes=4 * 2**20, answer_framing="close")
    async with Endpoint(faults.url, "fault", limits=Limits(max_response_bytes=2**20)) as llm:
        with pytest.raises(LLMOutputError) as caught:
            await llm.chat(HI)
    assert held_bytes(caught.value) < 2**18


@pytest.mark.slow  # two anabranch processes end to end
def test_a_plain_re_run_retries_what_the_server_failed(tmp_path, faults):
    faults.configure(rates={"500": 1.0}, retry_after=0)
    write_tasks(tmp_path / "tasks.jsonl", 6)
    args = ("run", str(tmp_path / "tasks.jsonl"), "--llm", faults.url, "--model", "fault",
            "--out", str(tmp_path / "o.jsonl"), "--give-up-after", "1",
            "--deadline", "3")  # fmt: skip
    first = run_cli(*args)
    assert first.returncode == 2, first.stderr  # not one LLM call was answered
    faults.configure()
    second = run_cli(*args)
    assert second.returncode == 0, second.stderr
    results = [json.loads(line) for line in (tmp_path / "o.jsonl").read_text().splitlines()]
    assert len(results) == 6 and all(r["status"] == "ok" for r in results)
