"""A small real MCP server, written with the `mcp` package, that the MCP tests start: over stdio
(`python tests/mcp_server.py`) or streamable HTTP (`python tests/mcp_server.py --port N`)."""

from __future__ import annotations

import argparse
import asyncio

from mcp.server.mcpserver import MCPServer
from mcp.server.mcpserver.exceptions import ToolError

server = MCPServer("notes")
NOTES = {"ray": "Ray runs the batch on a cluster.", "journal": "The journal survives a crash."}


@server.tool()
def lookup(topic: str) -> str:
    """Look up the note on a topic."""
    if topic not in NOTES:
        raise ToolError(f"no note on {topic!r}; topics: {', '.join(sorted(NOTES))}")
    return NOTES[topic]


@server.tool()
async def wait(seconds: float) -> str:
    """Wait, then say how long."""
    await asyncio.sleep(seconds)
    return f"waited {seconds:g} s"


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, default=None)
    args = parser.parse_args()
    if args.port is None:
        server.run("stdio")
    else:
        server.run("streamable-http", host="127.0.0.1", port=args.port)
