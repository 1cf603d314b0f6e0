"""What a chat client asks besides its conversation is honoured or refused, never ignored: checked
at the fault server, which records what each LLM call asked, behind a real `anabranch serve`."""

import asyncio
import json

import httpx
import jsonschema
import openai
import pytest
import uvicorn
from conftest import TOKEN, start_server
from langchain_core.messages import AIMessage
from langchain_core.runnables import RunnableConfig
from langgraph.graph import START, MessagesState, StateGraph

from anabranch.chat import MessagesChat, create_app
from anabranch.graphs.state import requested_sampling
from anabranch.llm.local_server import free_port

HI = [{"role": "user", "content": "Tell me everything about rivers and their side channels."}]
STEPS = 3
"""The default chain's specialists: one LLM call each."""
SCHEMA = {
    "type": "object",
    "properties": {"river": {"type": "string"}, "length_km": {"type": "integer", "minimum": 1}},
    "required": ["river", "length_km"],
    "additionalProperties": False,
}


@pytest.fixture
def client(backend, faults):
    faults.configure(cut_answers=True)  # the fault LLM cuts at max_tokens and stop, as models do
    return openai.OpenAI(base_url=backend, api_key=TOKEN, max_retries=0)


def asked(faults) -> list[dict]:
    """What each LLM call of the last run asked, in order."""
    return faults.stats()["params"]


def test_sampling_reaches_every_chain_step_and_a_cut_answer_says_length(client, faults):
    reply = client.chat.completions.create(
        model="chain", messages=HI, max_tokens=5, temperature=0.3, top_p=0.9, seed=7
    )
    calls = asked(faults)
    assert len(calls) == STEPS
    for call in calls:
        assert (call["max_tokens"], call["temperature"], call["top_p"], call["seed"]) == (
            5, 0.3, 0.9, 7,
        )  # fmt: skip
    assert reply.choices[0].finish_reason == "length"
    assert len(reply.choices[0].message.content.split()) == 5
    # Usage is the whole run's: every step's tokens, as the LLM counted them (one per word).
    assert reply.usage.completion_tokens == STEPS * 5


def test_max_completion_tokens_is_max_tokens_and_an_uncut_answer_says_stop(client, faults):
    reply = client.chat.completions.create(model="chain", messages=HI, max_completion_tokens=500)
    assert [c["max_tokens"] for c in asked(faults)] == [500] * STEPS
    assert reply.choices[0].finish_reason == "stop"


def test_stop_sequences_reach_the_answer_step_only(client, faults):
    reply = client.chat.completions.create(model="chain", messages=HI, stop=["rivers"])
    calls = asked(faults)
    assert ["stop" in c for c in calls] == [False] * (STEPS - 1) + [True]
    assert calls[-1]["stop"] == ["rivers"]
    assert "rivers" not in reply.choices[0].message.content


def test_streamed_usage_and_finish_reason_match_the_whole_answer(client, faults):
    whole = client.chat.completions.create(model="chain", messages=HI, max_tokens=4)
    chunks = list(
        client.chat.completions.create(
            model="chain",
            messages=HI,
            max_tokens=4,
            stream=True,
            stream_options={"include_usage": True},
        )
    )
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    finishes = [
        c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason
    ]
    assert text == whole.choices[0].message.content
    assert finishes == ["length"]
    assert chunks[-1].usage.model_dump() == whole.usage.model_dump()
    assert whole.usage.completion_tokens == STEPS * 4


def test_a_json_schema_is_asked_of_the_answer_step_and_the_answer_is_valid(client, faults):
    fmt = {"type": "json_schema", "json_schema": {"name": "River", "schema": SCHEMA}}
    reply = client.chat.completions.create(model="chain", messages=HI, response_format=fmt)
    calls = asked(faults)
    assert ["response_format" in c for c in calls] == [False] * (STEPS - 1) + [True]
    jsonschema.validate(json.loads(reply.choices[0].message.content), SCHEMA)


def test_an_answer_that_misses_the_schema_is_a_graph_error(client, faults):
    faults.configure(cut_answers=True, rates={"invalid": 1.0})  # every answer: not JSON
    fmt = {"type": "json_schema", "json_schema": {"name": "River", "schema": SCHEMA}}
    with pytest.raises(openai.APIStatusError) as caught:
        client.chat.completions.create(model="chain", messages=HI, response_format=fmt)
    assert caught.value.status_code == 502
    assert "does not match the response_format schema" in caught.value.message


@pytest.mark.parametrize(
    ("model", "extra", "why"),
    [
        ("chain", {"n": 2}, "n=2 is not supported"),
        ("chain", {"frequency_penalty": 0.5}, "frequency_penalty is not supported"),
        ("chain", {"logprobs": True}, "logprobs is not supported"),
        ("chain", {"response_format": {"type": "json_object"}}, "only {'type': 'json_schema'"),
        (
            "chain",
            {
                "response_format": {
                    "type": "json_schema",
                    "json_schema": {"name": "x", "schema": {"type": "nonsense"}},
                }
            },
            "not a JSON schema",
        ),
        ("analyze", {"temperature": 0.2}, "temperature not supported by the 'analyze' graph"),
        ("analyze", {"max_tokens": 20, "seed": 1}, "max_tokens, seed not supported"),
        (
            "analyze",
            {
                "response_format": {
                    "type": "json_schema",
                    "json_schema": {"name": "x", "schema": SCHEMA},
                }
            },
            "response_format not supported",
        ),
        (
            "chain",
            {"tools": [{"type": "function", "function": {"name": "f", "parameters": {}}}]},
            "the 'chain' graph cannot use tools",
        ),
    ],
)
def test_what_a_graph_cannot_honour_is_the_clients_400(client, faults, model, extra, why):
    with pytest.raises(openai.BadRequestError, match=r"invalid request|not supported|cannot") as e:
        client.chat.completions.create(model=model, messages=HI, extra_body=extra)
    assert why in e.value.message
    assert faults.stats()["requests"] == 0  # refused before any LLM call


def test_neutral_values_and_n_1_are_accepted(client, faults):
    reply = client.chat.completions.create(
        model="analyze", messages=HI, n=1, frequency_penalty=0, response_format={"type": "text"}
    )
    assert reply.choices[0].message.content.startswith("Sentiment: ")


def test_progress_as_reasoning_content_when_asked(backend, client):
    plain = list(client.chat.completions.create(model="chain", messages=HI, stream=True))
    assert not any(getattr(c.choices[0].delta, "reasoning_content", None)
                   for c in plain if c.choices)  # fmt: skip
    asked_for = {"X-Anabranch-Progress": "reasoning"}
    chunks = list(client.chat.completions.create(model="chain", messages=HI, stream=True,
                                                 extra_headers=asked_for))  # fmt: skip
    thinking = "".join(getattr(c.choices[0].delta, "reasoning_content", None) or ""
                       for c in chunks if c.choices)  # fmt: skip
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert "Step 1: system_specialist is writing" in thinking and "Step 3:" in thinking
    assert text == "".join(c.choices[0].delta.content or "" for c in plain if c.choices)
    whole = httpx.post(f"{backend}/chat/completions", timeout=60,
                       headers={"Authorization": f"Bearer {TOKEN}"},
                       json={"model": "analyze", "messages": HI,
                             "anabranch_progress": "reasoning"}).json()  # fmt: skip
    message = whole["choices"][0]["message"]
    assert "Planned 3 subtasks" in message["reasoning_content"]
    assert "sentiment (chunk 0): ok" in message["reasoning_content"]


@pytest.mark.slow  # a second `anabranch serve` process: over 8 s on a busy machine
def test_a_server_option_sends_progress_as_reasoning_to_every_request(fault_server, tmp_path):
    process, url = start_server("--llm", fault_server.url, "--model", "m", "--graph", "chain",
                                "--progress", "reasoning",
                                "--threads-db", str(tmp_path / "t.sqlite"))  # fmt: skip
    try:
        client = openai.OpenAI(base_url=url, api_key=TOKEN, max_retries=0)
        reply = client.chat.completions.create(model="chain", messages=HI)
        assert "Step 2: agent_enforcer ok" in reply.choices[0].message.reasoning_content
    finally:
        process.terminate()
        process.wait(timeout=10)


def _sampling_echo_graph():
    """A user's graph whose node reads the request's sampling from its run's configuration,
    answers with it, and says it was cut when asked for under 10 tokens."""

    def node(state: MessagesState, config: RunnableConfig) -> dict:
        asked = dict(requested_sampling(config))
        cut = asked.get("max_tokens", 100) < 10
        metadata = {"finish_reason": "length" if cut else "stop"}
        return {"messages": [AIMessage(json.dumps(asked), response_metadata=metadata)]}

    builder = StateGraph(MessagesState)
    builder.add_node("answer", node)
    builder.add_edge(START, "answer")
    return builder.compile()


async def test_a_users_graph_gets_what_it_declares_and_refuses_the_rest(tmp_path):

    graph = _sampling_echo_graph()
    app = create_app(
        [
            MessagesChat(graph, name="mine", honours=frozenset({"max_tokens", "temperature"})),
            MessagesChat(graph, name="plain"),
        ],
        threads_db=str(tmp_path / "threads.sqlite"),
    )
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(app, port=port, log_level="warning"))
    serving = asyncio.create_task(server.serve())
    while not server.started:
        await asyncio.sleep(0.05)
    try:
        client = openai.AsyncOpenAI(base_url=f"http://127.0.0.1:{port}/v1", api_key="x",
                                    max_retries=0)  # fmt: skip
        reply = await client.chat.completions.create(
            model="mine", messages=HI, max_completion_tokens=5, temperature=0.4
        )
        assert json.loads(reply.choices[0].message.content) == {"max_tokens": 5,
                                                                "temperature": 0.4}  # fmt: skip
        assert reply.choices[0].finish_reason == "length"
        with pytest.raises(openai.BadRequestError, match=r"top_p not supported by the 'mine'"):
            await client.chat.completions.create(model="mine", messages=HI, top_p=0.5)
        with pytest.raises(openai.BadRequestError, match="it honours: none of them"):
            await client.chat.completions.create(model="plain", messages=HI, temperature=0.4)
        plain = await client.chat.completions.create(model="plain", messages=HI)
        assert json.loads(plain.choices[0].message.content) == {}
    finally:
        server.should_exit = True
        await serving
        await app.aclose()
