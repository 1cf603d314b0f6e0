"""`POST /v1/responses` behind a real `anabranch serve` on the fault LLM: the Responses shapes,
checked strictly against the openai package's own models, and the thread store behind
`previous_response_id`."""

import json

import httpx
import jsonschema
import openai
import pytest
from conftest import TOKEN
from openai.types.responses import Response

AUTH = {"Authorization": f"Bearer {TOKEN}"}
SCHEMA = {
    "type": "object",
    "properties": {"river": {"type": "string"}},
    "required": ["river"],
    "additionalProperties": False,
}
SEQUENCE = [
    "response.created",
    "response.in_progress",
    "response.output_item.added",
    "response.content_part.added",
]
ENDING = [
    "response.output_text.done",
    "response.content_part.done",
    "response.output_item.done",
    "response.completed",
]


@pytest.fixture
def client(backend, faults):
    faults.configure(cut_answers=True)
    return openai.OpenAI(base_url=backend, api_key=TOKEN, max_retries=0)


def sse_events(backend: str, body: dict) -> list[dict]:
    with httpx.stream("POST", f"{backend}/responses", json=body, headers=AUTH, timeout=60) as r:
        assert r.status_code == 200
        lines = list(r.iter_lines())
    named = [line.removeprefix("event: ") for line in lines if line.startswith("event: ")]
    events = [
        json.loads(line.removeprefix("data: ")) for line in lines if line.startswith("data: ")
    ]
    assert named == [e["type"] for e in events]  # each event is named as its data says
    return events


def test_a_text_input_gets_a_whole_response(client):
    reply = client.responses.create(model="chain", input="Name a river.", instructions="Be brief.")
    Response.model_validate(reply.model_dump())  # strictly the Responses shape
    assert reply.status == "completed" and reply.id.startswith("resp_")
    assert "Name a river." in reply.output_text  # the fault LLM echoes the prompt
    assert reply.usage.input_tokens > 0 and reply.usage.output_tokens > 0
    assert reply.usage.total_tokens == reply.usage.input_tokens + reply.usage.output_tokens


def test_the_stream_is_the_full_event_sequence_numbered(backend, faults):
    events = sse_events(backend, {"model": "chain", "input": "Name a river.", "stream": True})
    kinds = [e["type"] for e in events]
    deltas = [e for e in events if e["type"] == "response.output_text.delta"]
    assert kinds == SEQUENCE + ["response.output_text.delta"] * len(deltas) + ENDING
    assert len(deltas) > 1  # the answer step's words, as the LLM streamed them
    assert [e["sequence_number"] for e in events] == list(range(len(events)))
    done = events[-1]["response"]
    Response.model_validate(done)
    text = "".join(d["delta"] for d in deltas)
    assert done["output"][0]["content"][0]["text"] == text == events[-4]["text"]
    assert done["usage"]["output_tokens"] > 0
    assert {e["item_id"] for e in deltas} == {done["output"][0]["id"]}


def test_the_openai_client_reads_the_stream(client):
    with client.responses.stream(model="chain", input="Name a river.") as stream:
        texts = [e.delta for e in stream if e.type == "response.output_text.delta"]
        final = stream.get_final_response()
    assert "".join(texts) == final.output_text and final.status == "completed"


def test_items_input_and_a_previous_response_continue_the_thread(client):
    first = client.responses.create(
        model="chain",
        input=[{"role": "user", "content": [{"type": "input_text", "text": "I am Ada."}]}],
    )
    second = client.responses.create(
        model="chain", input="What is my name?", previous_response_id=first.id
    )
    # The chain sees the earlier turn, from the thread store: the fault LLM echoes it.
    assert "user: I am Ada." in second.output_text
    assert second.previous_response_id == first.id
    third = client.responses.create(model="chain", input="Who?", previous_response_id=second.id)
    assert "user: What is my name?" in third.output_text and "I am Ada." in third.output_text


def test_an_unknown_or_unstored_previous_response_is_404(client):
    unstored = client.responses.create(model="chain", input="Hi.", store=False)
    for previous in ("resp_nonsense", unstored.id, "resp_" + "0" * 48):
        with pytest.raises(openai.NotFoundError, match="not found"):
            client.responses.create(model="chain", input="Hi.", previous_response_id=previous)


def test_max_output_tokens_cuts_and_says_incomplete(client, faults):
    reply = client.responses.create(model="chain", input="Tell me about rivers.",
                                    max_output_tokens=3, temperature=0.2)  # fmt: skip
    assert reply.status == "incomplete"
    assert reply.incomplete_details.reason == "max_output_tokens"
    assert [(c["max_tokens"], c["temperature"]) for c in faults.stats()["params"]] == [(3, 0.2)] * 3
    assert len(reply.output_text.split()) == 3


def test_a_json_schema_text_format_is_honoured(client, faults):
    fmt = {"type": "json_schema", "name": "River", "schema": SCHEMA, "strict": True}
    reply = client.responses.create(model="chain", input="A river?", text={"format": fmt})
    jsonschema.validate(json.loads(reply.output_text), SCHEMA)
    last = faults.stats()["params"][-1]
    assert last["response_format"]["json_schema"]["schema"] == SCHEMA


@pytest.mark.parametrize(
    ("body", "status", "why"),
    [
        ({"model": "chain", "input": "x", "tools": [{"type": "function", "name": "f"}]}, 400,
         "cannot use tools"),
        ({"model": "chain", "input": [{"type": "function_call_output", "call_id": "c",
                                       "output": "1"}]}, 400, "cannot use tools"),
        ({"model": "analyze", "input": "x", "temperature": 0.5}, 400, "temperature not supported"),
        ({"model": "chain", "input": "x", "text": {"format": {"type": "json_object"}}}, 400,
         "only {'type': 'json_schema'"),
        ({"model": "chain", "input": [{"role": "system", "content": "x"}]}, 400,
         "no user message"),
        ({"model": "chain", "input": [{"role": "wizard", "content": "x"}]}, 400, "unknown role"),
        ({"model": "nope", "input": "x"}, 404, "no graph named 'nope'"),
    ],
)  # fmt: skip
def test_what_cannot_be_done_is_refused(backend, faults, body, status, why):
    reply = httpx.post(f"{backend}/responses", json=body, headers=AUTH, timeout=30)
    assert reply.status_code == status and why in reply.json()["error"]["message"]
    assert faults.stats()["requests"] == 0


@pytest.mark.slow  # the LLM fails every retry: over 8 s on a busy machine
def test_a_failed_run_ends_the_stream_with_response_failed(backend, faults):
    faults.configure(rates={"500": 1.0})
    events = sse_events(backend, {"model": "chain", "input": "x", "stream": True})
    assert events[-1]["type"] == "response.failed"
    assert "chain stopped" in events[-1]["response"]["error"]["message"]
    Response.model_validate(events[-1]["response"])


def test_a_graph_that_knows_its_answer_only_at_the_end_streams_it_as_one_delta(backend, faults):
    events = sse_events(backend, {"model": "analyze", "input": "I love it.", "stream": True})
    kinds = [e["type"] for e in events]
    assert kinds == [*SEQUENCE, "response.output_text.delta", *ENDING]
    assert events[4]["delta"].startswith("Sentiment: ") and events[4]["delta"] == events[5]["text"]


def test_progress_as_reasoning_is_a_reasoning_item_before_the_answer(backend, client):
    body = {"model": "chain", "input": "Name a river.", "stream": True}
    with httpx.stream("POST", f"{backend}/responses", json=body, timeout=60,
                      headers={**AUTH, "X-Anabranch-Progress": "reasoning"}) as r:  # fmt: skip
        events = [json.loads(line[6:]) for line in r.iter_lines() if line.startswith("data: ")]
    kinds = [e["type"] for e in events]
    assert events[2]["type"] == "response.output_item.added"
    assert events[2]["item"]["type"] == "reasoning" and events[2]["output_index"] == 0
    thought = "".join(e["delta"] for e in events if e["type"].endswith("summary_text.delta"))
    assert thought.startswith("Step 1: ") and "Step 2: " in thought
    done = kinds.index("response.reasoning_summary_text.done")
    assert events[done]["text"] == thought and done < kinds.index("response.output_text.delta")
    message = next(e for e in events[done:] if e["type"] == "response.output_item.added")
    assert message["item"]["type"] == "message" and message["output_index"] == 1
    final = Response.model_validate(events[-1]["response"])
    assert [i.type for i in final.output] == ["reasoning", "message"]
    assert final.output[0].summary[0].text == thought
    whole = client.responses.create(
        model="chain", input="Name a river.", extra_body={"anabranch_progress": "reasoning"}
    )
    assert [i.type for i in whole.output] == ["reasoning", "message"]
    assert "Step 1: " in whole.output[0].summary[0].text
    assert "Name a river." in whole.output_text
    plain = client.responses.create(model="chain", input="Name a river.")
    assert [i.type for i in plain.output] == ["message"]  # only when asked
