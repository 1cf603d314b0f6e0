"""An agent that uses the tools of an MCP server (here one started over stdio, written with the
`mcp` package; any MCP server works, over stdio or streamable HTTP).

    pip install 'anabranch[mcp]'
    python examples/mcp_agent.py SERVER.py [LLM]    # LLM: `local` (the default) or a URL

The server's tools are listed once and called like local ones; an error the server reports
(`is_error`) reaches the model as the tool's answer.
"""

import asyncio
import sys

import anabranch as ab
from anabranch.tools.mcp import MCPTools


async def main(server: str, llm: str) -> None:
    async with (
        MCPTools.stdio(sys.executable, server) as mcp,
        ab.open_endpoint(ab.LLMOptions(llm=llm)) as endpoint,
    ):
        print("tools:", ", ".join(t.name for t in mcp.tools))
        agent = ab.LLMAgent("helper", endpoint, instructions="Use the tools to answer.",
                            tools=mcp.tools)  # fmt: skip
        graph = ab.build_fanout_graph([agent])
        task = ab.Task(id="q", text="What is Ray for, according to the notes?")
        result = (await graph.ainvoke({"task": task}))["result"]
    for call in result.tool_calls:
        print(f"called {call.name}({call.arguments}) -> {call.result or call.error}")
    for output in result.output("helper") if result.status == "ok" else ():
        print("answer:", output.text)


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1], sys.argv[2] if len(sys.argv) > 2 else "local"))
