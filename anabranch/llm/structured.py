"""Structured output: a pydantic model as the request's `response_format`, and its fallbacks.

A server may refuse `json_schema` (older vLLM, some gateways); then `json_object` with the schema
in a system message, then plain prompted JSON. The answer is validated with pydantic; a code fence
around it is tolerated.
"""

from __future__ import annotations

import json
import re
from typing import Any, Literal, TypeVar

from pydantic import BaseModel

from anabranch.errors import LLMStatusError

T = TypeVar("T", bound=BaseModel)

OutputMode = Literal["json_schema", "json_object", "prompted"]
"""How structured output is asked for, best first; an endpoint falls back when a server refuses."""

MODES: tuple[OutputMode, ...] = ("json_schema", "json_object", "prompted")

_FENCE = re.compile(r"^\s*```(?:json)?\s*(.*?)\s*```\s*$", re.DOTALL)
_ABOUT_FORMAT = re.compile(r"response_format|json_schema|json[ _]object|json schema|grammar", re.I)


def response_format(schema: type[BaseModel], mode: OutputMode) -> dict[str, Any] | None:
    if mode == "json_schema":
        return {
            "type": "json_schema",
            "json_schema": {"name": schema.__name__, "schema": schema.model_json_schema()},
        }
    if mode == "json_object":
        return {"type": "json_object"}
    return None


def with_schema_prompt(
    messages: list[dict[str, Any]], schema: type[BaseModel], mode: OutputMode
) -> list[dict[str, Any]]:
    """Without json_schema the model must read the schema: put it in a system message."""
    if mode == "json_schema":
        return messages
    instruction = (
        "Answer with only a JSON object (no prose, no code fence) that matches this JSON schema:\n"
        + json.dumps(schema.model_json_schema())
    )
    return [{"role": "system", "content": instruction}, *messages]


def validate(text: str, schema: type[T]) -> T:
    """The answer as `schema`; raises pydantic's ValidationError (a ValueError) if it is not."""
    match = _FENCE.match(text)
    return schema.model_validate_json(match.group(1) if match else text)


def next_mode(exc: LLMStatusError, mode: OutputMode) -> OutputMode | None:
    """The mode to try after `exc`, if `exc` is a refusal of `mode` itself: a 400 whose message is
    about the response format. Any other 400 (a bad message, a context overflow) says nothing
    about the mode and must not change it for every caller of the endpoint."""
    if exc.status != 400 or mode == MODES[-1] or not _ABOUT_FORMAT.search(str(exc)):
        return None
    return MODES[MODES.index(mode) + 1]
