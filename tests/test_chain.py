"""Chains of specialists: the graph, the report's structure, failures, files, the CLI."""

import re

import pytest
from conftest import run_cli

from anabranch.agents.specialists import (
    DEFAULT_CHAIN,
    Specialist,
    load_specialists,
    resolve_specialists,
)
from anabranch.chain_report import render_chain_report
from anabranch.errors import InputError
from anabranch.events import TextDelta
from anabranch.graphs.chain import build_chain_graph, run_chain
from anabranch.llm.endpoint import Endpoint
from anabranch.llm.settings import RetryPolicy

REPORT_HEADINGS = [
    "# Chain Execution Results",
    "## Initial Prompt",
    "## Models Used",
    *["## Step N: S (T)"] * 3,
    "## Chain Transformation Visualization",
    "### Progress Path",
    "### Contribution Analysis",
]
"""The report's structure (docs/architecture.md), with names, numbers and times blanked."""
CONTRIBUTION = "| Step | Specialist | Content Length | Processing Time | Key Contribution |"
PROMPT = "Explain how to use asynchronous Python for AI applications"


def headings(markdown: str) -> list[str]:
    """Headings with names, numbers and times blanked, so two reports' structures compare."""
    shapes = []
    for line in markdown.splitlines():
        if line.startswith("#"):
            line = re.sub(r"Step \d+: \S+ \(execution time: \d\d:\d\d\)", "Step N: S (T)", line)
            shapes.append(line)
    return shapes


def table(markdown: str, header: str) -> list[list[str]]:
    lines = markdown.splitlines()
    start = lines.index(header)
    rows = []
    for line in lines[start + 2 :]:
        if not line.startswith("|"):
            break
        rows.append([cell.strip() for cell in line.strip("|").split("|")])
    return rows


async def run(endpoint, specialists=DEFAULT_CHAIN, **kwargs):
    """The chain's result and every event it streamed."""
    graph = build_chain_graph(specialists, endpoint, **kwargs)
    events: list = []
    return await run_chain(graph, PROMPT, specialists, events.append), events


async def test_report_has_the_documented_structure_and_real_timings(faults):
    faults.configure(latency_ms=300)
    async with Endpoint(faults.url, "fault") as llm:
        result, events = await run(llm)
    assert result.complete and [s.specialist for s in result.steps] == [
        s.name for s in DEFAULT_CHAIN
    ]
    assert all(s.seconds >= 0.3 and s.usage.completion_tokens > 0 for s in result.steps)
    assert [s.temperature for s in result.steps] == [0.7, 0.7, 0.5]
    streamed = "".join(e.text for e in events if isinstance(e, TextDelta) and e.step == 1)
    assert streamed == result.steps[0].output

    report = render_chain_report(result)
    ours = [h for h in headings(report) if h != "### Token Usage"]  # beyond the original format
    assert ours == REPORT_HEADINGS
    assert CONTRIBUTION in report
    rows = table(report, CONTRIBUTION)
    assert rows[0] == ["0", "Initial Prompt", f"{len(PROMPT.split())} words", "-", "Starting point"]
    for row, step in zip(rows[1:], result.steps, strict=True):
        assert row[:2] == [str(step.index), step.specialist]
        assert re.fullmatch(r"\d+ words", row[2]) and re.fullmatch(r"\d\d:\d\d", row[3])
    assert "Initial Prompt → system_specialist → agent_enforcer → decision_simplifier" in report
    assert (
        "1. system_specialist (temp=0.7)" in report
        and "3. decision_simplifier (temp=0.5)" in report
    )
    tokens = table(report, "| Step | Specialist | Tokens In | Tokens Out |")
    assert tokens[0][2] == str(result.steps[0].usage.prompt_tokens)


async def test_key_contribution_names_what_the_step_added(faults):
    async with Endpoint(faults.url, "fault") as llm:
        result, _ = await run(llm, DEFAULT_CHAIN[:2])
    report = render_chain_report(result)
    # The fault server echoes the last user message: step 2's new words are "Previous answer".
    (row,) = [r for r in table(report, CONTRIBUTION) if r[0] == "2"]
    assert row[4].startswith("Final integration; adds:") and "previous answer" in row[4].lower()


async def test_a_failing_step_stops_the_chain_with_a_partial_report(faults):
    faults.configure(script=["ok", "500", "500", "500"])
    async with Endpoint(faults.url, "fault", retry=RetryPolicy(3, backoff_initial=0.01)) as llm:
        result, _ = await run(llm)
    assert not result.complete and len(result.steps) == 2
    failed = result.steps[1]
    assert failed.status == "error" and failed.output == ""
    assert (failed.error.type, failed.error.attempts) == ("LLMStatusError", 3)
    assert faults.stats()["requests"] == 4  # step 3 never ran on an error string
    report = render_chain_report(result)
    assert "**Partial report:** the chain stopped at step 2 (agent_enforcer)" in report
    assert (
        "**Step failed:** LLMStatusError" in report and "3. decision_simplifier (not run)" in report
    )


async def test_all_context_shows_every_earlier_output(faults):
    async with Endpoint(faults.url, "fault") as llm:
        result, _ = await run(llm, context="all")
    last = result.steps[-1].output
    assert (
        "Previous answer (system_specialist)" in last and "Previous answer (agent_enforcer)" in last
    )


def test_specialists_from_toml_and_yaml(tmp_path):
    toml = tmp_path / "team.toml"
    toml.write_text('[[specialist]]\nname = "critic"\npersona = "Find the weakest claim."\n'
                    "temperature = 0.2\n")  # fmt: skip
    yaml = tmp_path / "team.yaml"
    yaml.write_text("specialists:\n  - name: poet\n    persona: Rewrite as a haiku.\n")
    assert load_specialists(toml) == [Specialist("critic", "Find the weakest claim.", 0.2)]
    (poet,) = load_specialists(yaml)
    assert (poet.name, poet.temperature) == ("poet", 0.7)
    chain = resolve_specialists(["critic", "decision_simplifier"], load_specialists(toml))
    assert [s.name for s in chain] == ["critic", "decision_simplifier"]
    bad = tmp_path / "bad.toml"
    bad.write_text('[[specialist]]\nname = "x"\ntemperature = 9\n')
    with pytest.raises(InputError, match=r"bad.toml: specialist 1: temperature: Input should be"):
        load_specialists(bad)
    bad.write_text('[[specialist]]\nname = "x"\n')
    with pytest.raises(InputError, match=r"bad.toml: specialist 1: .* needs a persona or a role"):
        load_specialists(bad)
    with pytest.raises(InputError, match="unknown specialists"):
        resolve_specialists(["nobody"])


def test_cli_chain_streams_and_writes_the_report(tmp_path, faults):
    out = tmp_path / "report.md"
    proc = run_cli("chain", PROMPT, "--llm", faults.url, "--model", "m", "--out", str(out))
    assert proc.returncode == 0, proc.stderr
    assert f"echo: {PROMPT}" in proc.stdout  # step 1's text, streamed to the terminal
    assert out.read_text().startswith("# Chain Execution Results")


@pytest.mark.slow  # the embedded model
def test_cli_chain_on_the_embedded_model(tmp_path):
    team = tmp_path / "short.toml"
    team.write_text(
        '[[specialist]]\nname = "explainer"\npersona = "Explain briefly."\nmax_tokens = 40\n'
        '[[specialist]]\nname = "summariser"\npersona = "Summarise in one sentence."\n'
        "max_tokens = 30\ntemperature = 0.3\n"
    )
    out = tmp_path / "report.md"
    proc = run_cli("chain", PROMPT, "--file", str(team), "--specialists", "explainer,summariser",
                   "--out", str(out))  # fmt: skip
    assert proc.returncode == 0, proc.stdout + proc.stderr
    report = out.read_text()
    assert "## Step 2: summariser (execution time:" in report
    assert "2. summariser (temp=0.3)" in report and "Partial report" not in report
    steps = report.split("## Step ")[1:]
    assert all(len(s.split("\n\n", 2)[2].split()) > 3 for s in steps[:2])  # real text per step
