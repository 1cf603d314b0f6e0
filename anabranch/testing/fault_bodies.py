"""What the fault server answers: completions that look like a model's, error bodies as OpenAI,
vLLM and llama.cpp write them, and the replies it plays out by hand (a drip, a body cut half-way,
a close-delimited stream cut before [DONE], answers of any size sent in pieces).
"""

from __future__ import annotations

import hashlib
import json
import math
import time
from collections.abc import Iterator
from dataclasses import dataclass
from email.utils import formatdate
from typing import Any

from anabranch.testing.fault_config import Fault, FaultConfig


def digest(body: bytes) -> str:
    """A short name for the request's conversation (its messages), whatever else it asks."""
    try:
        messages = json.loads(body or b"{}").get("messages")
    except (ValueError, AttributeError):
        messages = None
    return hashlib.sha1(json.dumps(messages, sort_keys=True).encode()).hexdigest()[:16]


def echo_answer(request: dict[str, Any]) -> str:
    fmt = request.get("response_format") or {}
    if fmt.get("type") == "json_schema":
        schema = fmt.get("json_schema", {}).get("schema", {})
        return json.dumps(schema_instance(schema, schema.get("$defs", {})))
    if fmt.get("type") == "json_object":
        schema = _schema_in_prompt(request.get("messages", []))
        return json.dumps(schema_instance(schema, schema.get("$defs", {})) if schema else {})
    users = [m for m in request.get("messages", []) if m.get("role") == "user"]
    return f"echo: {users[-1].get('content', '')}" if users else "echo:"


def _schema_in_prompt(messages: list[dict[str, Any]]) -> dict[str, Any] | None:
    """A JSON schema that a prompt carries at the end of a message, as prompted-JSON clients do."""
    for message in messages:
        content = str(message.get("content") or "")
        start = content.find("{")
        if start < 0:
            continue
        try:
            found = json.loads(content[start:])
        except ValueError:
            continue
        if isinstance(found, dict) and "properties" in found:
            return found
    return None


def schema_instance(schema: dict[str, Any], defs: dict[str, Any]) -> Any:
    """A small value valid for a JSON schema (the subset pydantic emits)."""
    if "$ref" in schema:
        return schema_instance(defs[schema["$ref"].rsplit("/", 1)[-1]], defs)
    if "const" in schema:
        return schema["const"]
    if "enum" in schema:
        return schema["enum"][0]
    for key in ("anyOf", "oneOf", "allOf"):
        if key in schema:
            return schema_instance(schema[key][0], defs)
    kind = schema.get("type", "object")
    if isinstance(kind, list):
        kind = next((k for k in kind if k != "null"), "null")
    if kind == "object":
        props = schema.get("properties", {})
        return {name: schema_instance(sub, defs) for name, sub in props.items()}
    if kind == "array":
        return [schema_instance(schema.get("items", {}), defs)] * max(1, schema.get("minItems", 1))
    if kind == "string":
        return "ok" + "k" * max(0, schema.get("minLength", 0) - 2)
    if kind in ("number", "integer"):
        low = schema.get("minimum", schema.get("exclusiveMinimum", 0))
        high = schema.get("maximum", schema.get("exclusiveMaximum", 1))
        value = (low + high) / 2
        return int(value) if kind == "integer" else value
    if kind == "boolean":
        return True
    return None


LOOP_PIECE = '"sentiment",'
"""What a "repeat" answer repeats, as a small model under a grammar did with agent names."""


def looping_answer(request: dict[str, Any]) -> str:
    """A model stuck in a loop: `LOOP_PIECE` over and over, one word more than `max_tokens`
    (so that `completion_body(..., cut=True)` ends it with `finish_reason: length`)."""
    return " ".join([LOOP_PIECE] * ((request.get("max_tokens") or 256) + 1))


def completion_body(request: dict[str, Any], content: str, cut: bool = False) -> dict[str, Any]:
    """The answer as a chat completion; with `cut`, ended as a model ends it: at a `stop`
    sequence, and at `max_tokens` words (then with `finish_reason: length`)."""
    prompt = sum(len(str(m.get("content", "")).split()) for m in request.get("messages", []))
    finish = "stop"
    if cut:
        stops = request.get("stop") or []
        for stop in [stops] if isinstance(stops, str) else stops:
            content = content.split(stop, 1)[0]
        words, limit = content.split(), request.get("max_tokens") or 0
        if limit and len(words) > limit:
            content, finish = " ".join(words[:limit]), "length"
    completion = len(content.split())
    return {
        "id": "chatcmpl-fault",
        "object": "chat.completion",
        "created": int(time.time()),
        "model": request.get("model", "fault"),
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": content},
                "finish_reason": finish,
            }
        ],
        "usage": {
            "prompt_tokens": prompt,
            "completion_tokens": completion,
            "total_tokens": prompt + completion,
        },
    }


LABEL_LOGPROBS = ((" positive", -1.2), (" negative", -2.0), (" neutral", -2.3))
"""The first-token alternatives every answer offers after its own first word."""


def logprobs_for(content: str, request: dict[str, Any]) -> dict[str, Any]:
    """OpenAI's `logprobs` for the answer's first word: itself most likely, then the three
    sentiment labels (a model's first token is often not a label), cut to `top_logprobs`."""
    first = content.split(" ", 1)[0]
    ranked = [(first, -0.4), *LABEL_LOGPROBS]
    top = [{"token": t, "logprob": p} for t, p in ranked[: int(request.get("top_logprobs") or 0)]]
    return {"content": [{"token": first, "logprob": -0.4, "top_logprobs": top}]}


@dataclass
class Act:
    """A reply the connection plays out by hand, then closes: what h11 would not send."""

    headers: dict[str, str]
    pieces: list[bytes | tuple[int, bytes]]
    """The body: bytes, or (count, byte) for that byte repeated, made a megabyte at a time."""
    status: int = 200
    length: int | None = -1
    """The Content-Length sent: -1 for the body's own, None for none (close-delimited)."""
    cut_at: int | None = None
    """Bytes of the body sent before the connection is dropped."""
    rate: float | None = None
    """Bytes per second, for a drip."""

    def size(self) -> int:
        return sum(len(p) if isinstance(p, bytes) else p[0] for p in self.pieces)

    def chunks(self) -> Iterator[bytes]:
        for piece in self.pieces:
            if isinstance(piece, bytes):
                yield piece
                continue
            count, byte = piece
            while count > 0:
                step = min(count, 1 << 20)
                yield byte * step
                count -= step


def acted(
    fault: Fault, config: FaultConfig, status: int, headers: dict[str, str],
    pieces: list[bytes | tuple[int, bytes]],
) -> tuple[int, dict, bytes] | Act:  # fmt: skip
    """The answer as the fault wants it sent: plain, dripped, cut half-way, or huge."""
    if fault == "drip":
        return Act(headers, pieces, status, rate=config.drip_bytes_per_s)
    act = Act(headers, pieces, status)
    if fault in ("cut", "stream_cut"):
        act.cut_at = act.size() // 2
        return act
    if len(pieces) == 1 and isinstance(pieces[0], bytes):
        return status, headers, pieces[0]
    return act


def padded(completion: dict[str, Any], config: FaultConfig) -> list[bytes | tuple[int, bytes]]:
    """The completion's JSON, its content padded to `answer_bytes` without building it whole."""
    if not config.answer_bytes:
        return [json.dumps(completion).encode()]
    message = completion["choices"][0]["message"]
    content, message["content"] = message["content"], "\x00"
    before, after = json.dumps(completion).encode().split(b"\\u0000")
    text = json.dumps(content).encode()[1:-1]
    if config.answer_padding == "whitespace":
        half = config.answer_bytes // 2
        return [before, (half, b" "), text, (half, b" "), after]
    return [before, text, (config.answer_bytes, b"x"), after]


def sse_body(completion: dict[str, Any], *, cut: bool = False) -> bytes:
    """The completion as OpenAI's stream: a chunk per word, a usage chunk, then [DONE]; `cut`
    stops half-way through the words, before any finish_reason or [DONE]."""
    base = {k: completion[k] for k in ("id", "created", "model")} | {
        "object": "chat.completion.chunk"
    }
    words = completion["choices"][0]["message"]["content"].split(" ")
    pieces = [w if i == 0 else " " + w for i, w in enumerate(words)]
    events = [
        base | {"choices": [{"index": 0, "delta": {"content": p}, "finish_reason": None}]}
        for p in pieces
    ]
    if cut:
        events = events[: max(1, len(events) // 2)]
        return b"".join(f"data: {json.dumps(e)}\n\n".encode() for e in events)
    finish = completion["choices"][0]["finish_reason"]
    events.append(base | {"choices": [{"index": 0, "delta": {}, "finish_reason": finish}]})
    events.append(base | {"choices": [], "usage": completion["usage"]})
    return b"".join(f"data: {json.dumps(e)}\n\n".encode() for e in events) + b"data: [DONE]\n\n"


def json_reply(status: int, payload: Any, headers: dict | None = None) -> tuple[int, dict, bytes]:
    return (
        status,
        {"content-type": "application/json", **(headers or {})},
        json.dumps(payload).encode(),
    )


def retry_after_headers(seconds: float, config: FaultConfig) -> dict[str, str]:
    """Retry-After for a wait of `seconds`, written as the config says (and retry-after-ms)."""
    whole = max(0, math.ceil(seconds - 1e-9))
    if config.retry_after_format == "seconds":
        headers = {"retry-after": str(whole)}
    elif config.retry_after_format == "date":
        headers = {"retry-after": formatdate(time.time() + whole, usegmt=True)}
    else:
        headers = {"retry-after": f"{seconds:.3f}".rstrip("0").rstrip(".")}
    if config.retry_after_ms:
        headers["retry-after-ms"] = str(round(seconds * 1000))
    return headers


_MESSAGES = {
    400: "bad request: 'messages' does not match the message schema",
    401: "invalid api key",
    403: "forbidden",
    429: "rate limit exceeded",
}
_TYPES = {
    "openai": {400: "invalid_request_error", 401: "invalid_request_error", 403: "permission_error",
               429: "requests"},
    "vllm": {400: "BadRequestError", 401: "Unauthorized", 403: "Forbidden",
             429: "TooManyRequests"},
    "llamacpp": {400: "invalid_request_error", 401: "authentication_error",
                 403: "permission_error", 429: "unavailable_error"},
}  # fmt: skip


def error_reply(
    status: int, config: FaultConfig, echoed: str | None, *, wait: float | None = None
) -> tuple[int, dict, bytes]:
    """An error answer as the configured kind of server writes it; 429 and 503 carry
    Retry-After (`wait`, else the configured one)."""
    headers = {}
    wait = config.retry_after if wait is None else wait
    if status in (429, 503) and wait is not None:
        headers = retry_after_headers(wait, config)
    message = _MESSAGES.get(status, "server error")
    if echoed is not None:
        message += f": Incorrect API key provided: {echoed} (Authorization: Bearer {echoed})"
        headers["x-echoed-authorization"] = f"Bearer {echoed}"
    kind = _TYPES[config.error_style].get(status, "server_error")
    body: dict[str, Any]
    if config.error_style == "vllm":
        body = {"object": "error", "message": message, "type": kind, "param": None,
                "code": status}  # fmt: skip
    elif config.error_style == "llamacpp":
        body = {"error": {"code": status, "message": message, "type": kind}}
    else:
        body = {"error": {"message": message, "type": kind, "param": None, "code": None}}
    return json_reply(status, body, headers)
