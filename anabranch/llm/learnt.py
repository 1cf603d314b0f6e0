"""What an endpoint learns of its server as it goes, and the memory that keeps it for the next
process.

Each fact is found out by asking: `json_schema` refused (a 400 about the response format), an
answer without the token probabilities it was asked for, a 404 for `/tokenize`, a 400 about
`tools`. Every call in flight before the first answer asks too, so a new process against a
server without `logprobs` sent as many probes as it had calls in flight (16 at the default
concurrency). An endpoint given a `Memory` (`Endpoint.remember`; a `Journal` is one) takes up
what an earlier process learnt of the same server and model and keeps what it learns, so a
resumed run, or the next run on the same journal, does not probe again. The key is the
server's public URL and the model, never the API key.

A remembered fact is a guess about a server that may have changed since: one that no longer
holds is found out again, not failed on (`Knowledge.recalled`: a refusal of a remembered output
mode starts the modes over from the best).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields, replace
from typing import Any, Literal, Protocol, get_args

OutputMode = Literal["json_schema", "json_object", "prompted"]
"""How structured output is asked for, best first; an endpoint falls back when a server refuses."""

MODES: tuple[OutputMode, ...] = get_args(OutputMode)


@dataclass(frozen=True, slots=True)
class Learnt:
    """What a server was found to take and send."""

    output_mode: OutputMode = "json_schema"
    """How structured output is asked for (`llm/structured.py`)."""
    logprobs: bool | None = None
    """Whether its answers carry the token probabilities asked for; None: not asked yet."""
    tokenize: bool | None = None
    """Whether it serves `/tokenize`; None: not asked yet."""
    tools: bool = True
    """Whether it takes `tools` in a request (else the tool loop describes them in the prompt)."""

    def as_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def of(cls, data: object) -> Learnt | None:
        """What a memory holds, read back; None for anything this version would misread."""
        if not isinstance(data, dict) or set(data) - {f.name for f in fields(cls)}:
            return None
        learnt = cls(**data)
        ok = (
            learnt.output_mode in MODES
            and learnt.logprobs in (None, True, False)
            and learnt.tokenize in (None, True, False)
            and learnt.tools in (True, False)
        )
        return learnt if ok else None


class Memory(Protocol):
    """Where an endpoint keeps what it learnt, by server (its public URL and model)."""

    def recall(self, server: str) -> Learnt | None:
        """What was learnt of `server` before, if anything."""

    def keep(self, server: str, learnt: Learnt) -> None:
        """Remember `learnt` for `server` (without waiting on the disk)."""


@dataclass(frozen=True, slots=True)
class Given:
    """A memory that holds what another process learnt and keeps nothing: a Ray worker starts
    from what its driver knew (the driver alone writes the journal)."""

    learnt: Learnt
    """What the other process knew."""

    def recall(self, server: str) -> Learnt | None:
        return self.learnt

    def keep(self, server: str, learnt: Learnt) -> None:
        """Kept by no one: a worker's findings last as long as the worker."""


def server_key(public_url: str, model: str) -> str:
    """A memory's key for a server: its URL (without credentials) and the model asked for."""
    return f"{public_url} {model}"


class Knowledge:
    """An endpoint's learnt facts, kept in its `Memory` as they change."""

    __slots__ = ("_key", "_memory", "now", "recalled")

    def __init__(self) -> None:
        self.now = Learnt()
        """What holds now."""
        self.recalled: frozenset[str] = frozenset()
        """The facts taken from the memory and not found out again by this process."""
        self._memory: Memory | None = None
        self._key = ""

    def attach(self, memory: Memory, key: str) -> None:
        """Take up what `memory` holds for `key`, and keep what is learnt from now on there."""
        self._memory, self._key = memory, key
        known = memory.recall(key)
        if known is not None:
            self.now = known
            self.recalled = frozenset(f.name for f in fields(Learnt))
        elif self.now != Learnt():  # learnt before the memory came: keep it
            memory.keep(key, self.now)

    def learn(self, **facts: Any) -> None:
        """Facts found out by asking the server: they hold now, and are kept."""
        self.recalled = self.recalled.difference(facts)
        if all(getattr(self.now, name) == value for name, value in facts.items()):
            return
        self.now = replace(self.now, **facts)
        if self._memory is not None:
            self._memory.keep(self._key, self.now)
