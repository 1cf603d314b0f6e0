"""Tools of a real MCP server (tests/mcp_server.py, written with the `mcp` package, started by
the tests over stdio and over streamable HTTP), called by an agent's model through the tool loop
like local tools; a result the server marks `is_error` reaches the model as an error."""

from __future__ import annotations

import socket
import subprocess
import sys
import time

import pytest
from conftest import ROOT

from anabranch import Endpoint, Task, build_fanout_graph
from anabranch.agents.llm import LLMAgent
from anabranch.llm.local_server import free_port, stop_process
from anabranch.testing.fault_tools import ScriptedCall, ToolScript
from anabranch.tools.mcp import MCPTools

SERVER = str(ROOT / "tests" / "mcp_server.py")
SCRIPT = ToolScript(
    turns=[[ScriptedCall(name="lookup", arguments={"topic": "ray"}),
            ScriptedCall(name="lookup", arguments={"topic": "cobol"})]]
)  # fmt: skip


async def ask(faults, server: MCPTools):
    faults.configure(tools=SCRIPT)
    async with server, Endpoint(faults.url, "fault") as endpoint:
        assert sorted(t.name for t in server.tools) == ["lookup", "wait"]
        graph = build_fanout_graph([LLMAgent("helper", endpoint, tools=server.tools)])
        return (await graph.ainvoke({"task": Task(id="t", text="What is Ray for?")}))["result"]


def check(result) -> None:
    assert result.status == "ok", result.errors
    ray, cobol = result.tool_calls
    assert ray.result == "Ray runs the batch on a cluster." and ray.error is None
    assert cobol.result is None and "no note on 'cobol'" in cobol.error
    [answer] = result.output("helper")
    assert answer.text.startswith("tool results: Ray runs the batch on a cluster. | error:")


async def test_an_agent_uses_the_tools_of_an_mcp_server_over_stdio(faults):
    check(await ask(faults, MCPTools.stdio(sys.executable, SERVER)))


@pytest.fixture
def http_server():
    port = free_port()
    process = subprocess.Popen([sys.executable, SERVER, "--port", str(port)],
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # fmt: skip
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        assert process.poll() is None, "the MCP server exited"
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            break
        except OSError:
            time.sleep(0.2)
    yield f"http://127.0.0.1:{port}/mcp"
    stop_process(process, grace=5)


async def test_an_agent_uses_the_tools_of_an_mcp_server_over_http(faults, http_server):
    check(await ask(faults, MCPTools.http(http_server, timeout=30)))
