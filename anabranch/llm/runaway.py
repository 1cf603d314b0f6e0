"""Generations that run away: a model that repeats a short piece until `max_tokens` cuts it.

Under grammar decoding a small model can fall into a loop (`"agents": ["sentiment",
"sentiment", ...` until cut). Such an answer is no answer, and asking again the same way gives
the same loop (temperature 0 is deterministic). So an answer cut at `max_tokens`
(`finish_reason: length`) whose tail is one piece repeated is a failed attempt: the endpoint
asks once more with another seed and a small temperature (`reroll`), and a second loop is an
`LLMRunawayError`, an error record like any failed call. A stream is watched as it comes
(`StreamWatch`) and stopped as soon as its tail repeats: not waited out at all.
"""

from __future__ import annotations

import random
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

from anabranch.errors import LLMError, LLMRunawayError

if TYPE_CHECKING:
    from anabranch.llm.completion import Completion

REPEATS = 8
"""A cut answer's tail is a loop when one piece fills its last characters this many times..."""
SPAN = 48
"""... over at least this many characters."""
STREAM_REPEATS = 20
"""A stream is stopped when one piece fills its tail this many times (stricter: a stream is not
cut yet, and a long rule of `=` or a run of zeros can be meant)..."""
STREAM_SPAN = 400
"""... over at least this many characters."""
MAX_PIECE = 64
"""The longest piece looked for, in characters (a few agent names, a short sentence)."""
REROLL_TEMPERATURE = 0.4
"""The temperature the second ask gets, at least: enough to leave a loop, small enough to keep
the answer the model's likeliest."""
_CHECK_EVERY = 64
"""Characters a stream grows by between two looks at its tail."""


def repeated_tail(text: str, repeats: int = REPEATS, span: int = SPAN) -> str | None:
    """The piece `text` ends by repeating, `repeats` times over at least `span` characters (its
    last copy may be cut), or None. The shortest such piece is the one named."""
    tail = text[-(MAX_PIECE * max(repeats, 2) + span) :]
    n = len(tail)
    for period in range(1, min(MAX_PIECE, n // repeats) + 1):
        i = n - 1
        while i >= period and tail[i] == tail[i - period]:
            i -= 1
        covered = n - 1 - i + period  # the characters the repetition fills, its first copy too
        if covered >= max(span, period * repeats):
            start = n - covered
            return tail[start : start + period]
    return None


def is_runaway(text: str, finish_reason: str | None) -> str | None:
    """The repeated piece, when an answer cut at `max_tokens` ends in a loop."""
    return repeated_tail(text) if finish_reason == "length" else None


def reroll(params: dict[str, Any]) -> dict[str, Any]:
    """The request asked again after a loop: another seed, and a small temperature at least."""
    temperature = max(float(params.get("temperature") or 0.0), REROLL_TEMPERATURE)
    return {**params, "seed": random.randrange(1, 2**31), "temperature": temperature}


async def asked_again(
    params: dict[str, Any],
    looped: Completion,
    call: Callable[[dict[str, Any]], Awaitable[Completion]],
) -> Completion:
    """An answer that repeated itself until cut, asked once more another way (`reroll`) through
    the endpoint's live layers (`call`); a second loop fails the call (`LLMRunawayError`). The
    answer or the error counts both asks."""
    try:
        answer = await call(reroll(params))
    except LLMError as exc:
        exc.usage, exc.attempts = looped.usage + exc.usage, looped.attempts + exc.attempts
        raise
    usage, attempts = looped.usage + answer.usage, looped.attempts + answer.attempts
    if (still := is_runaway(answer.text, answer.finish_reason)) is not None:
        cut = f"until cut at max_tokens ({params['max_tokens']})"
        raise runaway_error(still, cut, attempts, usage=usage)
    answer.usage, answer.attempts = usage, attempts
    answer.latency_s += looped.latency_s
    return answer


def runaway_error(piece: str, cut: str, attempts: int, **kwargs: Any) -> LLMRunawayError:
    """The error of a call whose answers looped: it names the piece and what ended it (`cut`:
    "until cut at max_tokens (40)")."""
    shown = piece if len(piece) <= 40 else piece[:39] + "…"
    return LLMRunawayError(f"the model repeated {shown!r} {cut}, in {attempts} attempt(s)",
                           attempts=attempts, **kwargs)  # fmt: skip


class StreamWatch:
    """`on_text` for a stream, passing each piece on, that stops the stream (raises
    `LLMRunawayError`) once its text ends in a loop."""

    __slots__ = ("_looked", "_on_text", "_size", "_text")

    def __init__(self, on_text: Callable[[str], None]) -> None:
        self._on_text = on_text
        self._text: list[str] = []
        self._size = self._looked = 0

    def __call__(self, piece: str) -> None:
        self._on_text(piece)
        self._text.append(piece)
        self._size += len(piece)
        if self._size - self._looked < _CHECK_EVERY:
            return
        self._looked = self._size
        text = "".join(self._text)[-(MAX_PIECE * STREAM_REPEATS + STREAM_SPAN) :]
        self._text = [text]
        if (loop := repeated_tail(text, STREAM_REPEATS, STREAM_SPAN)) is not None:
            cut = f"{STREAM_REPEATS} times over in a stream, which was stopped"
            raise runaway_error(loop, cut, 1)
