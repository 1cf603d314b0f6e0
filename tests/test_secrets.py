"""The canary: a key that servers echo back must never reach anything the project writes.

Every command and the Python API run with a canary API key against a fault server that quotes
the key in its 401, 403, 429 and 500 bodies and in a response header; the chat server also gets a
canary token. Then every byte the project wrote is scanned: the commands' stdout and stderr,
every file under the run's directory (results, reports, the threads database, and whatever a
later feature writes there), and every HTTP reply the chat server sent.

A new output is covered by writing it under `run_dir` (scanned whole) or by one `seen.add(...)`.
Scanned today: stdout and stderr of `run` (in process and on a Ray cluster), `runs`, `eval`,
`chain` and `serve`; results.jsonl, its journal, the response cache, the eval figures, the chain
reports and the threads database (all under `run_dir`); the logs of the Ray cluster the run
started; every HTTP reply of the chat server, headers included; and in the Python API, every
result, the report and the text of the exception a failed call raises.
"""

from __future__ import annotations

import itertools
import json
import uuid
from pathlib import Path

import httpx
import pytest
from conftest import run_cli, start_server

from anabranch import Endpoint, LLMError, build_fanout_graph, run_batch
from anabranch.analysis import make_agents
from anabranch.llm.settings import RetryPolicy
from anabranch.redact import public_url, redact, register_secret
from anabranch.types import Task

CANARY = f"sk-CANARY{uuid.uuid4().hex}"
"""The upstream API key: shaped like an OpenAI key, unique to this run."""
TOKEN_CANARY = f"tok-CANARY{uuid.uuid4().hex}"
"""The chat server's own bearer token."""
ECHOED = {"401": 0.2, "403": 0.2, "429": 0.2, "500": 0.2}
"""Each echoing fault on a fifth of the requests; the rest are answered."""


class Seen:
    """Everything the project emitted during the test, to scan at the end."""

    def __init__(self) -> None:
        self.items: list[tuple[str, bytes]] = []

    def add(self, label: str, data: str | bytes) -> None:
        self.items.append((label, data.encode() if isinstance(data, str) else data))

    def add_tree(self, root: Path) -> None:
        for path in sorted(root.rglob("*")):
            if path.is_file():
                self.add(str(path), path.read_bytes())

    def leaks(self, *secrets: str) -> list[str]:
        # The hex body alone too: a secret cut in half, or re-encoded around its prefix, leaks.
        needles = [s.encode() for s in secrets] + [s[-32:].encode() for s in secrets]
        return [label for label, data in self.items if any(n in data for n in needles)]


@pytest.fixture
def echoing(faults):
    faults.configure(echo_credentials=True, rates=ECHOED, retry_after=0, seed=7)
    return faults


@pytest.fixture
def run_dir(tmp_path):
    tasks = tmp_path / "tasks.jsonl"
    texts = ["I love this phone.", "The battery died. Awful.", "It is a phone.", "Great value!"]
    tasks.write_text("".join(json.dumps({"id": f"t{i}", "text": t}) + "\n"
                             for i, t in enumerate(texts * 3)))  # fmt: skip
    labels = ["positive", "negative", "neutral", "positive"]
    (tmp_path / "labelled.jsonl").write_text("".join(
        json.dumps({"id": f"l{i}", "text": t, "label": label}) + "\n"
        for i, (t, label) in enumerate(zip(texts, labels, strict=True))))  # fmt: skip
    return tmp_path


def _proc(seen: Seen, label: str, proc) -> None:
    seen.add(f"{label} stdout", proc.stdout)
    seen.add(f"{label} stderr", proc.stderr)


@pytest.mark.slow  # every output surface: 40-100 s
def test_no_output_carries_an_echoed_key(echoing, run_dir):
    seen = Seen()
    env = {"ANABRANCH_LLM_API_KEY": CANARY}
    llm = ["--llm", echoing.url, "--model", "fault"]
    tasks = str(run_dir / "tasks.jsonl")

    # `run`, with the key from the environment and, once, as a credential inside the URL.
    proc = run_cli("run", tasks, *llm, "--out", str(run_dir / "results.jsonl"),
                   "--cache", str(run_dir / "cache.sqlite"), env=env)  # fmt: skip
    _proc(seen, "run", proc)
    assert proc.returncode == 4, proc.stderr  # delivered, some with errors
    url_with_key = echoing.url.replace("http://", f"http://user:{CANARY}@")
    proc = run_cli("run", tasks, "--llm", url_with_key, "--model", "fault",
                   "--out", str(run_dir / "results-url.jsonl"))  # fmt: skip
    _proc(seen, "run with a key in the URL", proc)
    assert "LLM: fault at http://127.0.0.1:" in proc.stdout

    # `chain`: a report on disk, streamed text on stdout.
    for i in range(3):
        proc = run_cli("chain", "Plan a launch.", *llm, "--out", str(run_dir / f"report{i}.md"),
                       env=env)  # fmt: skip
        _proc(seen, f"chain {i}", proc)

    # `runs`: the journal's listing and one run's trace.
    listing = run_cli("runs", str(run_dir / "results.jsonl.journal"))
    _proc(seen, "runs", listing)
    _proc(seen, "runs show", run_cli("runs", "show", listing.stdout.split()[0],
                                     str(run_dir / "results.jsonl.journal")))  # fmt: skip
    # A retry of the failed subtasks, against the same echoing server.
    _proc(seen, "run --retry-failed", run_cli("run", tasks, *llm, "--retry-failed", "--out",
                                              str(run_dir / "results.jsonl"), env=env))  # fmt: skip

    # `eval`: the LLM backends' figures, on stdout and as JSON.
    proc = run_cli("eval", str(run_dir / "labelled.jsonl"), *llm, "--backend", "llm",
                   "--backend", "llm-probs", "--out", str(run_dir / "figures.json"),
                   env=env)  # fmt: skip
    _proc(seen, "eval", proc)
    assert proc.returncode == 0, proc.stderr
    # A server without token probabilities: the blend warns, naming the server, and falls back.
    # From here on the server sends none (Ray's workers and `serve` take the same path).
    echoing.configure(echo_credentials=True, rates=ECHOED, retry_after=0, seed=7, logprobs=False)
    # 20 texts: with a fifth of requests answered, some reach the fallback (all miss it: 3e-4).
    proc = run_cli("eval", "--sample", "20", "--llm", url_with_key, "--model", "fault",
                   "--backend", "llm-blend", env=env)  # fmt: skip
    _proc(seen, "eval without probabilities", proc)
    assert "JSON judgement instead" in proc.stderr and "LLM: fault at" in proc.stdout

    # `run` on a local Ray cluster: the key travels to the workers inside the graph's recipe,
    # so Ray's own logs of that cluster are scanned too.
    proc = run_cli("run", tasks, *llm, "--executor", "ray", "--no-journal",
                   "--out", str(run_dir / "results-ray.jsonl"), env=env)  # fmt: skip
    _proc(seen, "run --executor ray", proc)
    assert proc.returncode == 4, proc.stderr
    ray_logs = Path("/tmp/ray/session_latest/logs").resolve()
    assert any(ray_logs.glob("*")), ray_logs
    seen.add_tree(ray_logs)

    # `serve`: both graphs, streamed and not, with and without a thread.
    db = run_dir / "threads.sqlite"
    process, url = start_server(*llm, "--threads-db", str(db), token=TOKEN_CANARY, env=env)
    try:
        headers = {"Authorization": f"Bearer {TOKEN_CANARY}"}
        asked = [{"role": "user", "content": "I love it."}]
        with httpx.Client(base_url=url, headers=headers, timeout=60) as http:
            for graph, stream, thread, _ in itertools.product(
                ("analyze", "chain"), (False, True), (None, "a-thread"), range(2)
            ):
                body = {"model": graph, "stream": stream, "user": thread, "messages": asked}
                reply = http.post("/chat/completions", json=body)
                label = f"serve {graph} stream={stream} thread={thread}"
                seen.add(label, repr(reply.headers).encode() + reply.content)
    finally:
        process.terminate()
        out, err = process.communicate(timeout=20)
        seen.add("serve stdout", out)
        seen.add("serve stderr", err)

    # Every echoing fault really happened, so the scan below had something to find.
    faults_seen = echoing.stats()["faults"]
    assert all(faults_seen.get(code, 0) > 0 for code in ECHOED), faults_seen
    seen.add_tree(run_dir)
    assert db.stat().st_size > 0
    assert (run_dir / "results.jsonl.journal").is_file() and (run_dir / "cache.sqlite").is_file()
    assert not seen.leaks(CANARY, TOKEN_CANARY)


async def test_the_python_api_never_carries_an_echoed_key(echoing, tmp_path):
    seen = Seen()
    async with Endpoint(echoing.url, "fault", api_key=CANARY, retry=RetryPolicy(2)) as endpoint:
        graph = build_fanout_graph(make_agents("llm", endpoint))
        tasks = [Task(id=f"t{i}", text=f"Text number {i} is fine.") for i in range(12)]
        batch = run_batch(tasks, graph, concurrency=4)
        results = [r async for r in batch]
        echoing.configure(echo_credentials=True, script=["401"])
        with pytest.raises(LLMError) as caught:
            await endpoint.chat([{"role": "user", "content": "hi"}])
    assert len(results) == 12 and any(r.errors for r in results)
    for result in results:
        seen.add(f"result {result.task_id}", result.model_dump_json())
    seen.add("report", batch.report.model_dump_json())
    seen.add("raised", f"{caught.value!s} {caught.value!r} {caught.value.args!r}")
    assert "[REDACTED]" in str(caught.value)  # the server did quote the key
    assert not seen.leaks(CANARY)


def test_the_redactor_masks_key_shapes_and_url_credentials():
    register_secret("my-own-token-value")
    text = redact(
        "key sk-proj-AbC123xyz789 sent as Authorization: Bearer abc.def-ghi to "
        "https://alice:hunter22@api.example.com/v1 with my-own-token-value"
    )
    assert text == (
        "key [REDACTED] sent as Authorization: Bearer [REDACTED] to "
        "https://[REDACTED]@api.example.com/v1 with [REDACTED]"
    )
    assert public_url("http://user:pw-secret-9@host:8080/v1") == "http://host:8080/v1"
    assert redact("pw-secret-9 leaked") == "[REDACTED] leaked"
    assert redact("sk-short and a plain sentence") == "sk-short and a plain sentence"
