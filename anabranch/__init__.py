"""anabranch: multi-agent graphs on LangGraph whose agents call LLMs concurrently and lose nothing.

A planner splits each task into subtasks, agents run them at the same time, and a reducer joins
their outputs into one result per task.
"""

from anabranch.agents.analysts import KeywordAgent, SentimentAgent, TokenizerAgent, local_agents
from anabranch.agents.base import Agent, Answer
from anabranch.agents.planner import RulePlanner
from anabranch.agents.reducer import Reducer
from anabranch.errors import (
    AnabranchError,
    InputError,
    LLMConnectionError,
    LLMError,
    LLMOutputError,
    LLMRateLimitError,
    LLMStatusError,
    LLMTimeoutError,
    SetupError,
)
from anabranch.graphs.fanout import build_fanout_graph
from anabranch.graphs.runner import BatchRun, run_batch
from anabranch.inputs import read_tasks
from anabranch.report import render_trace
from anabranch.types import (
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
    "Agent",
    "AnabranchError",
    "Answer",
    "BatchRun",
    "InputError",
    "Keyword",
    "KeywordAgent",
    "LLMConnectionError",
    "LLMError",
    "LLMOutputError",
    "LLMRateLimitError",
    "LLMStatusError",
    "LLMTimeoutError",
    "Reducer",
    "RulePlanner",
    "RunReport",
    "SentimentAgent",
    "SetupError",
    "StageReport",
    "Subtask",
    "SubtaskError",
    "SubtaskResult",
    "Task",
    "TaskResult",
    "TokenizerAgent",
    "Usage",
    "build_fanout_graph",
    "local_agents",
    "read_tasks",
    "render_trace",
    "run_batch",
]
