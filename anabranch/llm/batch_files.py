"""The Batch API's file format: requests as JSONL lines, split to the provider's limits, and the
output and error files read back.

An input line is `{"custom_id", "method": "POST", "url": "/v1/chat/completions", "body"}`; an
output line carries the same `custom_id` with `response: {status_code, body}`; an error line has
a `response` with an error status (a permanent or transient failure of that request) or no
response and an `error` (`batch_expired`, `batch_cancelled`: the request never ran).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import orjson

from anabranch.errors import LLMOutputError
from anabranch.llm.retry import short
from anabranch.llm.transport import Answer, Tokens


def request_line(custom_id: str, body: bytes) -> bytes:
    """One request of an input file; `body` is the chat request's JSON."""
    return b'{"custom_id":"%s","method":"POST","url":"/v1/chat/completions","body":%s}\n' % (
        custom_id.encode(),
        body,
    )


def split(
    lines: Sequence[bytes],
    max_requests: int,
    max_bytes: int,
    tokens: Sequence[int] | None = None,
    max_tokens: int | None = None,
) -> list[range]:
    """The lines in files of at most `max_requests` lines, `max_bytes` bytes and, given each
    line's `tokens`, `max_tokens` tokens (a line over a limit alone goes in a file of its own,
    for the provider to refuse by name)."""
    parts: list[range] = []
    start, size, held = 0, 0, 0
    for i, line in enumerate(lines):
        cost = tokens[i] if tokens is not None else 0
        over = max_tokens is not None and held + cost > max_tokens
        if i > start and (i - start >= max_requests or size + len(line) > max_bytes or over):
            parts.append(range(start, i))
            start, size, held = i, 0, 0
        size += len(line)
        held += cost
    if start < len(lines):
        parts.append(range(start, len(lines)))
    return parts


def read_results(
    content: bytes,
    answers: dict[str, dict[str, Any]],
    failures: dict[str, tuple[int, str]],
) -> None:
    """An output or error file's lines into `answers` (the response body by custom_id) and
    `failures` (the status and the provider's message); a request that never ran is in
    neither."""
    for raw in content.splitlines():
        if not raw.strip():
            continue
        entry = orjson.loads(raw)
        custom_id, response = entry.get("custom_id"), entry.get("response") or {}
        status = response.get("status_code")
        if status == 200:
            answers[custom_id] = response.get("body") or {}
        elif status:
            error = (response.get("body") or {}).get("error") or {}
            failures[custom_id] = (int(status), str(error.get("message")))


def answer_of(body: dict[str, Any]) -> Answer:
    """The answer in a chat completion body of the output file."""
    try:
        choice = (body.get("choices") or [{}])[0]
        usage = body.get("usage") or {}
        tokens = Tokens(usage.get("prompt_tokens") or 0, usage.get("completion_tokens") or 0)
        first = ((choice.get("logprobs") or {}).get("content") or [{}])[0]
        alternatives = tuple(
            (str(t["token"]), float(t["logprob"])) for t in first.get("top_logprobs") or ()
        )
        message = choice.get("message") or {}
        text = message.get("content") or ""
        calls = tuple(message.get("tool_calls") or ())
        finish = choice.get("finish_reason")
        return Answer(text, tokens if usage else None, finish, alternatives, calls)
    except (AttributeError, IndexError, KeyError, TypeError, ValueError) as exc:
        raise LLMOutputError(f"not a chat completion: {short(body, 120)}") from exc
