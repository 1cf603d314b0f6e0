"""The analysis graph: planner -> tokenize, keywords, sentiment (per chunk) -> reducer.

With an endpoint it also holds the seed's other task kinds, summarize and translate
(agents/text.py), and the planner sends a task whose instruction asks for one of them there; a
task without such an instruction gets the analysis.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Literal

from anabranch.agents.planner import LLMPlanner, RulePlanner
from anabranch.agents.text import DESCRIPTIONS as TEXT_DESCRIPTIONS
from anabranch.agents.text import ROUTES, summarizer, translator
from anabranch.analysis.backends import DESCRIPTIONS, make_agents, parse_backend
from anabranch.errors import ConfigError
from anabranch.graphs.fanout import Planner, build_fanout_graph
from anabranch.graphs.state import Graph
from anabranch.llm.endpoint import Endpoint

if TYPE_CHECKING:
    from anabranch.chat.adapters import FanoutChat

PlannerKind = Literal["rule", "llm"]
"""`rule`: every agent for every task; `llm`: the model picks the agents each task needs."""


def build_analysis_graph(
    endpoint: Endpoint | None = None,
    *,
    backend: str | None = None,
    planner: PlannerKind = "rule",
    chunk_tokens: int = 256,
) -> Graph:
    """The built-in analysis (tokens, keywords, sentiment) as `anabranch run` builds it, plus,
    with an endpoint, the summarizer and the translator that instructions route to.

    `backend` is `local`, `llm` or per agent (`keywords=llm,sentiment=local`); None means llm when
    there is an endpoint. The `llm` planner lets the model pick the agents each task needs.
    Without an endpoint a task that asks for a summary or a translation gets an error record
    naming the missing agent.
    """
    if planner not in ("rule", "llm"):
        raise ConfigError(f"unknown planner {planner!r}; use rule or llm")
    if planner == "llm" and endpoint is None:
        raise ConfigError("the llm planner needs an endpoint")
    agents = make_agents(parse_backend(backend, endpoint is not None), endpoint)
    rule = RulePlanner(kinds=[a.name for a in agents], chunk_tokens=chunk_tokens, routes=ROUTES)
    if endpoint is not None:
        agents += [summarizer(endpoint), translator(endpoint)]
    chosen: Planner = rule
    if planner == "llm" and endpoint is not None:
        chosen = LLMPlanner(endpoint, {**DESCRIPTIONS, **TEXT_DESCRIPTIONS}, rule=rule)
    return build_fanout_graph(agents, chosen)


def analysis_chat(endpoint: Endpoint | None = None, *, backend: str | None = None) -> FanoutChat:
    """The analysis as a chat model (`analyze`): the last user message is the text, the answer
    its sentiment, keywords and token count."""
    from anabranch.analysis.records import render_analysis
    from anabranch.chat.adapters import FanoutChat

    graph = build_analysis_graph(endpoint, backend=backend).copy({"checkpointer": False})
    return FanoutChat(graph, "analyze", "Tokens, keywords and sentiment of the last user message.",
                      render=render_analysis)  # fmt: skip
