"""Clients nobody here wrote, against one real `anabranch serve` (the analysis and the chain, on
the fault LLM): the official openai Python client (sync, async, stream, Responses), the openai
Node client streaming (installed from npm under build/node on first use, offline after), LangChain's
`ChatOpenAI`, LiteLLM's `completion` and the OpenAI Agents SDK through the Responses API.

Each test prints one line, what it sent and what came back (`pytest -s` shows them)."""

import json
import os
import shutil
import subprocess

import openai
import pytest
from conftest import ROOT, TOKEN
from pydantic import BaseModel

PROMPT = "Name one river with a side channel."
NODE_DIR = ROOT / "build" / "node"


class River(BaseModel):
    river: str
    length_km: int


@pytest.fixture
def url(backend, faults):
    return backend


def said(client: str, sent: str, got: object) -> None:
    print(f"\n[{client}] sent {sent} -> got {str(got)[:160]!r}")


def test_openai_python_sync_async_stream_and_responses(url):
    sync = openai.OpenAI(base_url=url, api_key=TOKEN, max_retries=0)
    whole = sync.chat.completions.create(
        model="chain", messages=[{"role": "user", "content": PROMPT}], max_tokens=200
    )
    streamed = "".join(
        c.choices[0].delta.content or ""
        for c in sync.chat.completions.create(
            model="chain",
            messages=[{"role": "user", "content": PROMPT}],
            max_tokens=200,
            stream=True,
        )
        if c.choices
    )
    response = sync.responses.create(model="chain", input=PROMPT, max_output_tokens=200)
    assert streamed == whole.choices[0].message.content == response.output_text
    assert PROMPT in streamed and whole.choices[0].finish_reason == "stop"
    said("openai-python sync", "chat chain max_tokens=200, same streamed, responses", streamed)


async def test_openai_python_async(url):
    client = openai.AsyncOpenAI(base_url=url, api_key=TOKEN, max_retries=0)
    reply = await client.chat.completions.create(
        model="analyze", messages=[{"role": "user", "content": "I love this river."}]
    )
    stream = await client.responses.create(model="chain", input=PROMPT, stream=True)
    kinds = [event.type async for event in stream]
    assert reply.choices[0].message.content.startswith("Sentiment: ")
    assert kinds[0] == "response.created" and kinds[-1] == "response.completed"
    said("openai-python async", "chat analyze; responses chain stream", kinds[-1])


def node_client() -> None:
    """The openai package from npm under build/node: installed once, offline after."""
    if (NODE_DIR / "node_modules" / "openai").is_dir():
        return
    npm = shutil.which("npm")
    assert npm, "npm is needed for the Node client test"
    NODE_DIR.mkdir(parents=True, exist_ok=True)
    subprocess.run([npm, "install", "--no-audit", "--no-fund", "--prefix", str(NODE_DIR),
                    "openai@5"], check=True, capture_output=True, timeout=600)  # fmt: skip


def test_openai_node_streaming(url):
    node_client()
    node = shutil.which("node")
    assert node, "node is needed for the Node client test"
    run = subprocess.run(
        [node, str(ROOT / "tests" / "node" / "stream_chat.cjs"), url, TOKEN, "chain", PROMPT],
        capture_output=True, text=True, timeout=120,
        env={**os.environ, "NODE_PATH": str(NODE_DIR / "node_modules")},
    )  # fmt: skip
    assert run.returncode == 0, run.stderr
    heard = json.loads(run.stdout)
    whole = openai.OpenAI(base_url=url, api_key=TOKEN, max_retries=0).chat.completions.create(
        model="chain", messages=[{"role": "user", "content": PROMPT}], max_tokens=200
    )
    assert heard["text"] == whole.choices[0].message.content and heard["chunks"] > 3
    assert heard["finish"] == "stop"
    assert heard["usage"]["completion_tokens"] == whole.usage.completion_tokens
    said("openai-node", "chat chain stream include_usage max_tokens=200", heard)


@pytest.mark.slow  # importing langchain_openai takes over 10 s on a busy machine
def test_langchain_chat_openai(url, faults):
    from langchain_openai import ChatOpenAI

    chain = ChatOpenAI(model="chain", base_url=url, api_key=TOKEN, max_retries=0)
    answer = chain.invoke(PROMPT)
    streamed = "".join(str(piece.content) for piece in chain.stream(PROMPT))
    assert answer.content == streamed and PROMPT in streamed
    assert answer.response_metadata["finish_reason"] == "stop"
    river = chain.with_structured_output(River).invoke(PROMPT)
    assert isinstance(river, River)  # asked as a JSON schema, answered and checked in it
    analyze = ChatOpenAI(model="analyze", base_url=url, api_key=TOKEN, max_retries=0)
    with pytest.raises(openai.BadRequestError, match="response_format not supported"):
        analyze.with_structured_output(River).invoke("I love it.")
    said("langchain ChatOpenAI", "invoke, stream, with_structured_output(River) on chain; "
         "with_structured_output on analyze", f"{river!r}; analyze: 400")  # fmt: skip


@pytest.mark.slow  # importing litellm takes over 20 s on a busy machine
def test_litellm_completion(url, faults, monkeypatch):
    faults.configure(cut_answers=True)  # the fault LLM cuts at max_tokens, as models do
    monkeypatch.setenv("LITELLM_LOCAL_MODEL_COST_MAP", "True")  # no download of its price list
    import litellm

    reply = litellm.completion(
        model="openai/chain", api_base=url, api_key=TOKEN, max_tokens=7, temperature=0.1,
        messages=[{"role": "user", "content": PROMPT}],
    )  # fmt: skip
    pieces = litellm.completion(
        model="openai/analyze", api_base=url, api_key=TOKEN, stream=True,
        messages=[{"role": "user", "content": "I love this river."}],
    )  # fmt: skip
    text = "".join(p.choices[0].delta.content or "" for p in pieces if p.choices)
    assert reply.choices[0].finish_reason == "length"
    assert len(reply.choices[0].message.content.split()) <= 7
    assert text.startswith("Sentiment: ")
    said("litellm", "completion openai/chain max_tokens=7; openai/analyze stream",
         reply.choices[0].message.content)  # fmt: skip


@pytest.mark.slow  # importing the Agents SDK takes over 10 s on a busy machine
async def test_openai_agents_sdk_through_responses(url, faults):
    from agents import Agent, OpenAIResponsesModel, Runner, set_tracing_disabled

    set_tracing_disabled(True)  # its traces would go to OpenAI
    client = openai.AsyncOpenAI(base_url=url, api_key=TOKEN, max_retries=0)
    agent = Agent(
        name="river guide",
        instructions="Answer in one sentence.",
        model=OpenAIResponsesModel(model="chain", openai_client=client),
    )
    result = await Runner.run(agent, PROMPT)
    assert PROMPT in result.final_output
    streamed = Runner.run_streamed(agent, PROMPT)
    kinds = [e.type async for e in streamed.stream_events()]
    assert streamed.final_output == result.final_output and "raw_response_event" in kinds
    asked = faults.stats()["params"]
    assert asked and all(c.get("stream") for c in asked)  # the chain streams every step
    said("openai-agents", "Runner.run and run_streamed, model chain via /v1/responses",
         result.final_output)  # fmt: skip
