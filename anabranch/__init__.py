"""anabranch: multi-agent graphs on LangGraph whose agents call LLMs concurrently and lose nothing.

A planner splits each task into subtasks, agents run them at the same time, and a reducer joins
their outputs into one result per task.
"""

import importlib.metadata

from anabranch.agents.analysts import (
    KeywordAgent,
    LLMKeywordAgent,
    LLMLabelProbabilities,
    LLMSentimentAgent,
    SentimentAgent,
    ServerTokenizer,
    TokenizerAgent,
    local_agents,
    make_agents,
)
from anabranch.agents.base import Agent, Answer
from anabranch.agents.planner import LLMPlanner, RulePlanner
from anabranch.agents.reducer import Reducer
from anabranch.agents.specialists import (
    BUILTIN as BUILTIN_SPECIALISTS,
)
from anabranch.agents.specialists import (
    DEFAULT_CHAIN,
    Specialist,
    load_specialists,
)
from anabranch.chain_report import render_chain_report
from anabranch.errors import (
    AnabranchError,
    ChatGraphError,
    ConfigError,
    InputError,
    LLMConnectionError,
    LLMError,
    LLMOutputError,
    LLMRateLimitError,
    LLMStatusError,
    LLMTimeoutError,
    LLMUnavailableError,
    SetupError,
)
from anabranch.graphs.chain import build_chain_graph, chain_result, run_chain, run_specialists
from anabranch.graphs.cluster import RayExecutor
from anabranch.graphs.fanout import build_analysis_graph, build_fanout_graph
from anabranch.graphs.runner import BatchRun, run_batch
from anabranch.graphs.spec import GraphSpec, Share
from anabranch.graphs.state import Graph
from anabranch.inputs import example_tasks, read_tasks
from anabranch.journal import Journal, RunInfo
from anabranch.llm.cache import ResponseCache
from anabranch.llm.connect import LLMOptions, open_endpoint
from anabranch.llm.endpoint import Endpoint
from anabranch.llm.local_server import LocalLLMServer
from anabranch.llm.settings import Limits, RetryPolicy, Sampling, Timeouts
from anabranch.report import render_trace
from anabranch.testing.fault_server import FaultConfig, FaultServer
from anabranch.types import (
    ChainResult,
    ChainStep,
    Keyword,
    RunReport,
    StageReport,
    Subtask,
    SubtaskError,
    SubtaskResult,
    Task,
    TaskResult,
    Usage,
)

try:
    __version__ = importlib.metadata.version("anabranch")
except (
    importlib.metadata.PackageNotFoundError
):  # running from a source tree that was never installed
    __version__ = "0+unknown"

__all__ = [
    "BUILTIN_SPECIALISTS",
    "DEFAULT_CHAIN",
    "Agent",
    "AnabranchError",
    "Answer",
    "BatchRun",
    "ChainResult",
    "ChainStep",
    "ChatGraphError",
    "ConfigError",
    "Endpoint",
    "FaultConfig",
    "FaultServer",
    "Graph",
    "GraphSpec",
    "InputError",
    "Journal",
    "Keyword",
    "KeywordAgent",
    "LLMConnectionError",
    "LLMError",
    "LLMKeywordAgent",
    "LLMLabelProbabilities",
    "LLMOptions",
    "LLMOutputError",
    "LLMPlanner",
    "LLMRateLimitError",
    "LLMSentimentAgent",
    "LLMStatusError",
    "LLMTimeoutError",
    "LLMUnavailableError",
    "Limits",
    "LocalLLMServer",
    "RayExecutor",
    "Reducer",
    "ResponseCache",
    "RetryPolicy",
    "RulePlanner",
    "RunInfo",
    "RunReport",
    "Sampling",
    "SentimentAgent",
    "ServerTokenizer",
    "SetupError",
    "Share",
    "Specialist",
    "StageReport",
    "Subtask",
    "SubtaskError",
    "SubtaskResult",
    "Task",
    "TaskResult",
    "Timeouts",
    "TokenizerAgent",
    "Usage",
    "__version__",
    "build_analysis_graph",
    "build_chain_graph",
    "build_fanout_graph",
    "chain_result",
    "example_tasks",
    "load_specialists",
    "local_agents",
    "make_agents",
    "open_endpoint",
    "read_tasks",
    "render_chain_report",
    "render_trace",
    "run_batch",
    "run_chain",
    "run_specialists",
]
