"""Graphs as recipes (graphs/spec.py): built where they run, on their share of the limits, with
endpoints from the same options as the driver's. In this process; tests/test_cluster.py ships
the same recipes to a Ray cluster."""

from __future__ import annotations

import pytest

from anabranch import Task, run_batch
from anabranch.analysis.recipe import analysis_spec
from anabranch.errors import ConfigError
from anabranch.graphs.progress import Display
from anabranch.graphs.spec import GraphSpec, Share
from anabranch.llm.connect import LOCAL, LLMOptions, build_endpoint, open_endpoint
from anabranch.llm.settings import Limits, RetryPolicy

ONE_CALL = "tokenize=local,keywords=local,sentiment=llm"
"""One LLM call a task."""
QUIET = Display(progress=False)


def tasks(n: int) -> list[Task]:
    return [Task(id=f"t{i}", text=f"A short text, number {i}.") for i in range(n)]


def test_shares_divide_the_clusters_limits():
    limits = Limits(concurrency=9, rpm=600, tpm=90_000)
    parts = [Share(i, 4).limits(limits) for i in range(4)]
    assert {p.concurrency for p in parts} == {3} and sum(p.rpm or 0 for p in parts) == 600
    assert sum(p.tpm or 0 for p in parts) == 90_000


async def test_a_spec_also_runs_in_this_process():
    recipe = GraphSpec("anabranch.analysis.recipe:analysis_graph", {"llm": None})
    batch = run_batch(tasks(5), recipe)
    assert sorted([r.task_id async for r in batch]) == sorted(t.id for t in tasks(5))


def test_an_unknown_factory_is_named():
    with pytest.raises(ConfigError, match="nowhere:graph"):
        GraphSpec("nowhere:graph").build()


async def test_the_analysis_recipe_keeps_the_cache(faults, tmp_path):
    """The recipe's graph opens the cache file itself and closes it (its last writes) with the
    executor: a second batch sends nothing."""
    options = LLMOptions(faults.url, "fault", cache=tmp_path / "cache.sqlite")
    sent = []
    for _ in range(2):
        faults.configure()
        async with open_endpoint(options) as opened:
            batch = run_batch(tasks(6), analysis_spec(options, opened, backend=ONE_CALL),
                              display=QUIET)  # fmt: skip
            assert len([r async for r in batch if r.status == "ok"]) == 6
        sent.append(faults.stats()["requests"])
    assert sent == [6, 0]


async def test_the_analysis_recipe_keeps_the_retry_policy(faults):
    faults.configure(rates={"500": 1.0})
    options = LLMOptions(faults.url, "fault", retry=RetryPolicy(2, backoff_initial=0.01))
    recipe = analysis_spec(options, build_endpoint(options), backend=ONE_CALL)
    batch = run_batch(tasks(4), recipe, display=QUIET)
    assert {r.status async for r in batch} == {"partial"}
    assert faults.stats()["requests"] == 4 * 2  # two attempts a call, not the default four


async def test_for_the_embedded_server_the_recipe_holds_a_static_cap(faults):
    """Its slots are ours to set: the cap is sent from the first request, where adaptation
    starts from a few slots (the fault server stands in for the embedded one: it counts the
    most requests it had at once)."""
    most = {}
    for llm in (LOCAL, faults.url):
        faults.configure(latency_ms=300)
        options = LLMOptions(llm, "fault", limits=Limits(concurrency=12))
        recipe = analysis_spec(options, build_endpoint(options, url=faults.url), backend=ONE_CALL)
        batch = run_batch(tasks(12), recipe, concurrency=12, display=QUIET)
        assert len([r async for r in batch if r.status == "ok"]) == 12
        most[llm] = faults.stats()["max_in_flight"]
    assert most[LOCAL] == 12 and most[faults.url] < 12


def test_an_endpoint_from_options_with_a_cache_needs_it_open(tmp_path):
    with pytest.raises(ConfigError, match="cache"):
        build_endpoint(LLMOptions("http://127.0.0.1:9", "m", cache=tmp_path / "c.sqlite"))
    with pytest.raises(ConfigError, match="needs a server"):
        build_endpoint(LLMOptions(LOCAL))
