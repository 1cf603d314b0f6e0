"""The analysers as a model's tools, through `anabranch serve` (a real subprocess) and the
official openai client: "how positive are these three reviews?" makes three concurrent
sentiment calls, and the stream's progress shows the model's turns and each call."""

from __future__ import annotations

import json

import openai
import pytest
from conftest import TOKEN, start_server

from anabranch.analysis.tools import ANALYSIS_TOOLS
from anabranch.llm.local_server import stop_process
from anabranch.testing.fault_tools import ScriptedCall, ToolScript

REVIEWS = ["I love it, it works great.", "It broke after a day. Awful.", "It is a phone."]


@pytest.mark.slow  # end to end through `anabranch` processes: over 8 s on a busy machine
def test_three_reviews_get_three_concurrent_sentiment_calls_in_the_stream(faults):
    faults.configure(tools=ToolScript(
        turns=[[ScriptedCall(name="sentiment", arguments={"text": r}) for r in REVIEWS]]
    ))  # fmt: skip
    process, url = start_server("--graph", "assistant", "--llm", faults.url)
    try:
        client = openai.OpenAI(base_url=url, api_key=TOKEN)
        question = "How positive are these three reviews? " + " / ".join(REVIEWS)
        progress, answer = [], []
        with client.chat.completions.with_streaming_response.create(
            model="assistant", messages=[{"role": "user", "content": question}], stream=True
        ) as response:
            for line in response.iter_lines():
                if line.startswith(": anabranch "):
                    progress.append(json.loads(line.removeprefix(": anabranch ")))
                elif line.startswith("data: {"):
                    for choice in json.loads(line[6:])["choices"]:
                        answer.append(choice["delta"].get("content") or "")
    finally:
        stop_process(process, grace=10)

    kinds = [p["type"] for p in progress]
    first_turn = progress[kinds.index("model_turn")]
    assert first_turn["tool_calls"] == ["sentiment"] * 3
    tools = [p for p in progress if p["type"] in ("tool_start", "tool_end")]
    assert [p["type"] for p in tools] == ["tool_start"] * 3 + ["tool_end"] * 3  # together
    ended = sorted(tools[3:], key=lambda p: p["call_id"])  # concurrent: they end in any order
    labels = [json.loads(p["content"])["label"] for p in ended]
    assert labels == ["positive", "negative", "neutral"]
    assert kinds.count("model_turn") == 2
    said = "".join(answer)
    assert all(f'"label":"{label}"' in said for label in labels)


def test_the_analysers_are_tools_with_described_arguments():
    specs = {t.name: t.spec["function"] for t in ANALYSIS_TOOLS}
    assert sorted(specs) == ["keywords", "sentiment", "tokenize"]
    assert specs["sentiment"]["parameters"]["properties"]["text"]["description"] == (
        "one text, e.g. one review"
    )
    assert specs["keywords"]["parameters"]["required"] == ["text"]
