"""Tools from the client, through a real `anabranch serve` (the `assistant` graph, whose agent
converses, and the chain, which takes no tools) on the fault LLM, with the official openai
client: the model's call of a client's tool is the answer (`tool_calls`, or `function_call`
items), the client runs it and sends the result back, and the graph's final answer quotes it.

The fault LLM calls what its `ToolScript` says on turn N (its Nth assistant message) and,
past the script, answers with the tool results it was sent: so the result reaching the answer
shows that it went through the graph to the model. Each round trip prints one line, what was
sent and what came back (`pytest -s` shows them)."""

from __future__ import annotations

import json
import os

import httpx
import openai
import pytest
from conftest import TOKEN, start_server
from openai.types.responses import Response

from anabranch.llm.local_server import stop_process
from anabranch.testing.fault_tools import ScriptedCall, ToolScript

WEATHER = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "The weather in a city now.",
        "parameters": {
            "type": "object",
            "properties": {"city": {"type": "string"}},
            "required": ["city"],
        },
    },
}
FLAT_WEATHER = {"type": "function", **WEATHER["function"]}
"""The same tool in the Responses API's flat shape."""
QUESTION = [{"role": "user", "content": "What is the weather in Oslo?"}]
RESULT = "Oslo: 12 C and rain"
AUTH = {"Authorization": f"Bearer {TOKEN}"}


@pytest.fixture(scope="module")
def url(fault_server, tmp_path_factory):
    db = tmp_path_factory.mktemp("threads") / "threads.sqlite"
    process, url = start_server(
        "--graph",
        "assistant",
        "--graph",
        "chain",
        "--llm",
        fault_server.url,
        "--model",
        "m",
        "--threads-db",
        str(db),
    )
    yield url
    stop_process(process, grace=10)


@pytest.fixture
def client(url, faults):
    faults.configure(
        tools=ToolScript(turns=[[ScriptedCall(name="get_weather", arguments={"city": "Oslo"})]])
    )
    return openai.OpenAI(base_url=url, api_key=TOKEN, max_retries=0)


def said(client: str, sent: str, got: object) -> None:
    print(f"\n[{client}] sent {sent} -> got {str(got)[:200]!r}")


def offered(faults) -> list[list[str]]:
    """The names of the tools each LLM request offered the model."""
    return [[t["function"]["name"] for t in p.get("tools") or []] for p in faults.stats()["params"]]


def test_chat_completions_round_trip(client, faults):
    first = client.chat.completions.create(model="assistant", messages=QUESTION, tools=[WEATHER])
    choice = first.choices[0]
    assert choice.finish_reason == "tool_calls"
    (call,) = choice.message.tool_calls
    assert call.function.name == "get_weather" and json.loads(call.function.arguments) == {
        "city": "Oslo"
    }
    assert offered(faults) == [["tokenize", "keywords", "sentiment", "get_weather"]]
    conversation = [
        *QUESTION,
        choice.message.model_dump(exclude_none=True),
        {"role": "tool", "tool_call_id": call.id, "content": RESULT},
    ]
    final = client.chat.completions.create(
        model="assistant", messages=conversation, tools=[WEATHER]
    )
    assert final.choices[0].finish_reason == "stop"
    assert RESULT in final.choices[0].message.content  # the result reached the model
    assert not final.choices[0].message.tool_calls
    said(
        "openai chat",
        "tools=[get_weather]; then its tool message",
        f"{call.function.name}({call.function.arguments}); {final.choices[0].message.content}",
    )


def test_a_thread_keeps_the_tool_calls_for_their_results(client, faults):
    thread = {"X-Thread-Id": "weather-thread"}
    first = client.chat.completions.create(
        model="assistant", messages=QUESTION, tools=[WEATHER], extra_headers=thread
    )
    (call,) = first.choices[0].message.tool_calls
    result = {"role": "tool", "tool_call_id": call.id, "content": RESULT}
    final = client.chat.completions.create(  # only the results: the thread has the rest
        model="assistant", messages=[*QUESTION, result], tools=[WEATHER], extra_headers=thread
    )
    assert RESULT in final.choices[0].message.content
    assert len(faults.stats()["params"]) == 2


def test_chat_completions_streams_tool_call_deltas(client, faults):
    stream = client.chat.completions.create(
        model="assistant", messages=QUESTION, tools=[WEATHER], stream=True
    )
    chunks = [c for c in stream if c.choices]
    deltas = [d for c in chunks for d in c.choices[0].delta.tool_calls or []]
    assert deltas[0].index == 0 and deltas[0].id and deltas[0].function.name == "get_weather"
    assert all(d.index == 0 and d.id is None for d in deltas[1:])  # then argument fragments
    arguments = "".join(d.function.arguments or "" for d in deltas)
    assert json.loads(arguments) == {"city": "Oslo"}
    assert chunks[-1].choices[0].finish_reason == "tool_calls"
    conversation = [
        *QUESTION,
        {
            "role": "assistant",
            "content": None,
            "tool_calls": [
                {
                    "id": deltas[0].id,
                    "type": "function",
                    "function": {"name": "get_weather", "arguments": arguments},
                }
            ],
        },
        {"role": "tool", "tool_call_id": deltas[0].id, "content": RESULT},
    ]
    answer = "".join(
        c.choices[0].delta.content or ""
        for c in client.chat.completions.create(
            model="assistant", messages=conversation, tools=[WEATHER], stream=True
        )
        if c.choices
    )
    assert RESULT in answer
    said("openai chat stream", "tools=[get_weather] stream; then its tool message", answer)


def test_responses_round_trip_by_items_and_by_previous_response(client, faults):
    first = client.responses.create(model="assistant", input=QUESTION, tools=[FLAT_WEATHER])
    Response.model_validate(first.model_dump())
    (call,) = [i for i in first.output if i.type == "function_call"]
    assert call.name == "get_weather" and json.loads(call.arguments) == {"city": "Oslo"}
    assert call.status == "completed" and call.id.startswith("fc_") and call.call_id
    assert first.tools[0].name == "get_weather"
    result = {"type": "function_call_output", "call_id": call.call_id, "output": RESULT}
    again = client.responses.create(
        model="assistant",
        input=[*QUESTION, call.model_dump(exclude_none=True), result],
        tools=[FLAT_WEATHER],
        store=False,
    )
    assert RESULT in again.output_text
    continued = client.responses.create(
        model="assistant", input=[result], previous_response_id=first.id, tools=[FLAT_WEATHER]
    )
    assert RESULT in continued.output_text and continued.status == "completed"
    said(
        "openai responses",
        "tools=[get_weather]; function_call_output by items and by previous_response_id",
        f"{call.name}({call.arguments}); {continued.output_text}",
    )


def test_responses_stream_function_call_events(url, client, faults):
    body = {"model": "assistant", "input": QUESTION, "tools": [FLAT_WEATHER], "stream": True}
    with httpx.stream("POST", f"{url}/responses", json=body, headers=AUTH, timeout=60) as r:
        events = [json.loads(line[6:]) for line in r.iter_lines() if line.startswith("data: ")]
    kinds = [e["type"] for e in events]
    assert kinds[:2] == ["response.created", "response.in_progress"]
    assert kinds[2] == "response.output_item.added" and events[2]["item"]["type"] == "function_call"
    assert "response.function_call_arguments.delta" in kinds
    assert kinds[-3:] == [
        "response.function_call_arguments.done",
        "response.output_item.done",
        "response.completed",
    ]
    assert [e["sequence_number"] for e in events] == list(range(len(events)))
    deltas = "".join(e["delta"] for e in events if e["type"].endswith("arguments.delta"))
    assert json.loads(deltas) == {"city": "Oslo"} and events[-3]["arguments"] == deltas
    final = Response.model_validate(events[-1]["response"])
    assert [i.type for i in final.output] == ["function_call"]
    with client.responses.stream(model="assistant", input=QUESTION, tools=[FLAT_WEATHER]) as s:
        streamed = s.get_final_response()  # the openai client reads the events too
    assert streamed.output[0].arguments == deltas


def test_tool_choice_and_parallel_calls_reach_the_model(client, faults):
    faults.configure(
        tools=ToolScript(
            turns=[
                [
                    ScriptedCall(name="get_weather", arguments={"city": "Oslo"}),
                    ScriptedCall(name="get_weather", arguments={"city": "Bergen"}),
                ]
            ]
        )
    )
    both = client.chat.completions.create(model="assistant", messages=QUESTION, tools=[WEATHER])
    assert [c.function.arguments for c in both.choices[0].message.tool_calls] == [
        '{"city": "Oslo"}',
        '{"city": "Bergen"}',
    ]
    one = client.chat.completions.create(
        model="assistant",
        messages=QUESTION,
        tools=[WEATHER],
        parallel_tool_calls=False,
        tool_choice={"type": "function", "function": {"name": "get_weather"}},
    )
    assert len(one.choices[0].message.tool_calls) == 1
    sent = faults.stats()["params"][-1]
    assert sent["tool_choice"] == {"type": "function", "function": {"name": "get_weather"}}
    assert sent["parallel_tool_calls"] is False
    none = client.chat.completions.create(
        model="assistant", messages=QUESTION, tools=[WEATHER], tool_choice="none"
    )
    assert none.choices[0].finish_reason == "stop"
    assert offered(faults)[-1] == ["tokenize", "keywords", "sentiment"]  # not offered


def test_the_agents_own_tools_still_run_on_the_server(client, faults):
    faults.configure(
        tools=ToolScript(
            turns=[
                [ScriptedCall(name="sentiment", arguments={"text": "I love Oslo."})],
                [ScriptedCall(name="get_weather", arguments={"city": "Oslo"})],
            ]
        )
    )
    progress = []
    with client.chat.completions.with_streaming_response.create(
        model="assistant", messages=QUESTION, tools=[WEATHER], stream=True
    ) as response:
        lines = list(response.iter_lines())
    progress = [json.loads(x[12:]) for x in lines if x.startswith(": anabranch ")]
    ended = [p for p in progress if p["type"] == "tool_end"]
    assert [p["name"] for p in ended] == ["sentiment"] and '"positive"' in ended[0]["content"]
    calls = [json.loads(x[6:]) for x in lines if x.startswith("data: {")]
    names = [
        d["function"]["name"]
        for c in calls
        for d in c["choices"][0]["delta"].get("tool_calls") or []
        if d.get("id")
    ]
    assert names == ["get_weather"]  # the client's call is the answer; sentiment ran here


@pytest.mark.parametrize(
    ("extra", "why"),
    [
        ({"tools": [{"type": "code_interpreter"}]}, "only function tools are supported"),
        (
            {"tools": [WEATHER], "tool_choice": {"type": "function", "function": {"name": "x"}}},
            "tool_choice names 'x'",
        ),
        ({"tools": [WEATHER], "tool_choice": "sometimes"}, "tool_choice must be"),
        ({"tools": [WEATHER], "tool_choice": {"function": "x"}}, "tool_choice must be"),
        ({"tools": [WEATHER], "parallel_tool_calls": "yes"}, "must be true or false"),
        ({"tools": [{"type": "function", "function": "f"}]}, "needs a `function` object"),
        ({"tools": [{"type": "function", "function": {"name": "a b"}}]}, "needs a name"),
    ],
)
def test_bad_tools_are_the_clients_400(client, faults, extra, why):
    with pytest.raises(openai.BadRequestError) as e:
        client.chat.completions.create(model="assistant", messages=QUESTION, extra_body=extra)
    assert why in e.value.message and faults.stats()["requests"] == 0


def test_a_graph_that_cannot_use_tools_says_so(client, url, faults):
    with pytest.raises(openai.BadRequestError) as e:
        client.chat.completions.create(model="chain", messages=QUESTION, tools=[WEATHER])
    assert "the 'chain' graph cannot use tools (graphs here that do: assistant)" in e.value.message
    with pytest.raises(openai.BadRequestError, match="cannot use tools"):
        client.responses.create(model="chain", input=QUESTION, tools=[FLAT_WEATHER])
    body = {"model": "assistant", "input": "x", "tools": [{"type": "web_search"}]}
    refused = httpx.post(f"{url}/responses", json=body, headers=AUTH, timeout=30)
    assert refused.status_code == 400 and "not 'web_search'" in refused.text
    assert faults.stats()["requests"] == 0


def get_weather(city: str) -> str:
    """The weather in a city now.

    Args:
        city: the city's name
    """
    return f"{city}: 12 C and rain"


@pytest.mark.slow  # importing langchain_openai takes over 10 s on a busy machine
def test_langchain_bind_tools_gets_tool_calls(client, url, faults):
    from langchain_core.messages import HumanMessage, ToolMessage
    from langchain_openai import ChatOpenAI

    model = ChatOpenAI(model="assistant", base_url=url, api_key=TOKEN, max_retries=0)
    bound = model.bind_tools([get_weather])
    question = HumanMessage("What is the weather in Oslo?")
    asked = bound.invoke([question])
    (call,) = asked.tool_calls
    assert call["name"] == "get_weather" and call["args"] == {"city": "Oslo"}
    streamed = None
    for piece in bound.stream([question]):
        streamed = piece if streamed is None else streamed + piece
    assert streamed is not None and streamed.tool_calls[0]["args"] == {"city": "Oslo"}
    answer = bound.invoke(
        [question, asked, ToolMessage(get_weather(**call["args"]), tool_call_id=call["id"])]
    )
    assert RESULT in answer.content and not answer.tool_calls
    said(
        "langchain bind_tools",
        "invoke and stream with get_weather; then a ToolMessage",
        f"{call['name']}({call['args']}); {answer.content}",
    )


@pytest.mark.slow  # importing the Agents SDK takes over 10 s on a busy machine
async def test_openai_agents_sdk_runs_a_function_tool_through_the_graph(client, url, faults):
    from agents import Agent, OpenAIResponsesModel, Runner, function_tool, set_tracing_disabled

    set_tracing_disabled(True)  # its traces would go to OpenAI
    ran: list[str] = []

    @function_tool
    def weather(city: str) -> str:
        """The weather in a city now."""
        ran.append(city)
        return get_weather(city)

    faults.configure(
        tools=ToolScript(turns=[[ScriptedCall(name="weather", arguments={"city": "Oslo"})]])
    )
    agent = Agent(
        name="forecaster",
        instructions="Answer with the weather.",
        model=OpenAIResponsesModel(
            model="assistant",
            openai_client=openai.AsyncOpenAI(base_url=url, api_key=TOKEN, max_retries=0),
        ),
        tools=[weather],
    )
    result = await Runner.run(agent, "What is the weather in Oslo?")
    assert ran == ["Oslo"] and RESULT in result.final_output
    streamed = Runner.run_streamed(agent, "What is the weather in Oslo?")
    kinds = [e.type async for e in streamed.stream_events()]
    assert ran == ["Oslo", "Oslo"] and RESULT in streamed.final_output
    assert "run_item_stream_event" in kinds
    said(
        "openai-agents",
        "Runner.run and run_streamed with @function_tool weather",
        f"ran weather{ran}; {result.final_output}",
    )


USERS_GRAPH = """
from typing import Annotated, TypedDict

from langchain_core.messages import AIMessage
from langchain_core.runnables import RunnableConfig
from langgraph.graph import START, StateGraph
from langgraph.graph.message import add_messages

from anabranch.agents.deferred import client_tools
from anabranch.chat import MessagesChat


class State(TypedDict):
    messages: Annotated[list, add_messages]


def lookup(state: State, config: RunnableConfig) -> dict:
    last = state["messages"][-1]
    if last.type == "tool":
        return {"messages": [AIMessage(f"the tool said: {last.content}")]}
    offered = client_tools(config).offered
    call = {"name": offered[0]["function"]["name"], "args": {"q": last.content}, "id": "c1"}
    return {"messages": [AIMessage("", tool_calls=[call])]}


builder = StateGraph(State)
builder.add_node(lookup)
builder.add_edge(START, "lookup")
chat = MessagesChat(builder.compile(checkpointer=False), name="lookup", takes_tools=True)
"""


@pytest.mark.slow  # a server of its own: over 10 s on a busy machine
def test_a_users_graph_that_declares_it_takes_tools_gets_them(tmp_path, faults):
    (tmp_path / "lookup_graph.py").write_text(USERS_GRAPH)
    path = os.pathsep.join(p for p in (str(tmp_path), os.environ.get("PYTHONPATH")) if p)
    process, url = start_server("--graph", "lookup_graph:chat", "--llm", faults.url,
                                "--threads-db", ":memory:", env={"PYTHONPATH": path})  # fmt: skip
    try:
        client = openai.OpenAI(base_url=url, api_key=TOKEN, max_retries=0)
        first = client.chat.completions.create(model="lookup", messages=QUESTION, tools=[WEATHER])
        (call,) = first.choices[0].message.tool_calls
        assert first.choices[0].finish_reason == "tool_calls" and call.id == "c1"
        assert json.loads(call.function.arguments) == {"q": QUESTION[0]["content"]}
        conversation = [
            *QUESTION,
            first.choices[0].message.model_dump(exclude_none=True),
            {"role": "tool", "tool_call_id": "c1", "content": RESULT},
        ]
        final = client.chat.completions.create(
            model="lookup", messages=conversation, tools=[WEATHER]
        )
        assert final.choices[0].message.content == f"the tool said: {RESULT}"
    finally:
        stop_process(process, grace=10)
