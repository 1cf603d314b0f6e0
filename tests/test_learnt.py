"""What an endpoint learnt of its server, it keeps: the next run on the journal probes nothing."""

import json
import sqlite3

import pytest

from anabranch import Task, run_batch
from anabranch.analysis import SentimentOutput
from anabranch.analysis.recipe import analysis_spec
from anabranch.journal import Journal
from anabranch.llm.connect import LLMOptions, build_endpoint
from anabranch.llm.endpoint import Endpoint
from anabranch.llm.learnt import Learnt, server_key
from anabranch.llm.structured import response_format
from tests.conftest import run_cli

HI = [{"role": "user", "content": "hi"}]


def _tasks(path, prefix: str, n: int) -> None:
    path.write_text("".join(json.dumps({"id": f"{prefix}{i}", "text": f"Review {i}: it works."})
                            + "\n" for i in range(n)))  # fmt: skip


def _probes(params: list[dict]) -> tuple[int, int]:
    """Requests that asked for token probabilities, and requests in `json_schema` mode."""
    logprobs = sum(1 for p in params if p.get("logprobs"))
    schema = sum(1 for p in params if (p.get("response_format") or {}).get("type") == "json_schema")
    return logprobs, schema


@pytest.mark.slow  # two `anabranch run` processes: over 10 s on a busy machine
def test_the_second_run_on_a_journal_sends_no_probes(tmp_path, faults):
    """A server without `logprobs` and without `json_schema`: the first run finds both out (as
    many probes as calls in flight), the next run on the same journal sends neither."""
    faults.configure(logprobs=False, refuse_json_schema=True)
    out = tmp_path / "results.jsonl"
    llm = ["--llm", faults.url, "--model", "fault", "--out", str(out)]
    _tasks(tmp_path / "a.jsonl", "a", 12)
    first = run_cli("run", str(tmp_path / "a.jsonl"), *llm)
    assert first.returncode == 0, first.stderr
    logprobs, schema = _probes(faults.stats()["params"])
    assert logprobs >= 1 and schema >= 1  # the first run asked, and learnt

    faults.configure(logprobs=False, refuse_json_schema=True)  # counters back to zero
    _tasks(tmp_path / "b.jsonl", "b", 12)  # another run (other tasks), the same journal
    second = run_cli("run", str(tmp_path / "b.jsonl"), *llm)
    assert second.returncode == 0, second.stderr
    stats = faults.stats()
    assert _probes(stats["params"]) == (0, 0)
    assert stats["requests"] == len(stats["params"]) > 0  # every request was a useful one
    # The fallback is said (the blend used the model's JSON judgement), with its count.
    assert "sentiment: 12 of 12 sentiment subtasks fell back to the model's JSON judgement" in (
        second.stderr
    )


async def test_a_server_that_changed_is_probed_again_not_failed(tmp_path, faults):
    """A remembered mode that is refused now: the modes are tried again from the best."""
    faults.configure(refuse_json_schema=True)
    with Journal(tmp_path / "j.journal") as journal:
        async with Endpoint(faults.url, "fault") as llm:
            llm.remember(journal)
            await llm.parse(HI, SentimentOutput)
            assert llm.knowledge.now.output_mode == "json_object"
    with Journal(tmp_path / "j.journal") as journal:
        memory = journal
        assert memory.recall(server_key(faults.url, "fault")) == Learnt(output_mode="json_object")
        faults.configure(refuse_json_object=True)  # it changed: json_schema now, no json_object
        async with Endpoint(faults.url, "fault") as llm:
            llm.remember(memory)
            parsed = await llm.parse(HI, SentimentOutput)
            assert llm.knowledge.now.output_mode == "json_schema"
        assert parsed.value.label in ("positive", "negative", "neutral")
        kinds = [p["response_format"]["type"] for p in faults.stats()["params"]]
        assert kinds == ["json_object", "json_schema"]  # one refusal, then the best mode again
    with Journal(tmp_path / "j.journal") as journal:
        assert journal.recall(server_key(faults.url, "fault")) == Learnt()


async def test_the_memory_keys_the_server_never_the_key(tmp_path, faults):
    url = faults.url.replace("http://", "http://user:sk-canary-123@")
    with Journal(tmp_path / "j.journal") as journal:
        async with Endpoint(url, "fault") as llm:
            llm.remember(journal)
            await llm.chat(HI, max_tokens=1, top_logprobs=3)
            llm.knowledge.learn(logprobs=True)  # what the blend learns from such an answer
    rows = sqlite3.connect(tmp_path / "j.journal").execute("SELECT * FROM servers").fetchall()
    assert [r[0] for r in rows] == [server_key(faults.url, "fault")]
    assert "sk-canary" not in (tmp_path / "j.journal").read_bytes().decode(errors="replace")
    assert json.loads(rows[0][1])["logprobs"] is True


def test_a_journal_row_of_another_version_is_found_out_again():
    assert Learnt.of({"output_mode": "grammar"}) is None
    assert Learnt.of({"unknown": 1}) is None
    assert Learnt.of(Learnt(tokenize=False).as_json()) == Learnt(tokenize=False)


def test_the_response_format_is_built_once_per_model_and_mode():
    first = response_format(SentimentOutput, "json_schema")
    assert response_format(SentimentOutput, "json_schema") is first
    assert first["json_schema"]["schema"] == SentimentOutput.model_json_schema()
    assert response_format(SentimentOutput, "prompted") is None


async def test_the_ray_recipe_carries_what_the_driver_knew(faults):
    """A worker's endpoint starts from its driver's knowledge (built here from the recipe, as a
    worker does): a server the driver found without `logprobs` is not probed by the workers."""
    faults.configure(logprobs=False)
    options = LLMOptions(faults.url, "fault")
    async with build_endpoint(options, url=faults.url) as driver:
        driver.knowledge.learn(logprobs=False)
        recipe = analysis_spec(options, driver)
    assert recipe.kwargs["learnt"]["logprobs"] is False
    batch = run_batch([Task(id=f"t{i}", text="Nice phone.") for i in range(4)], recipe)
    assert [r.status async for r in batch] == ["ok"] * 4
    assert _probes(faults.stats()["params"])[0] == 0
