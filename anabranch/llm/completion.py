"""What a chat call gives back: the answer and what it cost, however it was sent (the live layers
or a provider's batch)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from anabranch.llm.transport import Answer, Tokens
from anabranch.types import Usage


@dataclass(slots=True)
class Completion:
    """One chat answer and what it cost, retries included."""

    text: str
    usage: Usage
    attempts: int
    """Requests sent for it, the first included."""
    latency_s: float
    finish_reason: str | None = None
    alternatives: tuple[tuple[str, float], ...] = ()
    """The likeliest first tokens and their log probabilities (asked for with `top_logprobs`)."""
    tool_calls: tuple[dict[str, Any], ...] = ()
    """The tools the model called (asked for with `tools`), in the server's JSON form."""

    @property
    def answer(self) -> Answer:
        """The answer as the transport gave it, for the cache."""
        tokens = Tokens(self.usage.prompt_tokens, self.usage.completion_tokens)
        return Answer(self.text, tokens, self.finish_reason, self.alternatives)


def completion_of(answer: Answer, sent: int, latency_s: float) -> Completion:
    """A completion from the answer of its last request, `sent` requests in all."""
    tokens = answer.tokens
    prompt, completion = (tokens.prompt, tokens.completion) if tokens else (0, 0)
    return Completion(
        text=answer.text,
        usage=Usage(requests=sent, prompt_tokens=prompt, completion_tokens=completion),
        attempts=sent,
        latency_s=latency_s,
        finish_reason=answer.finish_reason,
        alternatives=answer.alternatives,
        tool_calls=answer.tool_calls,
    )
