"""Specialists: LLM personas that refine each other's output, one after another, in a chain.

Three built-in roles mirror the chain the product started from: a system specialist that answers in
depth, an enforcer that refines it into an action plan, and a decision simplifier that ends with a
decision. Users add their own in Python (`Specialist(...)`) or in a TOML or YAML file.
"""

from __future__ import annotations

import tomllib
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from anabranch.errors import InputError, describe


@dataclass(frozen=True, slots=True)
class Specialist:
    name: str
    """Shown in the report; also the chain node's name, so unique within a chain."""
    persona: str
    """The system prompt: who the specialist is and what it must produce."""
    temperature: float = 0.7
    max_tokens: int = 400
    model: str | None = None
    """The model to ask for; None means the endpoint's own."""
    base_url: str | None = None
    """An endpoint of its own; None means the chain's endpoint."""


SYSTEM_SPECIALIST = Specialist(
    name="system_specialist",
    persona=(
        "You are a senior systems specialist. Answer the user's question in depth: explain the "
        "concepts, show a short code example where it helps, and state the benefits and the "
        "pitfalls. Use Markdown headings and bullet points."
    ),
)
AGENT_ENFORCER = Specialist(
    name="agent_enforcer",
    persona=(
        "You are a strategy enforcer. You receive a question and a previous answer. Summarise the "
        "key insights of the previous answer, add what it missed, and turn it into an "
        "implementation framework and a numbered priority action plan."
    ),
)
DECISION_SIMPLIFIER = Specialist(
    name="decision_simplifier",
    persona=(
        "You are a decision simplifier. Reduce the previous answer to a short decision brief with "
        "exactly these bold sections: **Decision:** (one sentence), **Options:** (numbered, at "
        "most three), **Recommendation:**, **Next steps:** (with timing), **Watch for:** (risks)."
    ),
    temperature=0.5,
    max_tokens=300,
)
BUILTIN = {s.name: s for s in (SYSTEM_SPECIALIST, AGENT_ENFORCER, DECISION_SIMPLIFIER)}
DEFAULT_CHAIN = (SYSTEM_SPECIALIST, AGENT_ENFORCER, DECISION_SIMPLIFIER)


class _SpecialistSpec(BaseModel):
    """One specialist as written in a file: checked at the edge, then a plain Specialist."""

    model_config = ConfigDict(extra="forbid")

    name: str = Field(min_length=1)
    persona: str = Field(min_length=1)
    temperature: float = Field(0.7, ge=0.0, le=2.0)
    max_tokens: int = Field(400, ge=1)
    model: str | None = None
    base_url: str | None = None


def load_specialists(path: str | Path) -> list[Specialist]:
    """Specialists from a TOML or YAML file holding a list under `specialist` (or `specialists`).

    ```toml
    [[specialist]]
    name = "critic"
    persona = "You find the weakest claim in the previous answer and fix it."
    temperature = 0.3
    ```
    """
    path = Path(path)
    text = path.read_text(encoding="utf-8")
    try:
        if path.suffix in (".yaml", ".yml"):
            import yaml

            data = yaml.safe_load(text) or {}
        else:
            data = tomllib.loads(text)
    except Exception as exc:  # any parse failure is the file's fault
        raise InputError(f"{path}: cannot parse ({exc})") from exc
    entries = data.get("specialist", data.get("specialists")) if isinstance(data, dict) else data
    if not isinstance(entries, list) or not entries:
        raise InputError(f"{path}: expected a list of specialists under 'specialist'")
    specialists = []
    for i, entry in enumerate(entries, start=1):
        try:
            spec = _SpecialistSpec.model_validate(entry)
        except ValidationError as exc:
            raise InputError(f"{path}: specialist {i}: {describe(exc)}") from exc
        specialists.append(Specialist(**spec.model_dump()))
    return specialists


def resolve_specialists(
    names: Sequence[str], defined: Sequence[Specialist] = ()
) -> list[Specialist]:
    """Specialists by name, from those `defined` (a file's) or the built-ins, in that order."""
    known = BUILTIN | {s.name: s for s in defined}
    missing = [n for n in names if n not in known]
    if missing:
        raise InputError(f"unknown specialists {missing}; known: {', '.join(known)}")
    return [known[n] for n in names]
