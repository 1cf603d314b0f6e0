"""The real command exports its traces and metrics over OTLP/HTTP to a receiver the test starts,
which decodes the protobuf it got: the span tree and the metrics arrive whole."""

from __future__ import annotations

import json
from collections import Counter

import pytest
from conftest import run_cli
from otlp_receiver import OTLPReceiver, attributes

pytestmark = pytest.mark.slow  # a real command run with its exporters: about 15 s

FAULTS = {"429": 0.08, "500": 0.04, "503": 0.04, "reset": 0.04}
"""A fifth of the requests fail transiently: every task still ends ok, after retries."""


def test_run_with_otel_exports_spans_and_metrics_a_receiver_decodes(faults, tmp_path):
    faults.configure(rates=FAULTS, retry_after=0.01, retry_after_format="fractional", seed=11)
    n = 20
    tasks = tmp_path / "tasks.jsonl"
    tasks.write_text(
        "".join(json.dumps({"id": f"t{i}", "text": f"Text {i}."}) + "\n" for i in range(n))
    )
    with OTLPReceiver() as receiver:
        proc = run_cli(
            "run",
            str(tasks),
            "--out",
            str(tmp_path / "out.jsonl"),
            "--llm",
            faults.url,
            "--model",
            "fault",
            "--backend",
            "keywords=llm,sentiment=llm,tokenize=local",
            "--otel",
            env={"OTEL_EXPORTER_OTLP_ENDPOINT": receiver.url, "OTEL_SERVICE_NAME": "otlp-test"},
        )
    assert proc.returncode == 0, proc.stderr
    assert receiver.content_types == {"application/x-protobuf"}
    stats = faults.stats()

    spans = receiver.spans()
    assert {resource["service.name"] for resource, _ in spans} == {"otlp-test"}
    spans_only = [s for _, s in spans]
    ops = Counter(attributes(s.attributes)["gen_ai.operation.name"] for s in spans_only)
    # tokenize runs locally (no LLM call); keywords and sentiment make one chat call each.
    assert ops == {"invoke_workflow": 1, "invoke_agent": 3 * n, "chat": 2 * n}
    [workflow] = [s for s in spans_only if s.name.startswith("invoke_workflow ")]
    agents = {s.span_id: s for s in spans_only if s.name.startswith("invoke_agent ")}
    chats = [s for s in spans_only if s.name == "chat fault"]
    assert {s.trace_id for s in spans_only} == {workflow.trace_id}
    assert all(a.parent_span_id == workflow.span_id for a in agents.values())
    assert {agents[c.parent_span_id].name for c in chats} == {
        "invoke_agent keywords",
        "invoke_agent sentiment",
    }
    assert {s.kind for s in chats} == {3}  # SPAN_KIND_CLIENT
    for chat in chats:
        a = attributes(chat.attributes)
        assert a["gen_ai.provider.name"] == "openai" and a["gen_ai.request.model"] == "fault"
        assert a["gen_ai.usage.input_tokens"] > 0 and a["gen_ai.response.finish_reasons"]
    retries = [e for c in chats for e in c.events if e.name == "retry"]
    chat_requests = sum(attributes(c.attributes)["anabranch.attempts"] for c in chats)
    assert len(retries) == chat_requests - len(chats) > 0
    assert chat_requests == stats["requests"]

    metrics = receiver.metrics()
    durations = [
        p for m in metrics["gen_ai.client.operation.duration"] for p in m.histogram.data_points
    ]
    assert sum(p.count for p in durations) == len(chats)
    assert {attributes(p.attributes)["gen_ai.agent.name"] for p in durations} == {
        "keywords",
        "sentiment",
    }
    tokens = [p for m in metrics["gen_ai.client.token.usage"] for p in m.histogram.data_points]
    assert {attributes(p.attributes)["gen_ai.token.type"] for p in tokens} == {"input", "output"}
    delivered = [p for m in metrics["anabranch.tasks.delivered"] for p in m.sum.data_points]
    assert sum(p.as_int for p in delivered) == n
    limited = [p for m in metrics["anabranch.llm.rate_limited"] for p in m.sum.data_points]
    assert sum(p.as_int for p in limited) == stats["faults"]["429"]
