"""LLMAgent without tools, against the fault server: a declared agent is an agent like any
other; its typed output is validated and repaired through the endpoint; its merge rule joins a
long text's chunks; the summarize and translate agents are such agents."""

from __future__ import annotations

import pytest
from pydantic import BaseModel

from anabranch import Endpoint, Subtask, Task, build_fanout_graph
from anabranch.agents.base import Agent, Merges
from anabranch.agents.llm import LLMAgent, TextOutput
from anabranch.agents.planner import RulePlanner
from anabranch.agents.text import Summary, Translation, summarizer, translator
from anabranch.errors import ConfigError


class Verdict(BaseModel):
    label: str
    confidence: float


def subtask(text: str = "hello there", instruction: str | None = None) -> Subtask:
    return Subtask(task_id="t", kind="agent", text=text, instruction=instruction)


async def test_a_text_agent_answers_with_the_models_text(faults):
    async with Endpoint(faults.url, "fault") as endpoint:
        agent = LLMAgent("agent", endpoint, instructions="Be brief.")
        assert isinstance(agent, Agent) and not isinstance(agent, Merges)
        answer = await agent.run(subtask("hello there"))
    assert answer.output == TextOutput(text="echo: hello there")
    assert answer.usage.requests == 1


async def test_a_typed_output_is_validated_and_an_invalid_one_repaired(faults):
    faults.configure(script=["invalid"])  # the first answer is not JSON
    async with Endpoint(faults.url, "fault") as endpoint:
        agent = LLMAgent("judge", endpoint, output_type=Verdict)
        answer = await agent.run(subtask())
    assert isinstance(answer.output, Verdict)
    assert answer.attempts == 2 and faults.stats()["requests"] == 2  # the repair re-ask


def test_instructions_may_be_a_function_of_the_subtask():
    agent = LLMAgent(
        "agent",
        Endpoint("http://127.0.0.1:9", "m"),
        instructions=lambda s: f"You read chunk {s.chunk} of task {s.task_id}.",
    )
    messages = agent.messages(subtask("the text", instruction="Summarize it"))
    assert messages == [
        {"role": "system", "content": "You read chunk 0 of task t."},
        {"role": "user", "content": "Request: Summarize it\n\nText:\nthe text"},
    ]


def test_what_cannot_work_is_refused_at_once():
    endpoint = Endpoint("http://127.0.0.1:9", "m")
    with pytest.raises(ConfigError, match="output_type"):
        LLMAgent("agent", endpoint, output_type=dict)  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="max_steps"):
        LLMAgent("agent", endpoint, max_steps=0)


async def test_the_summaries_of_a_long_texts_chunks_are_merged(faults):
    long_text = " ".join(f"Sentence number {i} says something." for i in range(40))
    async with Endpoint(faults.url, "fault") as endpoint:
        agents = [summarizer(endpoint), translator(endpoint)]
        planner = RulePlanner(kinds=[a.name for a in agents], chunk_tokens=32)
        graph = build_fanout_graph(agents, planner)
        result = (await graph.ainvoke({"task": Task(id="t", text=long_text)}))["result"]
    assert result.status == "ok", result.errors
    assert result.chunks > 2
    summary = result.output("summarize")
    assert isinstance(summary, Summary)
    assert summary.summary == " ".join(["ok"] * result.chunks)  # one per chunk, in order
    translation = result.output("translate", Translation)
    assert translation.text == " ".join(["ok"] * result.chunks)
    assert faults.stats()["requests"] == 2 * result.chunks
