"""Every script in examples/ runs, as a user would run it, and does what it says."""

import subprocess
import sys

import pytest
from conftest import ROOT

EXAMPLES = ROOT / "examples"


def run_example(name: str, *args: str, cwd=ROOT) -> str:
    proc = subprocess.run(
        [sys.executable, str(EXAMPLES / name), *args],
        capture_output=True, text=True, timeout=300, cwd=cwd,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    return proc.stdout


def test_every_example_has_a_test():
    tested = {"batch_on_embedded_model.py", "own_agent.py", "chain_of_specialists.py",
              "chat_backend.py", "ray_batch.py", "tool_agent.py", "mcp_agent.py"}  # fmt: skip
    assert {p.name for p in EXAMPLES.glob("*.py")} == tested


@pytest.mark.slow  # the embedded model
def test_batch_on_the_embedded_model():
    out = run_example("batch_on_embedded_model.py", "6")
    assert "LLM: embedded llama.cpp server" in out
    assert "6 tasks -> " in out and "-> 6 delivered" in out


def test_own_agent():
    out = run_example("own_agent.py").splitlines()
    lines = {line.split()[0]: line for line in out}
    assert lines["calm"].endswith(" 0.045")  # 1 capital in 22 letters
    assert lines["loud"] == "loud negative 1.0"


@pytest.mark.slow  # the embedded model
def test_chain_of_specialists(tmp_path):
    report = tmp_path / "report.md"
    out = run_example("chain_of_specialists.py", "Plan a picnic.", str(report))
    assert "## Step 3: decision_simplifier" in out and "complete: True" in out
    assert report.read_text().startswith("# Chain Execution Results")


@pytest.mark.slow  # end to end through `anabranch` processes: over 8 s on a busy machine
def test_chat_backend_mounted_in_fastapi():
    out = run_example("chat_backend.py")
    assert out.startswith("Sentiment: positive")
    lines = out.splitlines()
    assert any(line.startswith("Sentiment: negative") for line in lines)  # /v1/responses
    assert any(line.startswith("Planned 3 subtasks: ") for line in lines)  # reasoning_content


@pytest.mark.slow  # a Ray cluster
def test_own_graph_on_a_ray_cluster():
    out = run_example("ray_batch.py")
    assert out.startswith("40 tasks delivered by the cluster; words in t0..t4: [7, 14, 21, 28, 35]")


@pytest.mark.slow  # a Python process of its own: over 8 s on a busy machine
def test_tool_agent(faults):
    from anabranch.testing.fault_tools import ScriptedCall, ToolScript

    faults.configure(tools=ToolScript(turns=[[
        ScriptedCall(name="weather", arguments={"city": "Oslo"}),
        ScriptedCall(name="local_time", arguments={"city": "Oslo"}),
    ]]))  # fmt: skip
    out = run_example("tool_agent.py", faults.url).splitlines()
    assert out[:2] == ["called weather({'city': 'Oslo'}) -> snow, -3 C",
                       "called local_time({'city': 'Oslo'}) -> 09:00"]  # fmt: skip
    assert out[2] == "answer: tool results: snow, -3 C | 09:00"
    assert out[3] == "status: ok"


@pytest.mark.slow  # two processes of their own: over 8 s on a busy machine
def test_mcp_agent(faults):
    from anabranch.testing.fault_tools import ScriptedCall, ToolScript

    faults.configure(
        tools=ToolScript(turns=[[ScriptedCall(name="lookup", arguments={"topic": "ray"})]])
    )
    out = run_example("mcp_agent.py", str(ROOT / "tests" / "mcp_server.py"), faults.url)
    assert out.splitlines() == [
        "tools: lookup, wait",
        "called lookup({'topic': 'ray'}) -> Ray runs the batch on a cluster.",
        "answer: tool results: Ray runs the batch on a cluster.",
    ]
