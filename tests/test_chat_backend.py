"""The chat backend: a real uvicorn server, spoken to by the official openai client."""

import asyncio
import http.client
import json
import re
import socket
import sqlite3
import threading
import time

import httpx
import openai
import pytest
import uvicorn
from conftest import TOKEN, run_cli, start_server
from fastapi import FastAPI

from anabranch.analysis import analysis_chat
from anabranch.chat import create_app
from anabranch.errors import ConfigError
from anabranch.llm.local_server import free_port

HI = [{"role": "user", "content": "I love this great phone."}]


@pytest.fixture(scope="module")
def backend(fault_server, tmp_path_factory):
    db = tmp_path_factory.mktemp("threads") / "threads.sqlite"
    process, url = start_server("--llm", fault_server.url, "--model", "m", "--max-runs", "2",
                                "--threads-db", str(db))  # fmt: skip
    yield url, db
    process.terminate()
    process.wait(timeout=10)


@pytest.fixture
def client(backend, faults):
    return openai.OpenAI(base_url=backend[0], api_key=TOKEN, max_retries=0)


@pytest.fixture
def aclient(backend, faults):
    return openai.AsyncOpenAI(base_url=backend[0], api_key=TOKEN, max_retries=0)


def test_models_lists_the_graphs(client):
    assert [m.id for m in client.models.list()] == ["analyze", "chain"]


def test_sync_non_streaming_answer(client):
    response = client.chat.completions.create(model="analyze", messages=HI)
    content = response.choices[0].message.content
    # The fault server's keyword, "ok", is not in the text: dropped, and YAKE's fill in.
    assert content.startswith("Sentiment: ") and "Keywords: great phone" in content
    assert response.usage.prompt_tokens > 0 and response.choices[0].finish_reason == "stop"


async def test_async_streaming_answer_with_usage(aclient):
    stream = await aclient.chat.completions.create(
        model="analyze", messages=HI, stream=True, stream_options={"include_usage": True}
    )
    chunks = [chunk async for chunk in stream]
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text.startswith("Sentiment: ")
    assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] == "stop"
    assert chunks[-1].usage.prompt_tokens > 0


async def test_async_non_streaming_and_sync_streaming_chain(client, aclient):
    response = await aclient.chat.completions.create(model="chain", messages=HI)
    assert "Previous answer (agent_enforcer)" in response.choices[0].message.content
    chunks = list(client.chat.completions.create(model="chain", messages=HI, stream=True))
    streamed = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert streamed == response.choices[0].message.content


def test_progress_events_travel_as_sse_comments(backend, faults):
    body = {"model": "analyze", "messages": HI, "stream": True}
    headers = {"Authorization": f"Bearer {TOKEN}"}
    with httpx.stream("POST", f"{backend[0]}/chat/completions", json=body, headers=headers) as r:
        lines = list(r.iter_lines())
    events = [json.loads(line.split(" ", 2)[2]) for line in lines if line.startswith(": anabranch")]
    done = sorted(e["agent"] for e in events if e["type"] == "agent_done")
    assert done == ["keywords", "sentiment", "tokenize"]
    assert any(e["type"] == "usage" and e["prompt_tokens"] > 0 for e in events)
    assert lines[-2:] == ["data: [DONE]", ""] or lines[-1] == "data: [DONE]"


def test_a_token_is_required(backend):
    wrong = openai.OpenAI(base_url=backend[0], api_key="wrong", max_retries=0)
    with pytest.raises(openai.AuthenticationError):
        wrong.models.list()
    assert httpx.get(f"{backend[0]}/models").status_code == 401


def test_an_oversized_request_gets_413(client):
    huge = [{"role": "user", "content": "x" * (1 << 20)}]
    with pytest.raises(openai.APIStatusError) as caught:
        client.chat.completions.create(model="analyze", messages=huge)
    assert caught.value.status_code == 413


@pytest.mark.slow  # end to end through `anabranch` processes: over 8 s on a busy machine
async def test_runs_over_the_cap_get_429_with_retry_after(backend, faults):
    faults.configure(latency_ms=3000)
    headers = {"Authorization": f"Bearer {TOKEN}"}
    body = {"model": "analyze", "messages": HI}
    async with httpx.AsyncClient(base_url=backend[0], headers=headers, timeout=30) as http:
        slow = [asyncio.create_task(http.post("/chat/completions", json=body)) for _ in range(2)]
        await asyncio.sleep(1.0)  # both runs are now waiting on the slow LLM
        rejected = await http.post("/chat/completions", json=body)
        finished = await asyncio.gather(*slow)
    assert rejected.status_code == 429 and rejected.headers["retry-after"] == "1"
    assert [r.status_code for r in finished] == [200, 200]


async def test_a_client_that_disconnects_cancels_its_llm_calls(backend, faults):
    faults.configure(latency_ms=20_000)
    headers = {"Authorization": f"Bearer {TOKEN}"}
    body = {"model": "analyze", "messages": HI, "stream": True}
    async with (
        httpx.AsyncClient(base_url=backend[0], headers=headers, timeout=30) as http,
        http.stream("POST", "/chat/completions", json=body) as response,
    ):
        lines = response.aiter_lines()  # kept referenced: a dropped iterator closes the stream
        await anext(lines)  # the run has started
        deadline = time.monotonic() + 10
        while faults.stats()["in_flight"] < 2 and time.monotonic() < deadline:
            await asyncio.sleep(0.1)
        assert faults.stats()["in_flight"] == 2  # both LLM agents wait on the slow LLM: hang up
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        stats = faults.stats()
        if stats["requests"] >= 2 and stats["in_flight"] == 0:
            break
        await asyncio.sleep(0.1)
    assert stats["requests"] >= 2 and stats["in_flight"] == 0 and stats["cancelled"] >= 2


def test_a_thread_keeps_the_conversation(client, backend):
    first = [{"role": "user", "content": "My name is Ada."}]
    client.chat.completions.create(model="chain", messages=first, user="thread-ada")
    second = [{"role": "user", "content": "What is my name?"}]
    answer = client.chat.completions.create(
        model="chain", messages=second, extra_headers={"X-Thread-Id": "thread-ada"}
    )
    # The fault LLM echoes its prompt: the server supplied the earlier turn from its checkpoint.
    assert "user: My name is Ada." in answer.choices[0].message.content
    assert backend[1].stat().st_size > 0


@pytest.mark.slow  # end to end through `anabranch` processes: over 8 s on a busy machine
def test_a_failed_chain_is_an_error_not_content(client, faults):
    faults.configure(rates={"500": 1.0})
    with pytest.raises(openai.APIStatusError) as caught:
        client.chat.completions.create(model="chain", messages=HI)
    assert caught.value.status_code == 502 and "LLMStatusError" in caught.value.message
    with pytest.raises(openai.APIError, match="chain stopped"):
        list(client.chat.completions.create(model="chain", messages=HI, stream=True))


def test_a_public_host_needs_a_token():
    proc = run_cli("serve", "--host", "0.0.0.0", "--llm", "http://127.0.0.1:9/v1", "--model", "m")
    assert proc.returncode == 2 and "needs --api-token" in proc.stderr


@pytest.mark.parametrize("empty", ["", "   "])
def test_an_empty_token_is_no_token(empty):
    """`ANABRANCH_API_TOKEN= anabranch serve --host 0.0.0.0` once served anyone."""
    serve = ["serve", "--host", "0.0.0.0", "--llm", "http://127.0.0.1:9/v1", "--model", "m"]
    from_env = run_cli(*serve, env={"ANABRANCH_API_TOKEN": empty}, timeout=30)
    from_flag = run_cli(*serve, "--api-token", empty, timeout=30)
    for proc in (from_env, from_flag):
        assert proc.returncode == 2 and "the token given is empty" in proc.stderr
    with pytest.raises(ConfigError, match="api_token is empty"):
        create_app([], api_token=empty)


@pytest.mark.parametrize("authorization", ["Bearer ", "Bearer    ", "Bearer", "", TOKEN])
def test_an_empty_bearer_gets_401(backend, authorization):
    # http.client, since httpx refuses to send a header value with trailing blanks at all.
    url = httpx.URL(backend[0])
    connection = http.client.HTTPConnection(url.host, url.port, timeout=10)
    connection.request("GET", "/v1/models", headers={"Authorization": authorization})
    assert connection.getresponse().status == 401
    connection.close()
    right = httpx.get(f"{backend[0]}/models", headers={"Authorization": f"Bearer {TOKEN}"})
    assert right.status_code == 200


@pytest.mark.parametrize(
    ("messages", "why"),
    [
        ([{}], "messages.0.role: Field required"),
        ([{"role": "wizard", "content": "hi"}], "unknown role 'wizard'"),
        ([{"role": "system", "content": "Be terse."}], "no user message"),
        ([{"role": "user", "content": 42}], "messages.0.content"),
    ],
)
def test_a_malformed_conversation_is_the_clients_400(client, messages, why):
    """A 502 would tell the client to retry the same broken request."""
    with pytest.raises(openai.BadRequestError, match=re.escape(why)):
        client.chat.completions.create(model="analyze", messages=messages)


@pytest.mark.slow  # the embedded model
def test_streaming_from_the_embedded_model(tmp_path):
    process, url = start_server("--graph", "analyze", "--threads-db", str(tmp_path / "t.db"))
    try:
        client = openai.OpenAI(base_url=url, api_key=TOKEN)
        chunks = list(client.chat.completions.create(model="analyze", messages=HI, stream=True))
        text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
        assert text.startswith("Sentiment: ") and "server:/tokenize" in text
    finally:
        process.terminate()
        process.wait(timeout=10)


def test_a_chunked_body_is_refused_once_over_the_limit_not_at_its_end(backend):
    """No content-length to check first: the server must stop reading past the limit."""
    url = httpx.URL(backend[0])
    with socket.create_connection((url.host, url.port), timeout=10) as conn:
        conn.sendall(
            b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            + f"Authorization: Bearer {TOKEN}\r\n".encode()
            + b"Transfer-Encoding: chunked\r\n\r\n"
        )
        piece = b"x" * 65536
        for _ in range(20):  # 1.25 MiB, and the body never ends: only the limit can answer
            conn.sendall(f"{len(piece):x}\r\n".encode() + piece + b"\r\n")
        reply = conn.recv(65536)
    assert reply.startswith(b"HTTP/1.1 413")


async def test_simultaneous_streams_cannot_all_pass_the_run_cap(backend, faults):
    faults.configure(latency_ms=1500)
    headers = {"Authorization": f"Bearer {TOKEN}"}
    body = {"model": "analyze", "messages": HI, "stream": True}
    async with httpx.AsyncClient(base_url=backend[0], headers=headers, timeout=30) as http:
        replies = await asyncio.gather(
            *(http.post("/chat/completions", json=body) for _ in range(6))
        )
    statuses = sorted(r.status_code for r in replies)
    assert statuses == [200, 200, 429, 429, 429, 429]  # --max-runs 2


async def test_a_mounted_app_closes_its_thread_store_on_aclose(tmp_path):
    """A mounted app gets no lifespan: its parent must be able to close the SQLite store."""
    chat = create_app([analysis_chat()],
                      threads_db=str(tmp_path / "threads.sqlite"))  # fmt: skip
    backend = FastAPI()
    backend.mount("/graphs", chat)
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(backend, port=port, log_level="warning"))
    serving = asyncio.create_task(server.serve())
    while not server.started:
        await asyncio.sleep(0.05)

    def store_threads() -> int:  # aiosqlite runs each connection on a worker thread
        return sum("_connection_worker_thread" in t.name for t in threading.enumerate())

    try:
        async with httpx.AsyncClient(timeout=30) as http:
            reply = await http.post(
                f"http://127.0.0.1:{port}/graphs/v1/chat/completions",
                json={"model": "analyze", "messages": HI, "user": "t1"},
            )
        assert reply.status_code == 200
        assert store_threads() == 1
        await chat.aclose()
        for _ in range(50):
            if store_threads() == 0:
                break
            await asyncio.sleep(0.05)
        assert store_threads() == 0
    finally:
        server.should_exit = True
        await serving


def test_a_users_graph_keeps_nothing_of_its_own_in_the_thread_store(tmp_path, faults):
    (tmp_path / "echo_graph.py").write_text(
        "from typing import Annotated, TypedDict\n"
        "from langgraph.graph import START, StateGraph\n"
        "from langgraph.graph.message import add_messages\n\n"
        "class State(TypedDict):\n"
        "    messages: Annotated[list, add_messages]\n\n"
        "def echo(state: State) -> dict:\n"
        "    return {'messages': [('assistant', 'echo: ' + state['messages'][-1].content)]}\n\n"
        "builder = StateGraph(State)\n"
        "builder.add_node(echo)\n"
        "builder.add_edge(START, 'echo')\n"
        "graph = builder.compile()\n"
    )
    db = tmp_path / "threads.sqlite"
    process, url = start_server("--graph", "echo_graph:graph", "--llm", faults.url, "--model",
                                "m", "--threads-db", str(db),
                                env={"PYTHONPATH": str(tmp_path)})  # fmt: skip
    try:
        client = openai.OpenAI(base_url=url, api_key=TOKEN, max_retries=0)
        reply = client.chat.completions.create(model="graph", messages=HI, user="t1")
        assert reply.choices[0].message.content == f"echo: {HI[0]['content']}"
    finally:
        process.terminate()
        process.wait(timeout=10)
    with sqlite3.connect(db) as conn:
        spaces = {ns for (ns,) in conn.execute("SELECT DISTINCT checkpoint_ns FROM checkpoints")}
    assert spaces == {""}  # the conversation only, no checkpoints of the graph's insides
