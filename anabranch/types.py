"""The data that crosses the framework's edges: tasks in, results and reports out.

These are pydantic models because they are read from user files, written to results.jsonl and
checkpoints, and returned to users; inside the framework the same objects are passed around as is.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field

from anabranch.redact import redact

SentimentLabel = Literal["positive", "negative", "neutral"]
"""The three sentiment classes every sentiment tool must map to."""

SubtaskStatus = Literal["ok", "error"]
"""`ok`: the agent produced an output; `error`: it did not, and the result says why."""

TaskStatus = Literal["ok", "partial", "error", "rejected"]
"""`ok`: every subtask succeeded; `partial`: some failed; `error`: all failed;
`rejected`: the input line itself was unusable, so nothing ran."""


class Task(BaseModel):
    """One unit of user work, one line of a tasks.jsonl file."""

    model_config = ConfigDict(extra="forbid")

    id: str
    """Unique within a batch; results carry it back."""
    text: str
    """The text to analyse. May be empty (the result is then empty, not an error)."""
    instruction: str | None = None
    """Free-form guidance for LLM-backed agents and the LLM planner."""
    metadata: dict[str, Any] = Field(default_factory=dict)
    """Carried through to the result untouched."""


class Subtask(BaseModel):
    """What the planner hands one agent: one kind of analysis on one chunk of one task."""

    task_id: str
    kind: str
    """The name of the agent that runs it (`tokenize`, `keywords`, `sentiment`, or a user's own)."""
    chunk: int = 0
    """Index of the chunk in the task's text; the reducer merges chunks in this order."""
    chunks: int = 1
    """How many chunks the task was cut into."""
    chunk_tokens: int = 0
    """The chunk's size in tokens; the reducer weights per-chunk answers by it."""
    text: str
    instruction: str | None = None


class Usage(BaseModel):
    """What LLM calls cost; summed from subtasks into tasks and from tasks into the run."""

    requests: int = 0
    """Calls that reached the endpoint, retries included."""
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cached: int = 0
    """Calls answered from the response cache: no request, no tokens spent."""

    def __add__(self, other: Usage) -> Usage:
        return Usage(
            requests=self.requests + other.requests,
            prompt_tokens=self.prompt_tokens + other.prompt_tokens,
            completion_tokens=self.completion_tokens + other.completion_tokens,
            cached=self.cached + other.cached,
        )

    @property
    def total_tokens(self) -> int:
        return self.prompt_tokens + self.completion_tokens


class SubtaskError(BaseModel):
    """Why one subtask produced no output. Errors are data: they travel with the result."""

    kind: str
    chunk: int = 0
    type: str
    """The exception's class name, e.g. `LLMTimeoutError`, `InputError`."""
    message: Annotated[str, AfterValidator(redact)]
    """What went wrong, with every secret the process knows removed (servers echo keys)."""
    attempts: int = 1


class SubtaskResult(BaseModel):
    """One agent's answer for one subtask: an output or an error, never an exception."""

    task_id: str
    kind: str
    chunk: int = 0
    chunk_tokens: int = 0
    """Size of the chunk, used to weight per-chunk answers when merging."""
    status: SubtaskStatus
    output: dict[str, Any] | None = None
    """The agent's output model, dumped to JSON-ready data."""
    error: SubtaskError | None = None
    attempts: int = 1
    latency_s: float = 0.0
    usage: Usage = Field(default_factory=Usage)


class Keyword(BaseModel):
    term: str
    score: float
    """Relevance in [0, 1]; higher is more relevant, whatever the tool's own scale."""


class TokensOutput(BaseModel):
    """The tokenizer agent's output for one chunk."""

    tokens: list[str]
    """Readable pieces; a character split across tokens is one piece, so this may be shorter
    than `count`."""
    count: int
    tokenizer: str
    """Which tokenizer: `tiktoken:<encoding>` or `server:/tokenize` (the model's own)."""


class KeywordsOutput(BaseModel):
    keywords: list[Keyword] = Field(
        description="The most important words or short phrases of the text, most relevant first, "
        "each with a relevance score between 0 and 1."
    )
    invented: int = 0
    """Keywords the model gave that do not occur in the text, dropped (LLM keywords only)."""


class SentimentOutput(BaseModel):
    label: SentimentLabel = Field(description="The overall sentiment of the text.")
    score: float = Field(
        ge=-1.0, le=1.0, description="-1 is very negative, 0 neutral, 1 very positive."
    )


class TaskResult(BaseModel):
    """Everything the reducer knows about one task: always delivered, partial if need be."""

    task_id: str
    status: TaskStatus
    tokens: list[str] = Field(default_factory=list)
    token_count: int = 0
    tokenizer: str | None = None
    """Which tokenizer produced `tokens` (e.g. `tiktoken:cl100k_base`, `llama.cpp:/tokenize`)."""
    keywords: list[Keyword] = Field(default_factory=list)
    keywords_invented: int = 0
    """Keywords the model gave that do not occur in the text, dropped (over all chunks)."""
    sentiment: SentimentLabel | None = None
    sentiment_score: float | None = None
    """In [-1, 1], weighted by chunk length."""
    outputs: dict[str, list[dict[str, Any]]] = Field(default_factory=dict)
    """Outputs of user-defined agents, by agent name, one entry per chunk in order."""
    chunks: int = 1
    subtasks: int = 0
    """How many subtasks the planner made."""
    results: int = 0
    """How many subtask results reached the reducer (equal to `subtasks` unless one was lost)."""
    errors: list[SubtaskError] = Field(default_factory=list)
    usage: Usage = Field(default_factory=Usage)
    metadata: dict[str, Any] = Field(default_factory=dict)


class StageReport(BaseModel):
    """One stage of the pipeline trace: what came in, what went out, how long it took."""

    name: str
    description: str
    input_count: int
    input_unit: str
    output_count: int
    output_unit: str
    seconds: float
    """Wall time from the stage's first start to its last end (stages overlap)."""


class ConcurrencyReport(BaseModel):
    """How an endpoint's adaptive concurrency behaved over a run."""

    low: float
    """The lowest limit it went down to."""
    high: float
    """The highest limit it reached."""
    final: float
    """Where it ended."""
    overloaded: int
    """Requests answered 429 or 503."""
    requests: int
    """Requests sent."""
    per_second: float
    """Requests answered without overload, per second of the run."""


class RunReport(BaseModel):
    """The pipeline trace of one batch, in its five stages (docs/architecture.md)."""

    stages: list[StageReport]
    wall_seconds: float
    tasks_ok: int
    tasks_partial: int
    tasks_failed: int
    tasks_rejected: int
    subtask_errors: dict[str, int] = Field(default_factory=dict)
    """Error type -> count, so a run that hit 429s says so at a glance."""
    usage: Usage = Field(default_factory=Usage)
    """What this run spent (tasks and subtasks taken from a journal cost nothing again)."""
    journal_run: str | None = None
    """The run's id in its journal, when it had one."""
    tasks_from_journal: int = 0
    """Tasks an earlier attempt had delivered, delivered again from the journal, not run."""
    tasks_changed: int = 0
    """Tasks the journal knew under the same id with another text or configuration: re-run."""
    subtasks_reused: int = 0
    """Finished subtasks of unfinished tasks taken from the journal instead of recomputed."""
    concurrency: ConcurrencyReport | None = None
    """The watched endpoint's concurrency, when the run watched one."""


class ChainStep(BaseModel):
    """One specialist's turn in a chain: what it said, what it cost, or why it failed."""

    index: int
    """1-based, as in the report; step 0 is the prompt."""
    specialist: str
    model: str
    temperature: float
    """The temperature actually sent."""
    status: SubtaskStatus
    output: str = ""
    """Empty when the step failed: an error is never passed on as content."""
    truncated: bool = False
    """The model stopped at max_tokens."""
    seconds: float = 0.0
    usage: Usage = Field(default_factory=Usage)
    error: SubtaskError | None = None


class ChainResult(BaseModel):
    """A chain run: complete, or stopped at the first step that failed."""

    prompt: str
    steps: list[ChainStep]
    planned: list[str]
    """Every specialist the chain was to run, in order, so a partial run shows what is missing."""

    @property
    def complete(self) -> bool:
        return len(self.steps) == len(self.planned) and all(s.status == "ok" for s in self.steps)
