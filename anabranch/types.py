"""The data that crosses the framework's edges: tasks in, results and reports out.

These are pydantic models because they are read from user files, written to results.jsonl and
checkpoints, and returned to users; inside the framework the same objects are passed around as is.
"""

from __future__ import annotations

import importlib
from typing import Annotated, Any, Literal, TypeVar, overload

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, PrivateAttr, model_validator

from anabranch.redact import redact
from anabranch.telemetry.timeline import Timeline

M = TypeVar("M", bound=BaseModel)
"""An agent's output model."""

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
    """The text to work on. May be empty (agents then give an empty output, not an error)."""
    instruction: str | None = None
    """Free-form guidance for LLM-backed agents and the LLM planner."""
    metadata: dict[str, Any] = Field(default_factory=dict)
    """Carried through to the result untouched."""


class Subtask(BaseModel):
    """What the planner hands one agent: one kind of analysis on one chunk of one task."""

    task_id: str
    kind: str
    """The name of the agent that runs it."""
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


class ToolCallRecord(BaseModel):
    """One tool call of an agent's tool loop, as the subtask's result keeps it."""

    agent: str = ""
    """The agent whose model asked for it."""
    step: int
    """The model turn (1-based) that asked for it."""
    name: str
    """The tool the model named (it may not exist: then `error` says so)."""
    arguments: dict[str, Any] | str = Field(default_factory=dict)
    """What the model passed, as parsed JSON (its raw text when it was not JSON)."""
    result: Annotated[str, AfterValidator(redact)] | None = None
    """What the tool returned, as the model read it; None when it failed."""
    error: Annotated[str, AfterValidator(redact)] | None = None
    """Why it failed (raised, timed out, invalid arguments, unknown tool), as the model read it."""
    seconds: float = 0.0
    """How long the call took."""


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
    tool_calls: list[ToolCallRecord] = Field(default_factory=list)
    """The tools the agent called for this subtask, in order (a tool-using agent's only)."""


class TaskResult(BaseModel):
    """Everything the reducer knows about one task: always delivered, partial if need be.

    `outputs` holds each agent's output in its JSON form (what files and journals keep): one
    object when the agent merges its chunks, a list of one object per chunk when it does not.
    `output(name)` gives it back as the agent's own model.
    """

    task_id: str
    status: TaskStatus
    outputs: dict[str, Any] = Field(default_factory=dict)
    """By agent name: the merged output (an object), or one output per chunk in order (a list)."""
    output_types: dict[str, str] = Field(default_factory=dict)
    """By agent name: its output model as `module:QualifiedName`, so that a result read back from
    a journal, or sent from a Ray worker, gives typed outputs again."""
    chunks: int = 1
    subtasks: int = 0
    """How many subtasks the planner made."""
    results: int = 0
    """How many subtask results reached the reducer (equal to `subtasks` unless one was lost)."""
    errors: list[SubtaskError] = Field(default_factory=list)
    usage: Usage = Field(default_factory=Usage)
    tool_calls: list[ToolCallRecord] = Field(default_factory=list)
    """Every tool call of the task's agents, agent by agent, chunk by chunk."""
    metadata: dict[str, Any] = Field(default_factory=dict)
    _types: dict[str, type[BaseModel]] = PrivateAttr(default_factory=dict)
    """The output models known in this process (set by the reducer): no import needed."""

    @model_validator(mode="before")
    @classmethod
    def _from_v0_1(cls, data: Any) -> Any:
        """Read results that anabranch 0.1 wrote (journals, results.jsonl), which flattened the
        built-in analysis into the result: its fields become the three agents' outputs."""
        if not isinstance(data, dict) or not _V0_1_FIELDS & data.keys():
            return data
        data = dict(data)
        outputs = dict(data.get("outputs") or {})
        failed = {e.get("kind") for e in data.get("errors") or [] if isinstance(e, dict)}
        if data.get("tokenizer") is not None:
            outputs["tokenize"] = {"tokens": data.get("tokens") or [],
                                   "count": data.get("token_count") or 0,
                                   "tokenizer": data["tokenizer"]}  # fmt: skip
        if data.get("sentiment") is not None:
            outputs["sentiment"] = {"label": data["sentiment"],
                                    "score": data.get("sentiment_score") or 0.0}  # fmt: skip
        # 0.1 wrote `keywords: []` both for no keywords and for no keyword agent: an empty list
        # is an output when the rest of the analysis ran and the keyword agent did not fail.
        ran = "tokenize" in outputs or "sentiment" in outputs
        if data.get("keywords") or (ran and "keywords" not in failed):
            outputs["keywords"] = {"keywords": data.get("keywords") or [],
                                   "invented": data.get("keywords_invented") or 0}  # fmt: skip
        for name in _V0_1_FIELDS:
            data.pop(name, None)
        data["outputs"] = outputs
        data["output_types"] = {name: _V0_1_TYPES[name] for name in outputs if name in _V0_1_TYPES}
        return data

    @overload
    def output(self, name: str) -> Any: ...

    @overload
    def output(self, name: str, model: type[M]) -> M: ...

    def output(self, name: str, model: type[M] | None = None) -> Any:
        """Agent `name`'s output as its own model: one instance when the agent merges its chunks,
        a list of one per chunk when it has no merge rule; its JSON form when its model is not
        known here. `model` names the type to read a merged output as (typed code's way in).

        Raises KeyError, naming the task's errors, when the agent produced no output (it failed,
        or the planner did not send it), and TypeError when `model` is given for outputs kept per
        chunk."""
        if name not in self.outputs:
            why = "; ".join(f"{e.kind}: {e.type}" for e in self.errors) or "it did not run"
            raise KeyError(f"task {self.task_id!r} has no output of agent {name!r} ({why})")
        data = self.outputs[name]
        if model is not None and isinstance(data, list):
            raise TypeError(f"agent {name!r} has no merge rule, so its outputs are kept per chunk: "
                            f"result.output({name!r}) gives the list")  # fmt: skip
        cls = model or self._types.get(name) or _import_model(self.output_types.get(name))
        if cls is None:
            return data
        if isinstance(data, list):
            return [cls.model_validate(d) for d in data]
        return cls.model_validate(data)


_V0_1_FIELDS = {"tokens", "token_count", "tokenizer", "keywords", "keywords_invented",
                "sentiment", "sentiment_score"}  # fmt: skip
"""The analysis' fields of a 0.1 TaskResult."""
_V0_1_TYPES = {
    "tokenize": "anabranch.analysis.outputs:TokensOutput",
    "keywords": "anabranch.analysis.outputs:KeywordsOutput",
    "sentiment": "anabranch.analysis.outputs:SentimentOutput",
}
"""The models of the built-in analysis' outputs, for results that did not record them."""


def model_path(model: type[BaseModel]) -> str:
    """`module:QualifiedName` of a model, as `TaskResult.output_types` records it."""
    return f"{model.__module__}:{model.__qualname__}"


def _import_model(path: str | None) -> type[BaseModel] | None:
    """The model a result recorded, when it can be imported here (a class defined inside a
    function cannot: its JSON form is given instead)."""
    if not path:
        return None
    module_name, _, qualname = path.partition(":")
    try:
        target: Any = importlib.import_module(module_name)
        for part in qualname.split("."):
            target = getattr(target, part)
    except (ImportError, AttributeError):
        return None
    return target if isinstance(target, type) and issubclass(target, BaseModel) else None


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


class BatchReport(BaseModel):
    """What went through a provider's Batch API in a run, and what it cost against live."""

    waves: int
    """Times the batch layer sent what had gathered (a graph with two LLM stages: two)."""
    batches: int
    """Batches created or, after a crash, polled again."""
    requests_per_batch: list[int]
    """Requests each batch carried, in order."""
    requests: int
    """Requests sent by batch, those sent again included."""
    from_journal: int = 0
    """Answers an earlier run's batches had brought, taken from the journal."""
    resubmitted: int = 0
    """Requests a batch did not finish (failed, expired, lost, transient errors), sent again."""
    live: int = 0
    """Requests a batch did not finish that went to the live API instead (`live_fallback`)."""
    prompt_tokens: int = 0
    completion_tokens: int = 0
    states: dict[str, int] = Field(default_factory=dict)
    """Batches by the state they ended in."""
    live_cost: float | None = None
    """What the answers' tokens would have cost live (dollars, from the price table given)."""
    batch_cost: float | None = None
    """What they cost by batch."""


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
    timeline: Timeline | None = None
    """The run over time (throughput, calls in flight, errors, latency by agent, failed tasks):
    what the HTML report draws, kept in the journal with the rest."""

    batches: BatchReport | None = None
    """What the watched endpoint sent through a provider's Batch API, when it did."""

    def html(self, title: str = "anabranch run") -> str:
        """The run report as one self-contained HTML page (charts as SVG, no network)."""
        from anabranch.telemetry.html import render_html

        return render_html(self, title=title)

    def _repr_html_(self) -> str:
        """Jupyter shows the report, charts and all, where the report is a cell's value (its
        style scoped to it, so the notebook's own look is left alone)."""
        from anabranch.telemetry.html import render_html

        return render_html(self, title="anabranch run", fragment=True)


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
    tool_calls: list[ToolCallRecord] = Field(default_factory=list)
    """The tools the specialist's model called in this step, in order."""


class ChainResult(BaseModel):
    """A chain run: complete, or stopped at the first step that failed."""

    prompt: str
    steps: list[ChainStep]
    planned: list[str]
    """Every specialist the chain was to run, in order, so a partial run shows what is missing."""

    @property
    def complete(self) -> bool:
        return len(self.steps) == len(self.planned) and all(s.status == "ok" for s in self.steps)
