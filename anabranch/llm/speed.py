"""How fast the server generates, measured, so that an attempt's timeout and a call's deadline
follow it.

Fixed bounds take a busy machine for a dead server: the embedded model on a laptop that also
runs another model generates a few times slower, its keyword calls ran past the 60 s attempt
timeout, then past the 180 s call deadline, and the batch failed while the server was
answering, slowly. So an attempt may take `_MARGIN` times what the server's answers have taken
per generated token, times the request's `max_tokens`, when that is longer than the configured
attempt timeout; the call's deadline grows by the same factor, up to `Timeouts.stretch`. The
configured bounds are the floor (a hung server sends no answers, so it is still cut there).
"""

from __future__ import annotations

_MARGIN = 3.0
"""An attempt may take this many times the time per token measured, for its max_tokens: a
batching server slows each request as its batch fills (about 1.7 times from 4 to 8)."""
_SMOOTHING = 0.2
"""Weight of the newest answer in the smoothed time per token."""


class Speed:
    """Seconds per generated token of the server's answers, smoothed over the last few."""

    def __init__(self) -> None:
        self.per_token: float | None = None
        """Smoothed seconds per token (prompt and queueing included), None before any answer."""

    def answered(self, seconds: float, tokens: int) -> None:
        """An answer of `tokens` generated tokens took `seconds`."""
        sample = seconds / (tokens + 1)
        old = self.per_token
        self.per_token = sample if old is None else old + _SMOOTHING * (sample - old)

    def bounds(
        self, attempt: float, call: float, max_tokens: int, stretch: float
    ) -> tuple[float, float]:
        """The attempt timeout and the call deadline for a request of `max_tokens`: the
        configured `attempt` and `call`, or what the measured speed needs if that is longer.
        The attempt may take what the speed needs, within the call's deadline; the deadline
        grows as many times as the attempt had to, at most `stretch` times."""
        if self.per_token is None:
            return attempt, call
        need = _MARGIN * self.per_token * (max_tokens + 1)
        deadline = call * min(stretch, max(1.0, need / attempt))
        return max(attempt, min(deadline, need)), deadline
