"""One LLM agent served as a chat model: it answers the whole conversation, with its own tools
and the client's.

The agent's own tools (agents/tools.py) run in its tool loop, on the server; the client's
(a request's `tools`) are deferred (agents/deferred.py): a model turn that calls one ends the
run, and the answer is those calls (`finish_reason: tool_calls`) for the client to run. The
client sends the conversation back with the assistant's `tool_calls` and a `tool` message per
call, and the agent goes on from there. `anabranch serve --graph assistant` is one.
"""

from __future__ import annotations

import operator
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Annotated, Any, TypedDict

from langchain_core.runnables import RunnableConfig
from langgraph.graph import END, START, StateGraph

from anabranch.agents.deferred import ClientCalls, client_tools
from anabranch.agents.llm import LLMAgent
from anabranch.chat.adapters import Message, MessagesTurn, last_user_text
from anabranch.graphs.state import Graph
from anabranch.telemetry.tracing import agent_node
from anabranch.types import Subtask, Usage


class AgentState(TypedDict, total=False):
    messages: Annotated[list[Message], operator.add]
    usage: Usage


def agent_graph(agent: LLMAgent) -> Graph:
    """A graph of one node: `agent` on the conversation, offered the run's client tools; its
    message is the answer, or the client's calls to run."""

    async def respond(state: AgentState, config: RunnableConfig) -> dict[str, Any]:
        conversation = list(state.get("messages") or [])
        system = agent.instructions
        if callable(system):
            question = Subtask(task_id="chat", kind=agent.name, text=last_user_text(conversation))
            system = system(question)
        sent = [{"role": "system", "content": system}, *conversation] if system else conversation
        answer = await agent.answer(sent, client_tools(config))
        output = answer.output
        if isinstance(output, ClientCalls):
            message = output.message()
        else:
            text = getattr(output, "text", None)
            content = text if isinstance(text, str) else output.model_dump_json()
            message = {"role": "assistant", "content": content}
        return {"messages": [message], "usage": answer.usage}

    builder = StateGraph(AgentState)
    builder.add_node("agent", agent_node(agent.name, respond))
    builder.add_edge(START, "agent")
    builder.add_edge("agent", END)
    return builder.compile(checkpointer=False, name=agent.name)


@dataclass
class AgentChat:
    """An LLM agent as a chat model that takes the client's tools."""

    agent: LLMAgent
    name: str = ""
    """The model name it is served as (the agent's name by default)."""
    description: str = "An LLM agent answering the conversation."
    honours: frozenset[str] = frozenset()
    """None: the agent's own sampling applies (its `sampling`, or its endpoint's)."""
    takes_tools: bool = True
    """Always: the client's tools are offered beside the agent's own."""
    graph: Graph = field(init=False)

    def __post_init__(self) -> None:
        self.name = self.name or self.agent.name
        self.graph = agent_graph(self.agent)

    def start(self, conversation: Sequence[Message]) -> MessagesTurn:
        return MessagesTurn({"messages": list(conversation)})
