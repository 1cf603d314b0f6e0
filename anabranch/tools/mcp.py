"""Tools of an MCP server, called like local ones, through the `mcp` package's client.

    async with MCPTools.stdio("python", "server.py") as server:
        agent = LLMAgent("helper", endpoint, tools=server.tools)

The server's tools are listed once, when the connection opens, and become `Tool`s whose schema
is the server's own (the server validates the arguments). A call's result is its text content
(its structured content, as JSON, when it has no text); a result the server marks `is_error` is
raised as MCPToolError, which the tool loop turns into the error message the model reads, like
any failing tool. Connections are stdio (the server as a child process) or streamable HTTP (a
URL). The connection belongs to the task that opened it: open and close it in one `async with`.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from contextlib import AsyncExitStack
from typing import Any

from anabranch.agents.tools import Tool
from anabranch.errors import MCPToolError


class MCPTools:
    """A connection to one MCP server and its tools. Use as an async context manager."""

    def __init__(
        self,
        server: Any,
        *,
        prefix: str = "",
        timeout: float | None = None,
        sequential: bool = False,
    ) -> None:
        """`server`: a URL (streamable HTTP) or `mcp.StdioServerParameters`. `prefix` goes
        before every tool name (two servers may name a tool alike); `timeout` and `sequential`
        apply to each of its tools as to a local Tool."""
        self.server = server
        self.prefix = prefix
        self.timeout = timeout
        self.sequential = sequential
        self.tools: list[Tool] = []
        """The server's tools, once the connection is open."""
        self._stack: AsyncExitStack | None = None
        self._client: Any = None

    @classmethod
    def stdio(
        cls, command: str, *args: str, env: Mapping[str, str] | None = None, **options: Any
    ) -> MCPTools:
        """A server started as a child process, spoken to over its stdin and stdout."""
        from mcp import StdioServerParameters

        params = StdioServerParameters(command=command, args=list(args), env=dict(env or {}))
        return cls(params, **options)

    @classmethod
    def http(cls, url: str, **options: Any) -> MCPTools:
        """A server at a streamable HTTP URL (e.g. `http://127.0.0.1:8000/mcp`)."""
        return cls(url, **options)

    async def __aenter__(self) -> MCPTools:
        from mcp import Client

        async with AsyncExitStack() as stack:
            self._client = await stack.enter_async_context(Client(self.server))
            self.tools = [self._tool(t) for t in await self._list()]
            self._stack = stack.pop_all()
        return self

    async def __aexit__(self, *exc: object) -> None:
        stack, self._stack, self._client = self._stack, None, None
        if stack is not None:
            await stack.aclose()

    async def _list(self) -> list[Any]:
        listed: list[Any] = []
        cursor = None
        while True:
            page = await self._client.list_tools(cursor=cursor)
            listed += page.tools
            cursor = page.next_cursor
            if not cursor:
                return listed

    def _tool(self, listed: Any) -> Tool:
        name = listed.name
        client = self._client

        async def call(**arguments: Any) -> str:
            result = await client.call_tool(name, arguments)
            text = content_text(result.content, result.structured_content)
            if result.is_error:
                raise MCPToolError(text or "the tool failed and said nothing")
            return text

        call.__name__ = name
        schema = dict(listed.input_schema or {"type": "object", "properties": {}})
        return Tool(
            name=self.prefix + name,
            description=listed.description or listed.title or "",
            parameters=schema,
            function=call,
            sequential=self.sequential,
            timeout=self.timeout,
        )


def content_text(content: Sequence[Any], structured: Any = None) -> str:
    """An MCP result as the model reads it: its text parts, or its structured content as JSON;
    other parts (images, audio, resources) named by their type."""
    parts = []
    for block in content:
        text = getattr(block, "text", None)
        parts.append(text if isinstance(text, str) else f"[{getattr(block, 'type', 'content')}]")
    if not any(p for p in parts if not p.startswith("[")) and structured is not None:
        return json.dumps(structured)
    return "\n".join(parts)
