"""Traces of a served graph: one `invoke_workflow {graph}` span per chat request, the graph's
agent and chat spans under it in one trace, and a caller's `traceparent` continued.

A real uvicorn server in-process (`create_app`) over the fault server, spoken to over HTTP; the
spans go to the OpenTelemetry SDK's in-memory exporter. The end-to-end test runs the real
`anabranch serve --otel` and decodes what a real OTLP/HTTP receiver got.
"""

from __future__ import annotations

import asyncio
import json
import signal

import httpx
import pytest
import uvicorn
from conftest import start_server
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind, StatusCode
from otlp_receiver import OTLPReceiver, attributes

from anabranch import Endpoint
from anabranch.agents.specialists import DEFAULT_CHAIN
from anabranch.chat import create_app
from anabranch.chat.adapters import chat_graph
from anabranch.llm.local_server import free_port
from anabranch.llm.settings import RetryPolicy, Timeouts
from anabranch.telemetry import instrument, uninstrument

STEPS = [s.name for s in DEFAULT_CHAIN]
"""The chain's specialists: an agent span and a chat span each, per request."""
HI = [{"role": "user", "content": "Say something about rivers."}]
ANALYSTS = "keywords=llm,sentiment=llm,tokenize=local"
"""The analysis graph's backends: two analysts that call the LLM, one that does not."""
CALLER_TRACE = "4bf92f3577b34da6a3ce929d0e0e4736"
CALLER_SPAN = "00f067aa0ba902b7"


@pytest.fixture
def spans():
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    instrument(provider)
    yield exporter
    uninstrument()
    provider.shutdown()


async def _serving(faults, tmp_path, graphs=("chain",)):
    endpoint = Endpoint(faults.url, "fault", timeouts=Timeouts(attempt=5, call=30),
                        retry=RetryPolicy(2, backoff_initial=0.01, backoff_max=0.02))  # fmt: skip
    chats = [chat_graph(name, endpoint, backend=ANALYSTS) for name in graphs]
    app = create_app(chats, threads_db=str(tmp_path / "t.sqlite"))
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(app, port=port, log_level="warning"))
    serving = asyncio.create_task(server.serve())
    while not server.started:
        await asyncio.sleep(0.05)
    return endpoint, app, server, serving, f"http://127.0.0.1:{port}/v1"


def _under(span, by_id) -> bool:
    """`span` is a descendant of a request span (walking its parents in the export)."""
    parent = span.parent
    while parent is not None and parent.span_id in by_id:
        if by_id[parent.span_id].name == "invoke_workflow chain":
            return True
        parent = by_id[parent.span_id].parent
    return False


async def test_each_served_request_is_a_workflow_span_over_its_agents_and_calls(
    faults, spans, tmp_path
):
    endpoint, app, server, serving, url = await _serving(faults, tmp_path)
    traceparent = f"00-{CALLER_TRACE}-{CALLER_SPAN}-01"
    try:
        async with httpx.AsyncClient(base_url=url, timeout=60) as http:
            plain = await http.post("/chat/completions", json={"model": "chain", "messages": HI})
            streamed = await http.post(
                "/chat/completions",
                json={"model": "chain", "messages": HI, "stream": True,
                      "stream_options": {"include_usage": True}},
                headers={"traceparent": traceparent},
            )  # fmt: skip
            response = await http.post("/responses", json={"model": "chain", "input": "Hello"})
            faults.configure(rates={"400": 1.0})  # every LLM call refused: the chain fails
            failed = await http.post("/chat/completions", json={"model": "chain", "messages": HI})
    finally:
        server.should_exit = True
        await serving
        await app.aclose()
        await endpoint.aclose()
    assert plain.status_code == streamed.status_code == response.status_code == 200
    assert failed.status_code == 502, failed.text
    chunks = [json.loads(line[len("data: ") :]) for line in streamed.text.splitlines()
              if line.startswith("data: {")]  # fmt: skip
    usage = chunks[-1]["usage"]

    finished = spans.get_finished_spans()
    by_id = {s.context.span_id: s for s in finished}
    requests = [s for s in finished if s.name == "invoke_workflow chain"]
    assert len(requests) == 4
    ids = {s.attributes["gen_ai.response.id"]: s for s in requests}
    first, second = ids[plain.json()["id"]], ids[chunks[0]["id"]]
    third = ids[response.json()["id"]]
    [fourth] = [s for s in requests if s not in (first, second, third)]
    for span in requests:
        a = span.attributes
        assert span.kind == SpanKind.INTERNAL
        assert a["gen_ai.operation.name"] == "invoke_workflow"
        assert a["gen_ai.request.model"] == a["gen_ai.workflow.name"] == "chain"
    streams = [s.attributes["anabranch.stream"] for s in (first, second, third)]
    assert streams == [False, True, False]

    # Each request's trace: its own, but the one with traceparent continues the caller's.
    assert second.context.trace_id == int(CALLER_TRACE, 16)
    assert second.parent is not None and second.parent.span_id == int(CALLER_SPAN, 16)
    assert first.parent is None and third.parent is None
    assert len({s.context.trace_id for s in requests}) == 4

    # Under each request: one agent span per chain step, and one chat span under each of those.
    for request in (first, second, third):
        trace = [s for s in finished if s.context.trace_id == request.context.trace_id]
        agents = [s for s in trace if s.attributes["gen_ai.operation.name"] == "invoke_agent"]
        assert sorted(s.name for s in agents) == sorted(f"invoke_agent {n}" for n in STEPS)
        assert all(s.parent.span_id == request.context.span_id for s in agents)
        chats = [s for s in trace if s.attributes["gen_ai.operation.name"] == "chat"]
        assert len(chats) == len(STEPS)
        assert {s.parent.span_id for s in chats} == {s.context.span_id for s in agents}
        assert all(_under(s, by_id) for s in chats)
        assert request.attributes["gen_ai.response.finish_reasons"] == ("stop",)
        # The answer's usage, not as gen_ai.usage.*: the chat spans carry that, counted once.
        assert not any(k.startswith("gen_ai.usage.") for k in request.attributes)
        assert request.attributes["anabranch.usage.output_tokens"] == sum(
            s.attributes["gen_ai.usage.output_tokens"] for s in chats
        )
    assert second.attributes["anabranch.usage.input_tokens"] == usage["prompt_tokens"] > 0
    assert second.attributes["anabranch.usage.output_tokens"] == usage["completion_tokens"] > 0
    assert third.attributes["gen_ai.conversation.id"].startswith("responses-")

    # The failed run: the request span says why, its failed call sits under it.
    assert fourth.status.status_code == StatusCode.ERROR
    assert fourth.attributes["error.type"] == "ChatGraphError"
    assert "gen_ai.response.finish_reasons" not in fourth.attributes
    refused = [s for s in finished if s.context.trace_id == fourth.context.trace_id
               and s.attributes["gen_ai.operation.name"] == "chat"]  # fmt: skip
    assert refused and all(s.attributes["error.type"] == "400" for s in refused)
    [step] = [s for s in finished if s.context.trace_id == fourth.context.trace_id
              and s.attributes["gen_ai.operation.name"] == "invoke_agent"]  # fmt: skip
    assert step.status.status_code == StatusCode.ERROR and step.attributes["error.type"]
    assert all(_under(s, by_id) for s in refused)


async def test_the_analysis_and_the_assistant_hang_their_agents_under_the_request(
    faults, spans, tmp_path
):
    endpoint, app, server, serving, url = await _serving(faults, tmp_path, ("analyze", "assistant"))
    try:
        async with httpx.AsyncClient(base_url=url, timeout=60) as http:
            for graph in ("analyze", "assistant"):
                reply = await http.post("/chat/completions", json={"model": graph, "messages": HI})
                assert reply.status_code == 200, reply.text
    finally:
        server.should_exit = True
        await serving
        await app.aclose()
        await endpoint.aclose()
    finished = spans.get_finished_spans()
    for graph, agents in (("analyze", {"keywords", "sentiment", "tokenize"}),
                          ("assistant", {"assistant"})):  # fmt: skip
        [request] = [s for s in finished if s.name == f"invoke_workflow {graph}"]
        trace = [s for s in finished if s.context.trace_id == request.context.trace_id]
        named = {s.attributes["gen_ai.agent.name"]: s for s in trace
                 if s.attributes["gen_ai.operation.name"] == "invoke_agent"}  # fmt: skip
        assert set(named) == agents
        chats = [s for s in trace if s.attributes["gen_ai.operation.name"] == "chat"]
        assert chats and {s.parent.span_id for s in chats} <= {
            s.context.span_id for s in named.values()
        }
        assert all(s.attributes["gen_ai.agent.name"] in agents for s in chats)


async def test_a_request_the_client_leaves_ends_its_span_as_cancelled(faults, spans, tmp_path):
    faults.configure(latency_ms=30_000)  # the LLM does not answer while the test runs
    endpoint, app, server, serving, url = await _serving(faults, tmp_path)
    try:
        async with httpx.AsyncClient(base_url=url, timeout=60) as http:
            body = {"model": "chain", "messages": HI, "stream": True}
            async with http.stream("POST", "/chat/completions", json=body) as reply:
                async for _ in reply.aiter_lines():
                    break  # the first chunk came: the run is under way; leave
        for _ in range(200):  # the server notices on its next poll
            if any(s.name == "invoke_workflow chain" for s in spans.get_finished_spans()):
                break
            await asyncio.sleep(0.05)
    finally:
        server.should_exit = True
        await serving
        await app.aclose()
        await endpoint.aclose()
    [request] = [s for s in spans.get_finished_spans() if s.name == "invoke_workflow chain"]
    assert request.attributes["error.type"] == "cancelled"
    assert request.status.status_code == StatusCode.ERROR


@pytest.mark.slow  # a real `anabranch serve` with its exporters
def test_serve_with_otel_exports_each_requests_spans(faults, tmp_path):
    with OTLPReceiver() as receiver:
        env = {"OTEL_EXPORTER_OTLP_ENDPOINT": receiver.url, "OTEL_SERVICE_NAME": "serve-test"}
        process, url = start_server("--graph", "chain", "--llm", faults.url, "--model", "fault",
                                    "--threads-db", str(tmp_path / "t.sqlite"), "--otel",
                                    env=env)  # fmt: skip
        try:
            headers = {"Authorization": "Bearer test-token-123"}
            with httpx.Client(base_url=url, headers=headers, timeout=60) as http:
                for stream in (False, True):
                    reply = http.post(
                        "/chat/completions",
                        json={"model": "chain", "messages": HI, "stream": stream},
                    )
                    assert reply.status_code == 200, reply.text
        finally:
            process.terminate()  # the server flushes the spans still buffered, then ends
            process.wait(timeout=30)
    assert process.returncode == -signal.SIGTERM, process.stderr.read().decode()
    spans = receiver.spans()
    assert {resource["service.name"] for resource, _ in spans} == {"serve-test"}
    found = [s for _, s in spans]
    requests = [s for s in found if s.name == "invoke_workflow chain"]
    assert len(requests) == 2
    for request in requests:
        trace = [s for s in found if s.trace_id == request.trace_id]
        agents = [s for s in trace if s.name.startswith("invoke_agent ")]
        assert sorted(s.name for s in agents) == sorted(f"invoke_agent {n}" for n in STEPS)
        assert {s.parent_span_id for s in agents} == {request.span_id}
        chats = [s for s in trace if s.name == "chat fault"]
        assert {s.parent_span_id for s in chats} == {s.span_id for s in agents}
        assert attributes(request.attributes)["gen_ai.request.model"] == "chain"
