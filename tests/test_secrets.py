"""The canary: a key that servers echo back must never reach anything the project writes.

Every command and the Python API run with a canary API key against a fault server that quotes
the key in its 401, 403, 429 and 500 bodies and in a response header; the chat server also gets a
canary token. Then every byte the project wrote is scanned: the commands' stdout and stderr,
every file under the run's directory (results, reports, the threads database, and whatever a
later feature writes there), and every HTTP reply the chat server sent.

Each output surface is a test of its own (`SURFACES`), so a failure names the surface; a key is
looked for in every encoding it takes on the wire (`encodings`: plain, URL-encoded, base64, and
HTTP Basic's base64 of `user:key`), with the key in the environment and inside the `--llm` URL.
A new output is covered by writing it under the run's folder (scanned whole) or by one
`seen[surface].add(...)`. Scanned today: stdout and stderr of `run` (in process and on a Ray
cluster, and by the Batch API), `runs`, `eval`, `chain` and `serve`; results.jsonl, its journal
(its batches too), the response cache,
the eval figures, the chain reports, the HTML run reports and the threads database; the OTLP
traces and metrics `run --otel` exports (message content on) as a receiver got them; the logs of
the Ray cluster the run started; every HTTP reply of the chat server, headers included (tool-call
replies and the answers to a client's tool results too); in the
Python API, every result, the report and the text of the exception a failed call raises; and a
tool loop's messages to the model, its tool-call records and its stream events.
"""

from __future__ import annotations

import itertools
import json
import threading
import uuid
from base64 import b64encode
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import quote

import httpx
import pytest
from conftest import run_cli, start_server
from otlp_receiver import OTLPReceiver

from anabranch import Endpoint, LLMError, build_fanout_graph, run_batch
from anabranch.analysis import make_agents
from anabranch.llm.settings import RetryPolicy
from anabranch.redact import public_url, redact, register_secret, split_credentials
from anabranch.testing.fault_tools import ScriptedCall, ToolScript
from anabranch.types import Task

CANARY = f"sk-CANARY{uuid.uuid4().hex}"
"""The upstream API key: shaped like an OpenAI key, unique to this run."""
URL_CANARY = f"sk-URL{uuid.uuid4().hex}/+="
"""A key given inside the URL: its `/+=` read differently URL-encoded, and it goes on the wire
base64-encoded with its user name if it stays in the URL (HTTP Basic)."""
USER = "canary-user"
"""The user name before the key in the URL."""
TOKEN_CANARY = f"tok-CANARY{uuid.uuid4().hex}"
"""The chat server's own bearer token."""
REASONING = {"X-Anabranch-Progress": "reasoning"}
"""Progress as `reasoning_content` too: one more surface a message can reach."""
ECHOED = {"400": 0.2, "429": 0.2, "500": 0.2}
"""Each echoing fault on a fifth of the requests; the rest are answered. (A 401 or 403 ends a
run at once: the refused-key run below has its own server setting.)"""


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
        """The labels of the items holding a secret in any encoding it takes on the wire."""
        needles = {n.encode() for s in secrets for n in encodings(s)}
        return [label for label, data in self.items if any(n in data for n in needles)]


def encodings(secret: str) -> list[str]:
    """Every form a secret may be written in: plain, its random part alone (a secret cut in
    half, or re-encoded around its prefix), URL-encoded, base64 alone and as HTTP Basic's
    `user:secret`."""
    body = secret.removeprefix("sk-CANARY").removeprefix("tok-CANARY").removeprefix("sk-URL")
    forms = [
        secret,
        body[:32],
        quote(secret, safe=""),
        b64encode(secret.encode()).decode(),
        b64encode(f"{USER}:{secret}".encode()).decode(),
    ]
    return [f for f in forms if f]


@pytest.fixture
def echoing(faults):
    faults.configure(echo_credentials=True, rates=ECHOED, retry_after=0, seed=7)
    return faults


def _proc(seen: Seen, label: str, proc) -> None:
    seen.add(f"{label} stdout", proc.stdout)
    seen.add(f"{label} stderr", proc.stderr)


def url_with(url: str, key: str) -> str:
    """`url` with `user:KEY@` inside, the key URL-encoded as a URL must carry it."""
    return url.replace("http://", f"http://{USER}:{quote(key, safe='')}@")


SURFACES = (
    "run", "run with the key in the URL", "chain", "runs", "run --retry-failed", "eval",
    "eval with the key in the URL", "serve", "the HTML run reports", "the OTLP export",
    "serve's OTLP export", "every file under the run's folder",
)  # fmt: skip
"""The outputs the commands write, each scanned on its own so that a leak names its surface."""


@pytest.fixture(scope="module")
def surfaces(fault_server, tmp_path_factory):
    """Every surface's output, from one pass over the commands against the echoing server."""
    run_dir = tmp_path_factory.mktemp("canary")
    _write_inputs(run_dir)
    fault_server.configure(echo_credentials=True, rates=ECHOED, retry_after=0, seed=7)
    seen = {surface: Seen() for surface in SURFACES}
    env = {"ANABRANCH_LLM_API_KEY": CANARY}
    llm = ["--llm", fault_server.url, "--model", "fault"]
    tasks = str(run_dir / "tasks.jsonl")

    # `run`, with the key from the environment, and with the key inside the URL (no env key).
    # The first also writes its HTML report and exports its traces and metrics over OTLP,
    # message content on, to a receiver: both are surfaces of their own.
    content = {"OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT": "true"}
    with OTLPReceiver() as otlp:
        proc = run_cli("run", tasks, *llm, "--out", str(run_dir / "results.jsonl"),
                       "--cache", str(run_dir / "cache.sqlite"), "--report",
                       str(run_dir / "run.html"), "--otel",
                       env={**env, **content, "OTEL_EXPORTER_OTLP_ENDPOINT": otlp.url})  # fmt: skip
    _proc(seen["run"], "run", proc)
    assert otlp.bodies["/v1/traces"] and otlp.bodies["/v1/metrics"]
    for route, bodies in otlp.bodies.items():
        seen["the OTLP export"].add(f"OTLP {route}", b"".join(bodies))
    seen["the HTML run reports"].add("run.html", (run_dir / "run.html").read_bytes())
    assert proc.returncode == 4, proc.stderr  # delivered, some with errors
    for name in ("results.jsonl", "results.jsonl.journal", "cache.sqlite"):
        seen["run"].add(name, (run_dir / name).read_bytes())
    url_dir = run_dir / "url"
    url_dir.mkdir()
    proc = run_cli("run", tasks, "--llm", url_with(fault_server.url, URL_CANARY), "--model",
                   "fault", "--out", str(url_dir / "results.jsonl"))  # fmt: skip
    _proc(seen["run with the key in the URL"], "run", proc)
    assert proc.returncode == 4, proc.stderr
    assert "LLM: fault at http://127.0.0.1:" in proc.stdout
    seen["run with the key in the URL"].add_tree(url_dir)
    # A refused key ends the run (exit 2) with a message that quotes the server's 401 body.
    fault_server.configure(echo_credentials=True, rates={"401": 1.0}, retry_after=0, seed=7)
    refused_dir = run_dir / "refused"
    refused_dir.mkdir()
    proc = run_cli("run", tasks, "--llm", url_with(fault_server.url, URL_CANARY), "--model",
                   "fault", "--out", str(refused_dir / "results.jsonl"))  # fmt: skip
    _proc(seen["run with the key in the URL"], "run refused", proc)
    assert proc.returncode == 2 and "the key came from the URL" in proc.stderr, proc.stderr
    seen["run with the key in the URL"].add_tree(refused_dir)
    # A server that keeps failing opens the breaker, which names the server on stderr while it
    # waits and when it gives up: the URL it names carries the key.
    fault_server.configure(echo_credentials=True, rates={"500": 1.0}, retry_after=0, seed=7)
    down_dir = run_dir / "down"
    down_dir.mkdir()
    proc = run_cli("run", tasks, "--llm", url_with(fault_server.url, URL_CANARY), "--model",
                   "fault", "--out", str(down_dir / "results.jsonl"),
                   "--give-up-after", "2")  # fmt: skip
    _proc(seen["run with the key in the URL"], "run down", proc)
    assert "not answering since" in proc.stderr and "gave up" in proc.stderr, proc.stderr
    seen["run with the key in the URL"].add_tree(down_dir)
    fault_server.configure(echo_credentials=True, rates=ECHOED, retry_after=0, seed=7)

    # `chain`: a report on disk, streamed text on stdout.
    for i in range(3):
        report = run_dir / f"report{i}.md"
        proc = run_cli("chain", "Plan a launch.", *llm, "--out", str(report), env=env)
        _proc(seen["chain"], f"chain {i}", proc)
        if report.exists():
            seen["chain"].add(report.name, report.read_bytes())

    # `runs`: the journal's listing and one run's trace.
    listing = run_cli("runs", str(run_dir / "results.jsonl.journal"))
    _proc(seen["runs"], "runs", listing)
    _proc(seen["runs"], "runs show", run_cli("runs", "show", listing.stdout.split()[0],
                                             str(run_dir / "results.jsonl.journal"),
                                             "--report", str(run_dir / "past.html")))  # fmt: skip
    seen["the HTML run reports"].add("past.html", (run_dir / "past.html").read_bytes())
    # A retry of the failed subtasks, against the same echoing server.
    proc = run_cli("run", tasks, *llm, "--retry-failed", "--out",
                   str(run_dir / "results.jsonl"), env=env)  # fmt: skip
    _proc(seen["run --retry-failed"], "run --retry-failed", proc)
    for name in ("results.jsonl", "results.jsonl.journal"):
        seen["run --retry-failed"].add(name, (run_dir / name).read_bytes())

    # `eval`: the LLM backends' figures, on stdout and as JSON.
    proc = run_cli("eval", str(run_dir / "labelled.jsonl"), *llm, "--backend", "llm",
                   "--backend", "llm-probs", "--out", str(run_dir / "figures.json"),
                   env=env)  # fmt: skip
    _proc(seen["eval"], "eval", proc)
    assert proc.returncode == 0, proc.stderr
    seen["eval"].add("figures.json", (run_dir / "figures.json").read_bytes())
    # A server without token probabilities: the blend warns, naming the server, and falls back.
    # From here on the server sends none (Ray's workers and `serve` take the same path).
    fault_server.configure(echo_credentials=True, rates=ECHOED, retry_after=0, seed=7,
                           logprobs=False)  # fmt: skip
    # 20 texts: with a fifth of requests answered, some reach the fallback (all miss it: 3e-4).
    proc = run_cli("eval", "--sample", "20", "--llm", url_with(fault_server.url, URL_CANARY),
                   "--model", "fault", "--backend", "llm-blend")  # fmt: skip
    _proc(seen["eval with the key in the URL"], "eval", proc)
    assert "JSON judgement instead" in proc.stderr and "LLM: fault at" in proc.stdout

    # `serve`: both graphs, streamed and not, with and without a thread, progress as reasoning;
    # the Responses API too; and the assistant with a client's tool: its own tool runs on the
    # server (its events in the progress), the client's call is the reply, its result goes back.
    # Its spans, message content on, go over OTLP to a receiver: a surface of their own.
    fault_server.configure(echo_credentials=True, rates=ECHOED, retry_after=0, seed=7,
                           logprobs=False, tools=TOOL_SCRIPT)  # fmt: skip
    db = run_dir / "threads.sqlite"
    graphs = ("--graph", "analyze", "--graph", "chain", "--graph", "assistant")
    otlp = OTLPReceiver().__enter__()
    process, url = start_server(*llm, "--threads-db", str(db), *graphs, "--otel",
                                token=TOKEN_CANARY, env={**env, **content,
                                "OTEL_EXPORTER_OTLP_ENDPOINT": otlp.url})  # fmt: skip
    try:
        headers = {"Authorization": f"Bearer {TOKEN_CANARY}"}
        asked = [{"role": "user", "content": "I love it."}]
        with httpx.Client(base_url=url, headers=headers, timeout=60) as http:
            for graph, stream, thread, _ in itertools.product(
                ("analyze", "chain"), (False, True), (None, "a-thread"), range(2)
            ):
                body = {"model": graph, "stream": stream, "user": thread, "messages": asked}
                reply = http.post("/chat/completions", json=body, headers=REASONING)
                label = f"serve {graph} stream={stream} thread={thread}"
                seen["serve"].add(label, repr(reply.headers).encode() + reply.content)
            for graph, stream in itertools.product(("analyze", "chain"), (False, True)):
                body = {"model": graph, "stream": stream, "input": "I love it."}
                reply = http.post("/responses", json=body)
                label = f"serve responses {graph} stream={stream}"
                seen["serve"].add(label, repr(reply.headers).encode() + reply.content)
            calls = 0
            for api, stream, _ in itertools.product(("chat", "responses"), (False, True), range(4)):
                for label, reply in _tool_round_trip(http, api, stream):
                    seen["serve"].add(label, repr(reply.headers).encode() + reply.content)
                    calls += b"get_weather" in reply.content
            assert calls, "no reply carried the client's tool call"
    finally:
        process.terminate()
        out, err = process.communicate(timeout=20)
        seen["serve"].add("serve stdout", out)
        seen["serve"].add("serve stderr", err)
        otlp.__exit__(None, None, None)
    assert b"invoke_workflow chain" in b"".join(otlp.bodies["/v1/traces"])
    for route, bodies in otlp.bodies.items():
        seen["serve's OTLP export"].add(f"serve OTLP {route}", b"".join(bodies))
    assert db.stat().st_size > 0
    seen["serve"].add("threads.sqlite", db.read_bytes())

    # Every echoing fault really happened, so the scans had something to find.
    faults_seen = fault_server.stats()["faults"]
    assert all(faults_seen.get(code, 0) > 0 for code in ECHOED), faults_seen
    fault_server.configure()
    seen["every file under the run's folder"].add_tree(run_dir)  # what a later feature writes
    return seen


TOOL_SCRIPT = ToolScript(turns=[
    [ScriptedCall(name="sentiment", arguments={"text": "I love it."})],
    [ScriptedCall(name="get_weather", arguments={"city": "Oslo"})],
])  # fmt: skip
"""The assistant's model: its own `sentiment` first, then the client's `get_weather`."""
WEATHER = {"type": "function", "name": "get_weather", "parameters": {"type": "object"}}


def _tool_round_trip(
    http: httpx.Client, api: str, stream: bool
) -> list[tuple[str, httpx.Response]]:
    """A request offering the client's tool to the assistant, then its result sent back: the
    replies (tool calls or the errors the echoing server caused), labelled."""
    label = f"serve assistant {api} tools stream={stream}"
    asked = [{"role": "user", "content": "Weather in Oslo?"}]
    if api == "chat":
        tool = {"type": "function", "function": {k: v for k, v in WEATHER.items() if k != "type"}}
        body = {"model": "assistant", "stream": stream, "messages": asked, "tools": [tool]}
        first = http.post("/chat/completions", json=body, headers=REASONING)
        call = {
            "id": "call_1",
            "type": "function",
            "function": {"name": "get_weather", "arguments": '{"city": "Oslo"}'},
        }
        body["messages"] = [
            *asked,
            {"role": "assistant", "content": None, "tool_calls": [call]},
            {"role": "tool", "tool_call_id": "call_1", "content": "12 C"},
        ]
        return [(label, first), (label + " result", http.post("/chat/completions", json=body))]
    body = {"model": "assistant", "stream": stream, "input": asked, "tools": [WEATHER]}
    first = http.post("/responses", json=body, headers=REASONING)
    body["input"] = [
        *asked,
        {
            "type": "function_call",
            "call_id": "call_1",
            "name": "get_weather",
            "arguments": '{"city": "Oslo"}',
        },
        {"type": "function_call_output", "call_id": "call_1", "output": "12 C"},
    ]
    return [(label, first), (label + " result", http.post("/responses", json=body))]  # fmt: skip


def _write_inputs(run_dir: Path) -> None:
    texts = ["I love this phone.", "The battery died. Awful.", "It is a phone.", "Great value!"]
    (run_dir / "tasks.jsonl").write_text(
        "".join(json.dumps({"id": f"t{i}", "text": t}) + "\n" for i, t in enumerate(texts * 3))
    )
    labels = ["positive", "negative", "neutral", "positive"]
    (run_dir / "labelled.jsonl").write_text("".join(
        json.dumps({"id": f"l{i}", "text": t, "label": label}) + "\n"
        for i, (t, label) in enumerate(zip(texts, labels, strict=True))))  # fmt: skip


@pytest.mark.slow  # the module fixture runs every command once: 40-100 s
@pytest.mark.parametrize("surface", SURFACES)
def test_no_output_carries_an_echoed_key_in_any_encoding(surfaces, surface):
    assert not surfaces[surface].leaks(CANARY, URL_CANARY, TOKEN_CANARY)


@pytest.mark.slow
def test_a_ray_run_carries_no_echoed_key(echoing, tmp_path):
    """The key travels to the workers inside the graph's recipe: Ray's own logs are scanned."""
    seen = Seen()
    _write_inputs(tmp_path)
    proc = run_cli("run", str(tmp_path / "tasks.jsonl"), "--llm", echoing.url, "--model",
                   "fault", "--executor", "ray", "--no-journal",
                   "--out", str(tmp_path / "results-ray.jsonl"),
                   env={"ANABRANCH_LLM_API_KEY": CANARY})  # fmt: skip
    _proc(seen, "run --executor ray", proc)
    assert proc.returncode == 4, proc.stderr
    ray_logs = Path("/tmp/ray/session_latest/logs").resolve()
    assert any(ray_logs.glob("*")), ray_logs
    seen.add_tree(ray_logs)
    seen.add_tree(tmp_path)
    assert not seen.leaks(CANARY)


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


@pytest.mark.slow  # end to end through `anabranch` processes: over 8 s on a busy machine
def test_a_key_in_the_url_is_sent_as_the_bearer_token(tmp_path):
    """httpx would send `user:key@` as `Basic base64(user:key)`, in place of the bearer token."""
    heard: list[str] = []

    class Refuse(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            heard.append(self.headers.get("Authorization", ""))
            self.send_response(401)
            self.send_header("content-type", "application/json")
            self.end_headers()
            self.wfile.write(b'{"error": {"message": "invalid api key"}}')

        def log_message(self, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Refuse)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        tasks = tmp_path / "tasks.jsonl"
        tasks.write_text('{"id": "a", "text": "x"}\n')
        url = url_with(f"http://127.0.0.1:{server.server_port}/v1", URL_CANARY)
        proc = run_cli("run", str(tasks), "--llm", url, "--model", "m", "--backend", "llm",
                       "--out", str(tmp_path / "o.jsonl"))  # fmt: skip
    finally:
        server.shutdown()
    assert proc.returncode == 2 and "refused the API key" in proc.stderr, proc.stderr
    assert heard == [f"Bearer {URL_CANARY}"]
    assert not list(tmp_path.glob("o.jsonl*"))  # a run that cannot start leaves no files


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


def test_the_redactor_knows_every_encoding_of_a_secret():
    key = f"k/{uuid.uuid4().hex}+="
    public_url(f"http://bob:{quote(key, safe='')}@host/v1")  # registers the key it carries
    basic = b64encode(f"bob:{key}".encode()).decode()
    for form in (key, quote(key, safe=""), b64encode(key.encode()).decode(), basic):
        assert key not in redact(f"x {form} y") and form not in redact(f"x {form} y"), form
    # The `Basic ...` shape, for credentials this process never saw.
    assert redact("Authorization: Basic dXNlcjpwYXNzd29yZA==") == "Authorization: Basic [REDACTED]"


def test_credentials_in_a_url_are_taken_out_of_it():
    key = "sk-in/the+url="
    assert split_credentials(f"https://me:{quote(key, safe='')}@api.example.com/v1") == (
        "https://api.example.com/v1", key)  # fmt: skip
    assert split_credentials("https://sk-alone@h/v1") == ("https://h/v1", "sk-alone")
    assert split_credentials("http://h:8080/v1") == ("http://h:8080/v1", None)
    assert redact(key) == "[REDACTED]"


async def test_tool_calls_never_carry_a_known_key(faults):
    """A tool that raises with the key in its message, and one that returns it: the tool
    messages the model reads, the records, the stream's events and the result hold no key."""
    from anabranch.agents.llm import LLMAgent
    from anabranch.testing.fault_tools import ScriptedCall, ToolScript

    def leaky() -> str:
        """Return a secret."""
        return f"the key is {CANARY}"

    def raising() -> str:
        """Fail, quoting a secret."""
        raise RuntimeError(f"Incorrect API key provided: {CANARY}")

    faults.configure(tools=ToolScript(turns=[[ScriptedCall(name="leaky"),
                                              ScriptedCall(name="raising")]]))  # fmt: skip
    seen = Seen()
    async with Endpoint(faults.url, "fault", api_key=CANARY) as endpoint:
        graph = build_fanout_graph([LLMAgent("agent", endpoint, tools=[leaky, raising])])
        async for mode, chunk in graph.astream(
            {"task": Task(id="t", text="go")}, stream_mode=["custom", "values"]
        ):
            if mode == "custom":
                seen.add(f"event {chunk.type}", chunk.model_dump_json())
            elif "result" in chunk:
                result = chunk["result"]
    seen.add("result", result.model_dump_json())
    [answer] = result.output("agent")
    assert answer.text.count("[REDACTED]") == 2  # what the model read: both, masked
    assert len(seen.items) == 7  # 2 model turns, 2 starts, 2 ends, the result
    assert not seen.leaks(CANARY)


@pytest.mark.slow
def test_a_batch_api_run_carries_no_echoed_key(fault_server, tmp_path):
    """The Batch API's error file quotes the key in its messages: the results, the journal's
    batch tables, the trace and `runs show` are scanned."""
    from anabranch.testing.fault_batches import BatchFaults

    fault_server.configure(echo_credentials=True, batches=BatchFaults(
        request_faults={"400": 0.3, "500": 0.2}, seed=7))  # fmt: skip
    seen = Seen()
    _write_inputs(tmp_path)
    out = tmp_path / "results-batch.jsonl"
    proc = run_cli("run", str(tmp_path / "tasks.jsonl"), "--llm", fault_server.url, "--model",
                   "fault", "--batch-api", "--batch-poll", "0.2", "--out", str(out),
                   env={"ANABRANCH_LLM_API_KEY": CANARY})  # fmt: skip
    _proc(seen, "run --batch-api", proc)
    assert proc.returncode == 4, proc.stderr  # delivered, some with the error file's errors
    assert fault_server.stats()["batches"]["batches_created"] >= 2  # the 500s went again
    run_id = proc.stdout.rsplit("(run ", 1)[1].split(")")[0]
    _proc(seen, "runs show", run_cli("runs", "show", run_id, str(out) + ".journal"))
    seen.add_tree(tmp_path)
    fault_server.configure()
    assert "Incorrect API key provided" in out.read_text()  # the server did quote it
    assert not seen.leaks(CANARY)
