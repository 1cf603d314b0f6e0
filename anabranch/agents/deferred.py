"""Tools the caller runs itself: the model's call of one ends the agent's turn.

A chat client that sends `tools` runs them on its side (OpenAI's function calling): the model
asks, the client runs the function and sends the result back in the next request. Inside an
agent such a tool is *deferred*: it is offered to the model beside the agent's own tools, the
tool loop runs the agent's own calls as always, and a turn that calls a client tool ends the
loop with those calls (`ClientCalls`) for the caller to run. A turn that calls both kinds ends
too, with only the client's calls: the agent's own are not run, so nothing is answered twice,
and the model asks for them again on the next turn, once it has the client's results.

The caller (the chat server) puts the client's tools in the run's configuration
(`configurable["client_tools"]`); a node reads them with `client_tools(config)`.
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from pydantic import BaseModel, Field

CLIENT_TOOLS = "client_tools"
"""The key in a run's `configurable` that carries the client's tools (a `ClientTools`)."""


@dataclass(frozen=True, slots=True)
class ClientTools:
    """The functions a caller offers the model and runs itself, and how it wants them used."""

    specs: tuple[dict[str, Any], ...]
    """The chat request's `tools` entries (`{"type": "function", "function": {...}}`)."""
    choice: str | dict[str, Any] = "auto"
    """OpenAI's `tool_choice`: `auto`, `none` (the client's tools are not offered),
    `required`, or `{"type": "function", "function": {"name": ...}}`; sent to the model."""
    parallel: bool = True
    """OpenAI's `parallel_tool_calls`: False keeps only a turn's first client call."""

    @property
    def names(self) -> list[str]:
        """The names of the tools offered."""
        return [str(s["function"]["name"]) for s in self.offered]

    @property
    def offered(self) -> list[dict[str, Any]]:
        """The specs the model is offered: none under `tool_choice: none`."""
        return [] if self.choice == "none" else list(self.specs)

    def extra(self) -> dict[str, Any]:
        """The request fields that carry the choice to the model (the default sends none)."""
        extra: dict[str, Any] = {}
        if self.offered and self.choice != "auto":
            extra["tool_choice"] = self.choice
        if self.offered and not self.parallel:
            extra["parallel_tool_calls"] = False
        return extra


class ClientCall(BaseModel):
    """One call of a client's tool, as the model made it."""

    id: str
    """The call's id, which the tool's result must name (`tool_call_id`)."""
    name: str
    arguments: str
    """The arguments as the model wrote them: JSON text, which, as OpenAI warns of its own
    models, a model may get wrong; the client validates them."""

    def wire(self) -> dict[str, Any]:
        """The call as a chat message's `tool_calls` entry."""
        return {"id": self.id, "type": "function",
                "function": {"name": self.name, "arguments": self.arguments}}  # fmt: skip


class ClientCalls(BaseModel):
    """An agent's answer when the model called the client's tools: the calls to run, and any
    text the model wrote beside them."""

    calls: list[ClientCall] = Field(min_length=1)
    text: str = ""

    def message(self) -> dict[str, Any]:
        """The answer as the assistant message of a chat conversation."""
        return {"role": "assistant", "content": self.text or None,
                "tool_calls": [c.wire() for c in self.calls]}  # fmt: skip


class _Called(Protocol):
    """A call the tool loop read from a model turn."""

    @property
    def id(self) -> str: ...
    @property
    def name(self) -> str: ...
    @property
    def raw(self) -> str: ...


def client_tools(config: Mapping[str, Any] | None) -> ClientTools | None:
    """The client's tools a run was given, or None (a run without them, or outside a server)."""
    found = ((config or {}).get("configurable") or {}).get(CLIENT_TOOLS)
    return found if isinstance(found, ClientTools) else None


def ending(client: ClientTools | None, text: str, calls: Sequence[_Called]) -> ClientCalls | None:
    """The client's calls of a model turn, which end the loop; None when it called none."""
    if client is None:
        return None
    names = set(client.names)
    mine = [c for c in calls if c.name in names]
    if not mine:
        return None
    kept = mine if client.parallel else mine[:1]
    return ClientCalls(
        calls=[ClientCall(id=c.id or f"call_{uuid.uuid4().hex[:24]}", name=c.name,
                          arguments=c.raw or "{}") for c in kept],
        text=text,
    )  # fmt: skip
