"""One exception hierarchy, so callers can catch `AnabranchError` and know it came from here.

Inside a graph these never escape an agent node: they become `SubtaskError` records (errors are
data). They do escape set-up code (bad configuration, a server that will not start), where failing
loudly is the right thing.
"""

from __future__ import annotations

from pydantic import ValidationError

from anabranch.redact import redact


class AnabranchError(Exception):
    """Base of every error this package raises on purpose.

    Its message is redacted on the way in: these errors quote servers, and servers echo keys.
    """

    def __init__(self, message: str = "", *args: object) -> None:
        super().__init__(redact(str(message)), *args)


class ConfigError(AnabranchError, ValueError):
    """A configuration mistake: an option, a setting or an argument that cannot work."""


class InputError(AnabranchError):
    """A task file line that cannot become a Task. The message names the file and line."""


class SetupError(AnabranchError):
    """A component could not be installed or started (llama.cpp build, model file, server)."""


class LLMError(AnabranchError):
    """A call to an LLM endpoint failed after the retries it was allowed."""

    def __init__(self, message: str, *, attempts: int = 1, status: int | None = None) -> None:
        super().__init__(message)
        self.attempts = attempts
        self.status = status


class LLMTimeoutError(LLMError):
    """An attempt exceeded its timeout, or the call exceeded its total deadline."""


class LLMRateLimitError(LLMError):
    """The endpoint kept answering 429 until the retries or the deadline ran out."""


class LLMConnectionError(LLMError):
    """The endpoint could not be reached, or it dropped the connection."""


class LLMStatusError(LLMError):
    """The endpoint answered an HTTP error (4xx/5xx) that retries did not cure or must not retry."""


class LLMOutputError(LLMError):
    """The endpoint answered, but the content is not valid for the requested schema,
    even after one repair re-ask."""


def describe(exc: ValidationError) -> str:
    """A pydantic validation error on one line: `field: problem; other.field: problem`."""
    return "; ".join(f"{'.'.join(map(str, e['loc'])) or 'value'}: {e['msg']}" for e in exc.errors())
