"""Specialists: LLM personas that refine each other's output, one after another, in a chain.

Three built-in roles mirror the chain the product started from: a system specialist that answers in
depth, an enforcer that refines it into an action plan, and a decision simplifier that ends with a
decision. Users add their own in Python (`Specialist(...)`) or in a TOML or YAML file: a persona
(the system prompt as written), or a role, a goal and a backstory it is written from; tools the
specialist's model may call, and an output model its answer must fit (in a file, each as
`module:name`, imported when the file is read).
"""

from __future__ import annotations

import importlib
import tomllib
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from anabranch.errors import ConfigError, InputError, describe


@dataclass(frozen=True, slots=True)
class Specialist:
    name: str
    """Shown in the report; also the chain node's name, so unique within a chain."""
    persona: str = ""
    """The system prompt: who the specialist is and what it must produce; empty: written from
    `role`, `goal` and `backstory`."""
    temperature: float = 0.7
    max_tokens: int = 400
    model: str | None = None
    """The model to ask for; None means the endpoint's own."""
    base_url: str | None = None
    """An endpoint of its own; None means the chain's endpoint."""
    role: str = ""
    """Who the specialist is ("a meticulous fact checker")."""
    goal: str = ""
    """What it must achieve."""
    backstory: str = ""
    """What shapes how it works."""
    tools: tuple[Callable[..., Any], ...] = ()
    """Functions (or Tools) its model may call; a step with tools or an output model is not
    streamed, and the report lists its tool calls."""
    output_type: type[BaseModel] | None = None
    """A model its answer must fit (validated and repaired as `Endpoint.parse` does); the step's
    output is that model as JSON."""
    max_steps: int = 6
    """Model turns its tool loop may take."""

    def __post_init__(self) -> None:
        if not self.persona.strip() and not self.role.strip():
            raise ConfigError(f"specialist {self.name!r} needs a persona or a role")
        if self.model and not self.base_url and (self.tools or self.output_type):
            raise ConfigError(
                f"specialist {self.name!r}: with tools or an output model it asks its "
                "endpoint's model; give it a base_url for a model of its own"
            )

    @property
    def system_prompt(self) -> str:
        """The persona, or the prompt its role, goal and backstory make."""
        if self.persona.strip():
            return self.persona
        parts = [f"You are {self.role.strip().rstrip('.')}."]
        if self.goal.strip():
            parts.append(f"Your goal: {self.goal.strip()}")
        if self.backstory.strip():
            parts.append(self.backstory.strip())
        return " ".join(parts)


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
    persona: str = ""
    temperature: float = Field(0.7, ge=0.0, le=2.0)
    max_tokens: int = Field(400, ge=1)
    model: str | None = None
    base_url: str | None = None
    role: str = ""
    goal: str = ""
    backstory: str = ""
    tools: list[str] = Field(default_factory=list)
    """Each `module:function`."""
    output_type: str | None = None
    """`module:Model`."""
    max_steps: int = Field(6, ge=1)


def load_specialists(path: str | Path) -> list[Specialist]:
    """Specialists from a TOML or YAML file holding a list under `specialist` (or `specialists`).

    ```toml
    [[specialist]]
    name = "critic"
    persona = "You find the weakest claim in the previous answer and fix it."
    temperature = 0.3

    [[specialist]]
    name = "checker"
    role = "a fact checker"
    goal = "Confirm each figure of the previous answer."
    tools = ["mypackage.tools:search"]
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
            fields = spec.model_dump()
            fields["tools"] = tuple(_imported(t) for t in spec.tools)
            fields["output_type"] = _imported(spec.output_type) if spec.output_type else None
            if fields["output_type"] is not None and not (
                isinstance(fields["output_type"], type)
                and issubclass(fields["output_type"], BaseModel)
            ):
                raise ConfigError(f"output_type {spec.output_type} is not a pydantic model")
            specialists.append(Specialist(**fields))
        except ValidationError as exc:
            raise InputError(f"{path}: specialist {i}: {describe(exc)}") from exc
        except ConfigError as exc:
            raise InputError(f"{path}: specialist {i}: {exc}") from exc
    return specialists


def _imported(target: str) -> Any:
    """The object a `module:name` string names."""
    module, _, name = target.partition(":")
    try:
        return getattr(importlib.import_module(module), name)
    except (ImportError, AttributeError, ValueError) as exc:
        raise ConfigError(f"cannot import {target!r} (expected module:name): {exc}") from exc


def resolve_specialists(
    names: Sequence[str], defined: Sequence[Specialist] = ()
) -> list[Specialist]:
    """Specialists by name, from those `defined` (a file's) or the built-ins, in that order."""
    known = BUILTIN | {s.name: s for s in defined}
    missing = [n for n in names if n not in known]
    if missing:
        raise InputError(f"unknown specialists {missing}; known: {', '.join(known)}")
    return [known[n] for n in names]
