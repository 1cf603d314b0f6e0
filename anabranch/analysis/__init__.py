"""Text analysis, the first application built on anabranch: tokens, keywords and sentiment of
each task's text, per chunk, merged per task.

It uses nothing the core keeps for it: its agents declare their outputs and merge rules like a
user's own, its graph is a fan-out graph, and its flat result record (`AnalysisRecord`) is what
`anabranch run` writes to results.jsonl.
"""

from anabranch.analysis.agents import (
    KeywordAgent,
    SentimentAgent,
    ServerTokenizer,
    TokenizerAgent,
)
from anabranch.analysis.backends import (
    DEFAULT_LLM_BACKEND,
    DESCRIPTIONS,
    SENTIMENT_BACKENDS,
    Backend,
    local_agents,
    make_agents,
    needs_llm,
    parse_backend,
    sentiment_agent,
)
from anabranch.analysis.blend import Blend, BlendedSentiment
from anabranch.analysis.graph import PlannerKind, analysis_chat, build_analysis_graph
from anabranch.analysis.llm_agents import (
    LLMKeywordAgent,
    LLMLabelProbabilities,
    LLMSentimentAgent,
    label_probabilities,
)
from anabranch.analysis.outputs import (
    Keyword,
    KeywordsOutput,
    SentimentLabel,
    SentimentOutput,
    TokensOutput,
)
from anabranch.analysis.records import AnalysisRecord, render_analysis

__all__ = [
    "DEFAULT_LLM_BACKEND",
    "DESCRIPTIONS",
    "SENTIMENT_BACKENDS",
    "AnalysisRecord",
    "Backend",
    "Blend",
    "BlendedSentiment",
    "Keyword",
    "KeywordAgent",
    "KeywordsOutput",
    "LLMKeywordAgent",
    "LLMLabelProbabilities",
    "LLMSentimentAgent",
    "PlannerKind",
    "SentimentAgent",
    "SentimentLabel",
    "SentimentOutput",
    "ServerTokenizer",
    "TokenizerAgent",
    "TokensOutput",
    "analysis_chat",
    "build_analysis_graph",
    "label_probabilities",
    "local_agents",
    "make_agents",
    "needs_llm",
    "parse_backend",
    "render_analysis",
    "sentiment_agent",
]
