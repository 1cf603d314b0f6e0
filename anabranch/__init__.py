"""anabranch: multi-agent graphs on LangGraph whose agents call LLMs concurrently and lose nothing.

A planner splits each task into subtasks, agents run them at the same time, and a reducer joins
their outputs into one result per task.

The top level holds what a newcomer needs, by concept; the rest lives in subpackages, each with
its own `__all__`: `anabranch.analysis` (the text analysis built on the core), `anabranch.chat`
(graphs served as chat models), `anabranch.testing` (the fault-injecting server),
`anabranch.errors` (every exception), `anabranch.events` (stream events). Names are imported when
first used, so `import anabranch` does not pay for LangGraph, the openai SDK or Ray up front.
"""

from __future__ import annotations

import importlib
import importlib.metadata
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from anabranch.agents.base import Agent, Answer
    from anabranch.agents.llm import LLMAgent
    from anabranch.agents.planner import LLMPlanner, RulePlanner
    from anabranch.agents.reducer import Reducer
    from anabranch.agents.specialists import Specialist
    from anabranch.errors import AnabranchError, ConfigError, LLMError
    from anabranch.graphs.chain import build_chain_graph, run_chain
    from anabranch.graphs.fanout import build_fanout_graph
    from anabranch.graphs.runner import run_batch
    from anabranch.graphs.spec import GraphSpec
    from anabranch.inputs import read_tasks
    from anabranch.journal import Journal
    from anabranch.llm.connect import LLMOptions, open_endpoint
    from anabranch.llm.endpoint import Endpoint
    from anabranch.llm.settings import Limits, RetryPolicy, Sampling, Timeouts
    from anabranch.types import RunReport, Subtask, SubtaskResult, Task, TaskResult, Usage

_WHERE = {
    # tasks and results
    "Task": "anabranch.types",
    "Subtask": "anabranch.types",
    "SubtaskResult": "anabranch.types",
    "TaskResult": "anabranch.types",
    "Usage": "anabranch.types",
    "RunReport": "anabranch.types",
    # agents
    "Agent": "anabranch.agents.base",
    "Answer": "anabranch.agents.base",
    "LLMAgent": "anabranch.agents.llm",
    "RulePlanner": "anabranch.agents.planner",
    "LLMPlanner": "anabranch.agents.planner",
    "Reducer": "anabranch.agents.reducer",
    "Specialist": "anabranch.agents.specialists",
    # graphs and the runner
    "build_fanout_graph": "anabranch.graphs.fanout",
    "build_chain_graph": "anabranch.graphs.chain",
    "run_chain": "anabranch.graphs.chain",
    "run_batch": "anabranch.graphs.runner",
    "GraphSpec": "anabranch.graphs.spec",
    "Journal": "anabranch.journal",
    "read_tasks": "anabranch.inputs",
    # the endpoint and its settings
    "Endpoint": "anabranch.llm.endpoint",
    "LLMOptions": "anabranch.llm.connect",
    "open_endpoint": "anabranch.llm.connect",
    "Timeouts": "anabranch.llm.settings",
    "RetryPolicy": "anabranch.llm.settings",
    "Limits": "anabranch.llm.settings",
    "Sampling": "anabranch.llm.settings",
    # errors (all of them: anabranch.errors)
    "AnabranchError": "anabranch.errors",
    "LLMError": "anabranch.errors",
    "ConfigError": "anabranch.errors",
}
"""Each public name and the module that defines it."""

__all__ = [  # noqa: RUF022 - grouped by concept, as above
    "Task", "Subtask", "SubtaskResult", "TaskResult", "Usage", "RunReport",
    "Agent", "Answer", "LLMAgent", "RulePlanner", "LLMPlanner", "Reducer", "Specialist",
    "build_fanout_graph", "build_chain_graph", "run_chain", "run_batch", "GraphSpec", "Journal",
    "read_tasks",
    "Endpoint", "LLMOptions", "open_endpoint", "Timeouts", "RetryPolicy", "Limits", "Sampling",
    "AnabranchError", "LLMError", "ConfigError",
]  # fmt: skip

try:
    __version__ = importlib.metadata.version("anabranch")
except importlib.metadata.PackageNotFoundError:  # a source tree that was never installed
    __version__ = "0+unknown"


def __getattr__(name: str) -> Any:
    """Import a public name on first use (PEP 562), then keep it as a plain attribute."""
    module = _WHERE.get(name)
    if module is None:
        raise AttributeError(f"module 'anabranch' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted([*globals(), *__all__])
