"""Specialists with more to them: a role, a goal and a backstory, tools and an output model, in
Python and in a TOML file; a chain step that calls tools (against the fault server, taught to),
and the chain report that shows its calls."""

from __future__ import annotations

import json

import pytest

from anabranch import Endpoint
from anabranch.agents.specialists import Specialist, load_specialists
from anabranch.agents.text import Summary
from anabranch.analysis.tools import sentiment
from anabranch.chain_report import render_chain_report
from anabranch.errors import ConfigError, InputError
from anabranch.events import ToolEnded, ToolStarted
from anabranch.graphs.chain import build_chain_graph, run_chain
from anabranch.testing.fault_tools import ScriptedCall, ToolScript


def test_a_role_goal_and_backstory_make_the_system_prompt():
    checker = Specialist("checker", role="a fact checker", goal="Confirm each figure.",
                         backstory="You once caught a typo that cost a million.")  # fmt: skip
    assert checker.system_prompt == (
        "You are a fact checker. Your goal: Confirm each figure. "
        "You once caught a typo that cost a million."
    )
    assert Specialist("critic", "Find the weakest claim.").system_prompt == (
        "Find the weakest claim."
    )
    with pytest.raises(ConfigError, match="persona or a role"):
        Specialist("nobody")


def test_a_file_names_tools_and_an_output_model(tmp_path):
    path = tmp_path / "team.toml"
    path.write_text(
        '[[specialist]]\nname = "reader"\nrole = "a careful reader"\n'
        'goal = "Judge the tone."\ntools = ["anabranch.analysis.tools:sentiment"]\n'
        'output_type = "anabranch.agents.text:Summary"\n'
    )
    [reader] = load_specialists(path)
    assert reader.tools == (sentiment,) and reader.output_type is Summary
    path.write_text('[[specialist]]\nname = "reader"\nrole = "r"\ntools = ["nowhere:fn"]\n')
    with pytest.raises(InputError, match="specialist 1: cannot import 'nowhere:fn'"):
        load_specialists(path)


async def test_a_chain_step_calls_tools_and_the_report_shows_them(faults):
    faults.configure(tools=ToolScript(turns=[[
        ScriptedCall(name="sentiment", arguments={"text": "I love it."}),
        ScriptedCall(name="sentiment", arguments={"text": "Awful."}),
    ]]))  # fmt: skip
    team = [
        Specialist("reader", role="a careful reader", goal="Judge each review's tone.",
                   tools=(sentiment,)),
        Specialist("writer", "Write the verdict in one line."),
        Specialist("summarizer", role="a summarizer", output_type=Summary),
    ]  # fmt: skip
    events = []
    async with Endpoint(faults.url, "fault") as endpoint:
        graph = build_chain_graph(team, endpoint)
        result = await run_chain(graph, "Two reviews: 'I love it.' and 'Awful.'", team,
                                 events.append)  # fmt: skip
    assert result.complete, result.steps
    reader, writer, summary = result.steps
    assert [json.loads(c.result)["label"] for c in reader.tool_calls] == ["positive", "negative"]
    assert reader.output.startswith("tool results: ")  # the model read both results
    assert writer.tool_calls == [] and summary.tool_calls == []
    assert Summary.model_validate_json(summary.output).summary  # the output model, as JSON
    kinds = [type(e) for e in events]
    assert kinds.count(ToolStarted) == 2 and kinds.count(ToolEnded) == 2
    report = render_chain_report(result)
    assert "**Tool calls:**" in report
    assert '- sentiment(text="I love it.") -> {"label":"positive"' in report
