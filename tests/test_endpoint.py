"""The endpoint against a real fault-injecting server: retries, deadlines, limits, output."""

import asyncio
import time

import pytest

from anabranch import ConfigError, Task, build_fanout_graph, run_batch
from anabranch.analysis import AnalysisRecord, SentimentOutput, make_agents
from anabranch.errors import LLMOutputError, LLMStatusError, LLMTimeoutError
from anabranch.llm.cache import ResponseCache
from anabranch.llm.endpoint import Endpoint
from anabranch.llm.retry import Retrier
from anabranch.llm.settings import Limits, RetryPolicy, Timeouts
from anabranch.llm.url import normalize_base_url

HI = [{"role": "user", "content": "hi"}]


def endpoint(
    server,
    *,
    attempt: float = 2.0,
    call: float = 20.0,
    max_attempts: int = 4,
    max_retry_after: float = 30.0,
    **limits,
) -> Endpoint:
    """An endpoint on `server` with quick backoff, so that retries cost the tests little."""
    return Endpoint(
        server.url,
        "fault",
        timeouts=Timeouts(attempt=attempt, call=call),
        retry=RetryPolicy(
            max_attempts, backoff_initial=0.01, backoff_max=0.05, max_retry_after=max_retry_after
        ),
        limits=Limits(**limits),
    )


async def test_thirty_percent_transient_faults_and_every_subtask_ends_ok(faults):
    faults.configure(
        rates={"429": 0.1, "500": 0.05, "503": 0.05, "reset": 0.05, "malformed": 0.05},
        retry_after=0.01,
        retry_after_format="fractional",
        seed=7,
    )
    async with endpoint(faults, max_attempts=12, concurrency=16) as llm:
        graph = build_fanout_graph(make_agents("llm", llm))
        tasks = [Task(id=f"t{i}", text=f"Task {i} is great.") for i in range(60)]
        batch = run_batch(tasks, graph, concurrency=16)
        results = [r async for r in batch]
    stats = faults.stats()
    assert len(results) == 60 and all(r.status == "ok" for r in results), [
        r.errors for r in results if r.errors
    ]
    assert sum(n for f, n in stats["faults"].items() if f != "ok") >= 20  # faults really happened
    assert batch.report.usage.requests == stats["requests"]  # every attempt is accounted for
    # The fault server has no /tokenize: the tokenizer fell back to tiktoken and says so.
    assert {AnalysisRecord.of(r).tokenizer for r in results} == {"tiktoken:cl100k_base"}


async def test_a_hang_is_cut_at_the_per_attempt_timeout(faults):
    faults.configure(script=["hang"])
    async with endpoint(faults, attempt=0.5) as llm:
        start = time.perf_counter()
        completion = await llm.chat(HI)
        elapsed = time.perf_counter() - start
    assert completion.text == "echo: hi" and completion.attempts == 2
    assert 0.5 <= elapsed < 3.0


async def test_the_deadline_bounds_a_call_whatever_the_retries(faults):
    faults.configure(rates={"hang": 1.0})
    async with endpoint(faults, attempt=0.3, call=1.0, max_attempts=100) as llm:
        start = time.perf_counter()
        with pytest.raises(LLMTimeoutError, match="deadline"):
            await llm.chat(HI)
    assert time.perf_counter() - start < 1.5


@pytest.mark.parametrize("status", ["400", "401"])
async def test_client_errors_are_sent_exactly_once(faults, status):
    faults.configure(rates={status: 1.0})
    async with endpoint(faults) as llm:
        with pytest.raises(LLMStatusError) as caught:
            await llm.parse(HI, SentimentOutput)
    assert caught.value.status == int(status) and caught.value.attempts == 1
    assert faults.stats()["requests"] == 1


async def test_retry_after_is_waited_and_capped(faults):
    faults.configure(script=["429"], retry_after=1.0)
    async with endpoint(faults) as llm:
        await llm.chat(HI)
    first, second = faults.stats()["arrivals"]
    assert second - first >= 0.95

    faults.configure(script=["429"], retry_after=60)
    async with endpoint(faults, max_retry_after=0.2) as llm:
        await llm.chat(HI)
    first, second = faults.stats()["arrivals"]
    assert 0.15 <= second - first < 3


async def test_permanent_failure_gives_error_records_and_still_delivers(faults):
    faults.configure(rates={"500": 1.0})
    async with endpoint(faults, max_attempts=3, breaker_failures=1000) as llm:  # no breaker
        graph = build_fanout_graph(make_agents("llm", llm))
        tasks = [Task(id=f"t{i}", text="Fine words.") for i in range(5)]
        batch = run_batch(tasks, graph, concurrency=5)
        results = [r async for r in batch]
    assert len(results) == 5
    for result in results:
        assert (
            result.status == "partial" and AnalysisRecord.of(result).tokens
        )  # tiktoken needs no LLM
        assert {(e.kind, e.type, e.attempts) for e in result.errors} == {
            ("keywords", "LLMStatusError", 3),
            ("sentiment", "LLMStatusError", 3),
        }
    assert faults.stats()["requests"] == 5 * 2 * 3
    assert batch.report.subtask_errors == {"LLMStatusError": 10}


async def test_in_flight_requests_never_exceed_the_cap(faults):
    faults.configure(latency_ms=50)
    async with endpoint(faults, concurrency=4) as llm:
        await asyncio.gather(*(llm.chat(HI) for _ in range(40)))
    assert faults.stats()["max_in_flight"] == 4


async def test_the_requests_per_minute_limit_holds(faults):
    async with endpoint(faults, rpm=600, concurrency=64) as llm:  # 10 per second
        start = time.perf_counter()
        await asyncio.gather(*(llm.chat(HI) for _ in range(40)))
        elapsed = time.perf_counter() - start
    arrivals = faults.stats()["arrivals"]
    assert elapsed >= 2.8  # a one-second burst of 10, then 10 per second
    busiest = max(sum(1 for b in arrivals if a <= b < a + 2.0) for a in arrivals)
    # The burst and two seconds' refill: 30 in any two seconds (a flat cap of 64 sends all 40 in
    # one), and two more for requests that reached the server late, behind a busy machine or the
    # set-up of their connection.
    assert busiest <= 32


async def test_the_tokens_per_minute_limit_holds(faults):
    long_prompt = [{"role": "user", "content": "word " * 100}]  # the server counts 100 tokens
    async with endpoint(faults, tpm=30_000, concurrency=64) as llm:  # 500/s
        start = time.perf_counter()
        calls = await asyncio.gather(*(llm.chat(long_prompt, max_tokens=10) for _ in range(20)))
        elapsed = time.perf_counter() - start
    used = sum(c.usage.total_tokens for c in calls)
    assert used >= 2000
    assert elapsed >= (used - 500) / 500 * 0.9  # a one-second burst, then 500 tokens per second


async def test_schema_invalid_content_gets_one_repair_re_ask(faults):
    faults.configure(script=["invalid"])
    async with endpoint(faults) as llm:
        parsed = await llm.parse(HI, SentimentOutput)
        assert parsed.attempts == 2 and parsed.usage.requests == 2
        faults.configure(rates={"invalid": 1.0})
        with pytest.raises(LLMOutputError, match="still invalid after a repair"):
            await llm.parse(HI, SentimentOutput)
    assert faults.stats()["requests"] == 2


async def test_a_server_without_json_schema_gets_json_object(faults):
    faults.configure(refuse_json_schema=True)
    async with endpoint(faults) as llm:
        parsed = await llm.parse(HI, SentimentOutput)
        assert llm.knowledge.now.output_mode == "json_object"
        await llm.parse(HI, SentimentOutput)  # the mode is remembered: no second refusal
    assert parsed.value.label in ("positive", "negative", "neutral")
    assert faults.stats()["requests"] == 3


async def test_a_base_url_without_v1_works(faults):
    assert normalize_base_url("http://localhost:11434") == "http://localhost:11434/v1"
    assert normalize_base_url("http://h/v1/") == "http://h/v1"
    assert normalize_base_url("https://gw.example/openai/v2") == "https://gw.example/openai/v2"
    async with Endpoint(faults.root, "fault") as llm:
        assert (await llm.chat(HI)).text == "echo: hi"


def test_the_api_key_never_shows_in_a_repr():
    llm = Endpoint("http://127.0.0.1:9/v1", "m", api_key="sk-very-secret")
    assert "sk-very-secret" not in repr(llm) and "sk-very-secret" not in str(vars(llm))


async def test_waiting_for_a_slot_does_not_count_against_the_deadline(faults):
    """Under load a call queues for a slot; only its own work runs against its deadline."""
    faults.configure(latency_ms=400)
    async with endpoint(faults, call=1.0, concurrency=1) as llm:
        calls = await asyncio.gather(*(llm.chat(HI) for _ in range(5)))  # 2 s in the queue
    assert [c.attempts for c in calls] == [1] * 5


async def test_a_400_that_is_not_about_the_format_keeps_the_mode(faults):
    """The fault server's 400 mentions "schema" (of a message), not the response format."""
    faults.configure(script=["400"])
    async with endpoint(faults) as llm:
        with pytest.raises(LLMStatusError, match="message schema"):
            await llm.parse(HI, SentimentOutput)
        assert llm.knowledge.now.output_mode == "json_schema"
        await llm.parse(HI, SentimentOutput)
    assert faults.stats()["requests"] == 2


async def test_a_transient_failure_of_tokenize_is_retried(faults):
    faults.configure(tokenize=True, script=["500", "503"], retry_after=0)
    async with endpoint(faults) as llm:
        pieces, count = await llm.tokenize("three little words")
    assert pieces == ["three", "little", "words"] and count == 3
    assert faults.stats()["requests"] == 3


async def test_failed_calls_still_count_in_the_usage(faults):
    faults.configure(rates={"500": 1.0})
    async with endpoint(faults, max_attempts=2) as llm:
        graph = build_fanout_graph(make_agents("llm", llm))
        batch = run_batch([Task(id="t", text="Words.")], graph)
        [result] = [r async for r in batch]
    assert result.status == "partial"
    assert batch.report.usage.requests == faults.stats()["requests"] == 4


@pytest.mark.parametrize("url", ["notaurl", "ftp://host/v1", "http://", "localhost:8080"])
def test_a_url_that_is_not_http_is_refused_up_front(url):
    with pytest.raises(ConfigError, match="not an http"):
        Endpoint(url, "m")


async def test_a_cached_answer_costs_no_request_and_says_so(faults, tmp_path):
    faults.configure(refuse_json_schema=False)
    with ResponseCache(tmp_path / "cache.sqlite") as cache:
        async with Endpoint(faults.url, "fault", cache=cache) as llm:
            first = await llm.parse(HI, SentimentOutput)
            again = await llm.parse(HI, SentimentOutput)
            sampled = [await llm.chat(HI, temperature=0.7) for _ in range(2)]
    assert first.usage.requests == 1 and first.usage.cached == 0
    assert again.usage.requests == 0 and again.usage.cached == 1 and again.value == first.value
    assert [s.usage.requests for s in sampled] == [1, 1]  # a sampled answer is one draw
    assert faults.stats()["requests"] == 3
    with ResponseCache(tmp_path / "cache.sqlite") as cache:  # kept on disk for the next run
        async with Endpoint(faults.url, "fault", cache=cache) as llm:
            assert (await llm.parse(HI, SentimentOutput)).usage.cached == 1


async def test_token_probabilities_are_cached_with_their_answer(faults, tmp_path):
    with ResponseCache(tmp_path / "cache.sqlite") as cache:
        async with Endpoint(faults.url, "fault", cache=cache) as llm:
            first = await llm.chat(HI, max_tokens=1, temperature=0.0, top_logprobs=3)
    with ResponseCache(tmp_path / "cache.sqlite") as cache:
        async with Endpoint(faults.url, "fault", cache=cache) as llm:
            again = await llm.chat(HI, max_tokens=1, temperature=0.0, top_logprobs=3)
    assert len(first.alternatives) == 3 and again.alternatives == first.alternatives
    assert again.usage.cached == 1 and faults.stats()["requests"] == 1


def test_a_cache_written_before_probabilities_were_kept_still_opens(tmp_path):
    import sqlite3

    old = sqlite3.connect(tmp_path / "old.sqlite")
    old.execute(
        "CREATE TABLE answers (key TEXT PRIMARY KEY, text TEXT NOT NULL, prompt_tokens INTEGER "
        "NOT NULL, completion_tokens INTEGER NOT NULL, finish_reason TEXT)"
    )
    old.execute("INSERT INTO answers VALUES ('k', 'an old answer', 3, 2, 'stop')")
    old.commit()
    old.close()
    with ResponseCache(tmp_path / "old.sqlite") as cache:
        found = asyncio.run(cache.get("k"))
        assert found is not None and (found.text, found.alternatives) == ("an old answer", ())


async def test_an_answer_that_fails_validation_is_not_replayed(faults, tmp_path):
    faults.configure(rates={"invalid": 1.0})
    with ResponseCache(tmp_path / "cache.sqlite") as cache:
        async with Endpoint(faults.url, "fault", cache=cache) as llm:
            with pytest.raises(LLMOutputError):
                await llm.parse(HI, SentimentOutput)
            faults.configure()  # the model is fine now: a retry must reach it
            parsed = await llm.parse(HI, SentimentOutput)
    assert parsed.usage.requests == 1 and parsed.usage.cached == 0


def test_the_backoff_without_retry_after_is_drawn_from_zero_up_to_a_doubling_window():
    """Full jitter: a sporadic 500's retry may come at once, and the window doubles per failure
    up to `backoff_max` (a floor of `backoff_initial` made the batch wait for its longest
    chain of retries)."""
    retrier = Retrier(RetryPolicy(backoff_initial=0.5, backoff_max=1.5), Timeouts())
    for failed, window in ((1, 0.5), (2, 1.0), (3, 1.5), (6, 1.5)):
        waits = [retrier._delay(None, failed) for _ in range(400)]
        assert all(0 <= wait <= window for wait in waits)
        assert min(waits) < window / 8 and max(waits) > window * 7 / 8
