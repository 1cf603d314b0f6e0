"""Traces and metrics of a real batch against the fault server with 20 % faults.

The spans go to the OpenTelemetry SDK's in-memory exporter and the metrics to its in-memory
reader: the tree, the GenAI attributes, the retries, the usage (counted once) and the counters are
checked against what the server itself counted.
"""

from __future__ import annotations

import json
from collections import Counter

import pytest
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind, StatusCode

from anabranch import Endpoint, Journal, Task, build_fanout_graph, run_batch
from anabranch.graphs.runner import Resume
from anabranch.llm.settings import Limits, RetryPolicy, Timeouts
from anabranch.redact import register_secret
from anabranch.telemetry import instrument, tool_span, uninstrument
from anabranch.testing.load_graph import AGENTS, MESSAGES, ChatAgent

FAULTS = {"429": 0.08, "500": 0.03, "503": 0.03, "reset": 0.03, "400": 0.03}
"""A fifth of the requests fail: most transiently (retried), the 400s for good."""
TRANSIENT = {"429", "500", "503", "reset"}


@pytest.fixture
def otel():
    spans = InMemorySpanExporter()
    tracer_provider = TracerProvider()
    tracer_provider.add_span_processor(SimpleSpanProcessor(spans))
    reader = InMemoryMetricReader()
    meter_provider = MeterProvider(metric_readers=[reader])
    yield tracer_provider, meter_provider, spans, reader
    uninstrument()
    tracer_provider.shutdown()
    meter_provider.shutdown()


def _endpoint(server) -> Endpoint:
    return Endpoint(
        server.url,
        "fault",
        timeouts=Timeouts(attempt=5, call=30),
        retry=RetryPolicy(8, backoff_initial=0.01, backoff_max=0.05),
        limits=Limits(concurrency=8),
    )


def _points(reader) -> dict[str, list]:
    """Metric name -> its data points, from one collection."""
    out: dict[str, list] = {}
    data = reader.get_metrics_data()
    for resource in data.resource_metrics:
        for scope in resource.scope_metrics:
            for metric in scope.metrics:
                out.setdefault(metric.name, []).extend(metric.data.data_points)
    return out


async def test_a_batch_with_20_percent_faults_gives_the_genai_span_tree(faults, otel, tmp_path):
    tracer_provider, meter_provider, exporter, reader = otel
    faults.configure(rates=FAULTS, retry_after=0.01, retry_after_format="fractional", seed=21)
    instrument(tracer_provider, meter_provider)
    n = 40
    async with _endpoint(faults) as llm:
        graph = build_fanout_graph([ChatAgent(llm, name) for name in AGENTS])
        tasks = [Task(id=f"t{i}", text=f"text {i}") for i in range(n)]
        with Journal(tmp_path / "journal.sqlite") as journal:
            batch = run_batch(tasks, graph, concurrency=8, resume=Resume(journal, "traced"))
            results = [r async for r in batch]
    stats = faults.stats()
    spans = exporter.get_finished_spans()
    assert len(results) == n
    faulted = sum(v for k, v in stats["faults"].items() if k != "ok")
    assert faulted >= 0.1 * stats["requests"]  # the faults really came

    # The tree: one workflow, an agent span per subtask under it, one chat span under each.
    by_op = Counter(s.attributes["gen_ai.operation.name"] for s in spans)
    assert by_op == {"invoke_workflow": 1, "invoke_agent": 3 * n, "chat": 3 * n}
    [workflow] = [s for s in spans if s.name == "invoke_workflow traced"]
    assert workflow.kind == SpanKind.INTERNAL
    assert workflow.attributes["gen_ai.workflow.name"] == "traced"
    agents = {s.context.span_id: s for s in spans if s.name.startswith("invoke_agent ")}
    assert {s.name for s in agents.values()} == {f"invoke_agent {a}" for a in AGENTS}
    for span in agents.values():
        assert span.kind == SpanKind.INTERNAL
        assert span.parent.span_id == workflow.context.span_id
        assert span.context.trace_id == workflow.context.trace_id
        assert span.attributes["gen_ai.agent.name"] == span.name.split()[1]
    chats = [s for s in spans if s.attributes["gen_ai.operation.name"] == "chat"]
    assert {s.parent.span_id for s in chats} == set(agents)  # one chat under each agent span

    # The chat spans' attributes, as the GenAI conventions name them.
    for span in chats:
        a = span.attributes
        assert span.name == "chat fault" and span.kind == SpanKind.CLIENT
        assert a["gen_ai.provider.name"] == "openai"
        assert a["gen_ai.request.model"] == "fault"
        assert a["gen_ai.request.max_tokens"] == 16
        assert a["gen_ai.request.temperature"] == 0.0
        assert a["server.address"] == "127.0.0.1" and a["server.port"] == faults.port
        assert "gen_ai.input.messages" not in a and "gen_ai.output.messages" not in a
        assert a["gen_ai.agent.name"] == agents[span.parent.span_id].attributes["gen_ai.agent.name"]

    # Each retry is an event with the failure's status and the wait; every request is a send.
    retries = [e for s in chats for e in s.events if e.name == "retry"]
    assert len(retries) == stats["requests"] - len(chats) > 0
    assert sum(s.attributes["anabranch.attempts"] for s in chats) == stats["requests"]
    statuses = Counter(e.attributes.get("http.response.status_code") for e in retries)
    assert statuses[429] > 0 and set(statuses) <= {429, 500, 503, None}
    assert all(e.attributes["anabranch.retry.wait_s"] >= 0 for e in retries)

    # A 400 is not retried: its chat span and its agent span fail with error.type 400, and the
    # task's result carries the error record.
    failed = [s for s in chats if s.status.status_code == StatusCode.ERROR]
    assert len(failed) == stats["faults"].get("400", 0) > 0
    assert {s.attributes["error.type"] for s in failed} == {"400"}
    for span in failed:
        agent = agents[span.parent.span_id]
        assert agent.status.status_code == StatusCode.ERROR
        assert agent.attributes["error.type"] == "400"
    errors = [e for r in results for e in r.errors]
    assert len(errors) == len(failed)

    # Usage sits on the chat spans only, and adds up to the run's report: counted once.
    ok = [s for s in chats if s.status.status_code != StatusCode.ERROR]
    assert all(s.attributes["gen_ai.response.finish_reasons"] == ("stop",) for s in ok)
    input_tokens = sum(s.attributes["gen_ai.usage.input_tokens"] for s in ok)
    output_tokens = sum(s.attributes["gen_ai.usage.output_tokens"] for s in ok)
    assert input_tokens == batch.report.usage.prompt_tokens > 0
    assert output_tokens == batch.report.usage.completion_tokens > 0
    parents = [s for s in spans if s.attributes["gen_ai.operation.name"] != "chat"]
    assert not any(k.startswith("gen_ai.usage.") for s in parents for k in s.attributes)

    # The metrics: a duration per call, tokens by type, the 429s, nothing left in flight.
    points = _points(reader)
    durations = points["gen_ai.client.operation.duration"]
    assert sum(p.count for p in durations) == len(chats)
    assert sum(p.count for p in durations if p.attributes.get("error.type") == "400") == len(failed)
    by_agent = {p.attributes["gen_ai.agent.name"] for p in durations}
    assert by_agent == set(AGENTS)
    tokens = points["gen_ai.client.token.usage"]
    assert sum(p.sum for p in tokens if p.attributes["gen_ai.token.type"] == "input") == (
        input_tokens
    )
    [limited] = [sum(p.value for p in points["anabranch.llm.rate_limited"])]
    assert limited == stats["faults"]["429"]
    attempts = Counter()
    for p in points["anabranch.llm.failed_attempts"]:
        attempts[p.attributes["error.type"]] += p.value
    assert attempts["429"] == stats["faults"]["429"]
    assert sum(attempts.values()) == faulted
    assert sum(p.value for p in points["anabranch.llm.calls_in_flight"]) == 0
    assert sum(p.value for p in points["anabranch.tasks.delivered"]) == n

    # The same run's timeline, which the HTML report draws, agrees with the server.
    timeline = batch.report.timeline
    assert sum(timeline.tasks) == n and sum(timeline.calls) == 3 * n
    assert sum(timeline.retries) == len(retries)
    assert sum(timeline.failed_attempts["429"]) == stats["faults"]["429"]
    assert {a: sum(c) for a, c in timeline.latency.items()} == {a: n for a in AGENTS}
    # Calls in flight include those waiting out a retry's backoff, which lend their slot (so the
    # timeline may show more than the cap of 8); the server never held more than 8 at once.
    assert 1 <= max(timeline.in_flight) <= 3 * n and stats["max_in_flight"] <= 8
    assert len(timeline.failures) == sum(r.status != "ok" for r in results)


async def test_message_content_is_opt_in_and_redacted(faults, otel):
    tracer_provider, meter_provider, exporter, _ = otel
    secret = "sk-TRACECANARY0123456789abcdef"
    register_secret(secret)
    instrument(tracer_provider, meter_provider, include_content=True)
    async with _endpoint(faults) as llm:
        completion = await llm.chat([{"role": "user", "content": f"hello with {secret}"}])
        await llm.chat(MESSAGES)
        with tool_span("lookup", call_id="call_1", arguments={"q": secret}) as span:
            span.result({"found": 2})
        with pytest.raises(KeyError), tool_span("broken"):
            raise KeyError("no such thing")
    spans = exporter.get_finished_spans()
    chats = [s for s in spans if s.name == "chat fault"]
    sent = json.loads(chats[0].attributes["gen_ai.input.messages"])
    assert sent[0]["role"] == "user" and sent[0]["parts"][0]["content"].startswith("hello with ")
    answered = json.loads(chats[1].attributes["gen_ai.output.messages"])
    assert answered[0]["role"] == "assistant" and answered[0]["parts"][0]["type"] == "text"
    assert completion.text
    tools = {s.name: s for s in spans if s.attributes["gen_ai.operation.name"] == "execute_tool"}
    assert tools["execute_tool lookup"].attributes["gen_ai.tool.call.id"] == "call_1"
    assert json.loads(tools["execute_tool lookup"].attributes["gen_ai.tool.call.result"]) == {
        "found": 2
    }
    assert tools["execute_tool broken"].attributes["error.type"] == "KeyError"
    assert tools["execute_tool broken"].status.status_code == StatusCode.ERROR
    # The one redactor ran on everything the spans carry.
    dumped = "".join(s.to_json() for s in spans)
    assert secret not in dumped and "[REDACTED]" in dumped


async def test_nothing_is_emitted_until_instrumented(faults, otel):
    _, _, exporter, _ = otel
    async with _endpoint(faults) as llm:
        graph = build_fanout_graph([ChatAgent(llm, name) for name in AGENTS])
        results = [r async for r in run_batch([Task(id="a", text="x")], graph)]
    assert results[0].status == "ok"
    assert exporter.get_finished_spans() == ()


async def test_each_tool_call_is_an_execute_tool_span_under_its_agent(faults, otel):
    from anabranch import LLMAgent
    from anabranch.testing.fault_tools import ScriptedCall, ToolScript

    tracer_provider, meter_provider, spans, _ = otel
    instrument(tracer_provider=tracer_provider, meter_provider=meter_provider)

    def double(x: int) -> int:
        """Double a number.

        Args:
            x: the number
        """
        return 2 * x

    def boom() -> str:
        """A tool that fails."""
        raise RuntimeError("kaput")

    turn = [ScriptedCall(name="double", arguments={"x": 21}), ScriptedCall(name="boom"),
            ScriptedCall(name="missing")]  # fmt: skip
    faults.configure(tools=ToolScript(turns=[turn]))
    async with _endpoint(faults) as endpoint:
        graph = build_fanout_graph([LLMAgent("agent", endpoint, tools=[double, boom])])
        result = (await graph.ainvoke({"task": Task(id="t", text="hi")}))["result"]
    assert result.status == "ok", result.errors

    finished = spans.get_finished_spans()
    tools = {s.attributes["gen_ai.tool.name"]: s for s in finished
             if s.attributes.get("gen_ai.operation.name") == "execute_tool"}  # fmt: skip
    assert set(tools) == {"double", "boom", "missing"}
    assert all(s.name == f"execute_tool {n}" for n, s in tools.items())
    assert tools["double"].status.status_code != StatusCode.ERROR
    assert tools["boom"].attributes["error.type"] == "RuntimeError"
    assert tools["missing"].attributes["error.type"] == "unknown_tool"
    [agent] = [s for s in finished if s.name == "invoke_agent agent"]
    assert all(s.parent is not None and s.parent.span_id == agent.context.span_id
               for s in tools.values())  # fmt: skip
