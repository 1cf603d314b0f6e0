"""anabranch: multi-agent graphs on LangGraph whose agents call LLMs concurrently and lose nothing.

A planner splits each task into subtasks, agents run them at the same time, and a reducer joins
their outputs into one result per task.
"""

from anabranch.agents.analysts import (
    KeywordAgent,
    LLMKeywordAgent,
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
    SetupError,
)
from anabranch.graphs.chain import build_chain_graph, chain_result
from anabranch.graphs.fanout import build_fanout_graph
from anabranch.graphs.runner import BatchRun, run_batch
from anabranch.inputs import read_tasks
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
    "InputError",
    "Keyword",
    "KeywordAgent",
    "LLMConnectionError",
    "LLMError",
    "LLMKeywordAgent",
    "LLMOutputError",
    "LLMPlanner",
    "LLMRateLimitError",
    "LLMSentimentAgent",
    "LLMStatusError",
    "LLMTimeoutError",
    "Limits",
    "LocalLLMServer",
    "Reducer",
    "RetryPolicy",
    "RulePlanner",
    "RunReport",
    "Sampling",
    "SentimentAgent",
    "ServerTokenizer",
    "SetupError",
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
    "build_chain_graph",
    "build_fanout_graph",
    "chain_result",
    "load_specialists",
    "local_agents",
    "make_agents",
    "read_tasks",
    "render_chain_report",
    "render_trace",
    "run_batch",
]
