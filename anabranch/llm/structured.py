"""Structured output: a pydantic model as the request's `response_format`, and its fallbacks.

A server may refuse `json_schema` (older vLLM, some gateways); then `json_object` with the schema
in a system message, then plain prompted JSON. The answer is validated with pydantic; a code fence
around it is tolerated. `parse` asks an endpoint for it, with one repair re-ask that quotes a
bounded excerpt of the invalid answer (never a runaway answer sent back whole).
"""

from __future__ import annotations

import functools
import json
import re
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Generic, TypeVar

from pydantic import BaseModel, ValidationError

from anabranch.errors import LLMOutputError, LLMStatusError
from anabranch.llm.learnt import MODES, OutputMode
from anabranch.llm.retry import short
from anabranch.types import Usage

if TYPE_CHECKING:
    from anabranch.llm.endpoint import Completion, Endpoint

T = TypeVar("T", bound=BaseModel)

_FENCE = re.compile(r"^\s*```(?:json)?\s*(.*?)\s*```\s*$", re.DOTALL)
_ABOUT_FORMAT = re.compile(r"response_format|json_schema|json[ _]object|json schema|grammar", re.I)


@functools.lru_cache(maxsize=256)
def response_format(schema: type[BaseModel], mode: OutputMode) -> dict[str, Any] | None:
    """The request's `response_format` for `schema` in `mode`. Made once per model and mode:
    pydantic builds the JSON schema afresh on every `model_json_schema()`, which cost 14 % of a
    structured call's CPU. The dict is shared: it is sent and hashed, never changed."""
    if mode == "json_schema":
        return {
            "type": "json_schema",
            "json_schema": {"name": schema.__name__, "schema": schema.model_json_schema()},
        }
    if mode == "json_object":
        return {"type": "json_object"}
    return None


@functools.lru_cache(maxsize=256)
def _schema_instruction(schema: type[BaseModel]) -> dict[str, Any]:
    """The system message that shows the model the schema (made once per model, as above)."""
    instruction = (
        "Answer with only a JSON object (no prose, no code fence) that matches this JSON schema:\n"
        + json.dumps(schema.model_json_schema())
    )
    return {"role": "system", "content": instruction}


def with_schema_prompt(
    messages: list[dict[str, Any]], schema: type[BaseModel], mode: OutputMode
) -> list[dict[str, Any]]:
    """Without json_schema the model must read the schema: put it in a system message."""
    if mode == "json_schema":
        return messages
    return [_schema_instruction(schema), *messages]


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


@dataclass(slots=True)
class Parsed(Generic[T]):
    """A validated structured answer and what it cost, repair re-ask included."""

    value: T
    usage: Usage
    attempts: int
    latency_s: float


async def parse(
    llm: Endpoint,
    messages: list[dict[str, Any]],
    schema: type[T],
    *,
    temperature: float | None = None,
    max_tokens: int | None = None,
) -> Parsed[T]:
    """JSON matching `schema` from `llm`, validated; invalid JSON gets one re-ask showing the
    error and a bounded excerpt of the answer (`excerpt`)."""
    start = time.perf_counter()
    completion, sent, mode = await _chat_structured(llm, messages, schema, temperature, max_tokens)
    usage, attempts = completion.usage, completion.attempts
    try:
        value = validate(completion.text, schema)
    except ValueError as first_error:
        llm.forget(sent, mode, schema, temperature, max_tokens)
        repair = [
            *sent,
            {"role": "assistant", "content": excerpt(completion.text)},
            {
                "role": "user",
                "content": "That answer is not valid JSON for the schema: "
                f"{short(first_error)}. Reply again with only the corrected JSON.",
            },
        ]
        completion = await llm.chat(
            repair,
            response_format=response_format(schema, mode),
            temperature=temperature,
            max_tokens=max_tokens,
        )
        usage, attempts = usage + completion.usage, attempts + completion.attempts
        try:
            value = validate(completion.text, schema)
        except (ValidationError, ValueError) as exc:
            llm.forget(repair, mode, schema, temperature, max_tokens)
            raise LLMOutputError(
                f"{schema.__name__} still invalid after a repair re-ask: {short(exc)}",
                attempts=attempts,
                usage=usage,
            ) from exc
    return Parsed(value, usage, attempts, time.perf_counter() - start)


async def _chat_structured(
    llm: Endpoint,
    messages: list[dict[str, Any]],
    schema: type[BaseModel],
    temperature: float | None,
    max_tokens: int | None,
) -> tuple[Completion, list[dict[str, Any]], OutputMode]:
    """Try the learned output mode; a refusal of that mode moves every later call down. A mode
    remembered from an earlier process (`llm/learnt.py`) that is refused now says the server
    changed: the modes are tried again from the best, not only downward.

    Returns the answer, the messages sent (the schema prompt included) and the mode used.
    """
    while True:
        mode = llm.knowledge.now.output_mode
        sent = with_schema_prompt(messages, schema, mode)
        try:
            completion = await llm.chat(
                sent,
                response_format=response_format(schema, mode),
                temperature=temperature,
                max_tokens=max_tokens,
            )
            return completion, sent, mode
        except LLMStatusError as exc:
            fallback = next_mode(exc, mode)
            if fallback is None:
                raise
            if llm.knowledge.now.output_mode != mode:  # a call beside this one moved it
                continue
            if "output_mode" in llm.knowledge.recalled and mode != MODES[0]:
                fallback = MODES[0]  # a remembered mode no longer holds: probe again
            llm.knowledge.learn(output_mode=fallback)


_EXCERPT = 2000
"""Characters of an invalid answer quoted back in the repair re-ask: enough for the model to see
its mistake, never the whole of a runaway answer sent back to the server."""


def excerpt(text: str) -> str:
    """The start and end of `text`, at most `_EXCERPT` characters in all."""
    if len(text) <= _EXCERPT:
        return text
    half = _EXCERPT // 2
    return f"{text[:half]} … ({len(text) - _EXCERPT} characters left out) … {text[-half:]}"
