"""One exception hierarchy, so callers can catch `AnabranchError` and know it came from here.

    AnabranchError                 every error this package raises on purpose
    ├── ConfigError (ValueError)   an option, setting or argument that cannot work
    │   ├── OutputError            an output that cannot be used: the input itself, busy, unwritable
    │   └── StoreError             a SQLite file of the package (journal, cache) that cannot be used
    │       └── JournalError       a journal of another version, or not a journal
    │           └── JournalBusyError   another run holds the journal
    ├── StateError (RuntimeError)  an object used out of order (a report read before the end)
    ├── InputError                 a task file line that cannot become a Task
    ├── SetupError                 a component could not be installed or started
    ├── ChatGraphError             a served graph ran but has no answer to give
    ├── ToolLoopError              an agent's model still called tools after its last step
    ├── MCPToolError               an MCP server answered a tool call with is_error
    └── LLMError                   an LLM call failed after the retries it was allowed
        ├── LLMTimeoutError        an attempt's timeout or the call's deadline passed
        ├── LLMRateLimitError      429 until the retries or the deadline ran out
        ├── LLMConnectionError     unreachable, or the connection dropped
        │   └── LLMUnavailableError   the server kept failing: the endpoint gave up on it
        ├── LLMStatusError         an HTTP error that retries did not cure or must not retry
        │   └── LLMAuthError          401 or 403: the server refused the key; the run stops
        └── LLMOutputError         an answer that is not valid for the schema, even repaired
            ├── NoProbabilities    an answer without the token probabilities it was asked for
            └── LLMRunawayError    the model repeated itself until max_tokens cut it

Inside a graph these never escape an agent node: they become `SubtaskError` records (errors are
data). They do escape set-up code (bad configuration, a server that will not start), where failing
loudly is the right thing: the CLI exits 2 for them, and 3 with a traceback for anything else.
Every message is redacted on the way in (servers echo keys).
"""

from __future__ import annotations

from pydantic import ValidationError

from anabranch.redact import redact
from anabranch.types import ToolCallRecord, Usage

__all__ = [
    "AnabranchError",
    "ChatGraphError",
    "ConfigError",
    "InputError",
    "JournalBusyError",
    "JournalError",
    "LLMAuthError",
    "LLMConnectionError",
    "LLMError",
    "LLMOutputError",
    "LLMRateLimitError",
    "LLMRunawayError",
    "LLMStatusError",
    "LLMTimeoutError",
    "LLMUnavailableError",
    "MCPToolError",
    "NoProbabilities",
    "OutputError",
    "SetupError",
    "StateError",
    "StoreError",
    "ToolLoopError",
    "describe",
]


class AnabranchError(Exception):
    """Base of every error this package raises on purpose.

    Its message is redacted on the way in: these errors quote servers, and servers echo keys.
    """

    def __init__(self, message: str = "", *args: object) -> None:
        super().__init__(redact(str(message)), *args)


class ConfigError(AnabranchError, ValueError):
    """A configuration mistake: an option, a setting or an argument that cannot work."""


class OutputError(ConfigError):
    """An output that cannot be used: the input itself, busy, or a write that failed."""


class StoreError(ConfigError):
    """A store file (the journal, the response cache) that cannot be opened, read or written."""


class JournalError(StoreError):
    """A journal that cannot be used: another version, not a journal at all, or a file that
    cannot be written."""

    corrupt: bool = False
    """The file is not a journal (`Journal(path, replace_corrupt=True)` starts a new one)."""


class JournalBusyError(JournalError):
    """Another run holds the journal right now."""


class StateError(AnabranchError, RuntimeError):
    """An object used out of order: a batch's report read before the batch has ended, a sync
    wrapper called from the loop it would wait on."""


class InputError(AnabranchError):
    """A task file line that cannot become a Task. The message names the file and line;
    `task_id` is the line's own id if it had one, else `line-N`."""

    def __init__(self, message: str, *, task_id: str = "input") -> None:
        super().__init__(message)
        self.task_id = task_id
        """The id the rejected result carries, so the output has one record per line."""


class SetupError(AnabranchError):
    """A component could not be installed or started (llama.cpp build, model file, server)."""


class ChatGraphError(AnabranchError):
    """A served graph ran but has no answer to give (a chain that stopped, say)."""


class ToolLoopError(AnabranchError):
    """An agent's tool loop reached its bound (`max_steps` model turns) with the model still
    calling tools. It carries what the loop cost and the calls it made, for the error record."""

    def __init__(self, message: str, *, attempts: int, usage: Usage,
                 tool_calls: list[ToolCallRecord]) -> None:  # fmt: skip
        super().__init__(message)
        self.attempts = attempts
        """Requests sent in all."""
        self.usage = usage
        """What the loop's calls cost."""
        self.tool_calls = tool_calls
        """The ToolCallRecords of every step."""


class MCPToolError(AnabranchError):
    """An MCP server answered a tool call with `is_error`: the message is its text (the tool
    loop hands it to the model as the call's answer)."""


class LLMError(AnabranchError):
    """A call to an LLM endpoint failed after the retries it was allowed."""

    def __init__(
        self,
        message: str,
        *,
        attempts: int = 1,
        status: int | None = None,
        usage: Usage | None = None,
    ) -> None:
        super().__init__(message)
        self.attempts = attempts
        """Requests sent before giving up."""
        self.status = status
        """The last HTTP status, when there was one."""
        self.usage = usage if usage is not None else Usage(requests=attempts)
        """What the failed call cost: its requests count even though it has no result."""


class LLMTimeoutError(LLMError):
    """An attempt exceeded its timeout, or the call exceeded its total deadline."""


class LLMRateLimitError(LLMError):
    """The endpoint kept answering 429 until the retries or the deadline ran out."""


class LLMConnectionError(LLMError):
    """The endpoint could not be reached, or it dropped the connection."""


class LLMUnavailableError(LLMConnectionError):
    """The endpoint's circuit breaker stayed open past `give_up_after`: the server was down."""


class LLMStatusError(LLMError):
    """The endpoint answered an HTTP error (4xx/5xx) that retries did not cure or must not retry."""


class LLMAuthError(LLMStatusError):
    """The server answered 401 or 403: the key is wrong for every request, so the endpoint
    sends no more and every later call fails at once with this error."""


class LLMOutputError(LLMError):
    """The endpoint answered, but the content is not valid for the requested schema,
    even after one repair re-ask."""


class NoProbabilities(LLMOutputError):
    """The server answered without token probabilities: it does not support `logprobs`."""


class LLMRunawayError(LLMOutputError):
    """The model repeated a short piece until `max_tokens` cut it (or, streamed, many times
    over), also when asked again with another seed: a loop of the model, not an answer."""


SERVER_FAILURES = frozenset(
    {"LLMUnavailableError", "LLMTimeoutError", "LLMConnectionError", "LLMRateLimitError",
     "LLMAuthError"}
)  # fmt: skip
"""The error types that say the server failed, not the task: a plain re-run retries them."""


def failed_because_of_server(error_type: str, message: str) -> bool:
    """Whether an error record is the server's failure (down, slow, overloaded, 5xx, a refused
    key), which a re-run once the server is back can cure."""
    return error_type in SERVER_FAILURES or (
        error_type == "LLMStatusError" and message.startswith("HTTP 5")
    )


def describe(exc: ValidationError) -> str:
    """A pydantic validation error on one line: `field: problem; other.field: problem`."""
    return "; ".join(f"{'.'.join(map(str, e['loc'])) or 'value'}: {e['msg']}" for e in exc.errors())
