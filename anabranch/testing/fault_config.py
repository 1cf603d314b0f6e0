"""What the fault server does: the faults it plays, the quota it holds, the servers it imitates.

`FaultConfig` is the whole behaviour, sent to a running server as JSON (PUT /config); `Quota` its
capacity, changed on its own while it runs (PUT /quota). See `anabranch.testing.fault_server`.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, Field

from anabranch.testing.fault_batches import BatchFaults
from anabranch.testing.fault_tools import ToolScript

Fault = Literal[
    "ok", "429", "500", "503", "400", "401", "403", "reset", "hang", "malformed", "invalid",
    "drip", "cut", "stream_cut", "repeat",
]  # fmt: skip
"""What one request gets: a normal answer, an HTTP error, a dropped connection, a hang past any
timeout, a body that is not JSON, a well-formed answer whose content fails the schema, an answer
dripped at `drip_bytes_per_s`, a body cut mid-way (the connection closes before the
Content-Length is reached), or a stream sent close-delimited (no Content-Length, no chunks, as
HTTP/1.0 and some proxies do) and cut before its finish_reason and `[DONE]`, where the end of the
connection is the only end the client sees, or a model stuck in a loop (`"sentiment",` repeated
until `max_tokens` words cut it, `finish_reason: length`; streamed too)."""

RetryAfterFormat = Literal["seconds", "date", "fractional"]
"""How Retry-After is written: whole seconds rounded up (RFC 9110 delay-seconds, what most
servers send), an HTTP-date (RFC 9110's other form), or fractional seconds (as no standard says,
but quick for tests)."""

ErrorStyle = Literal["openai", "vllm", "llamacpp"]
"""The shape of an error body: OpenAI's `{"error": {"message", "type", "param", "code"}}`,
vLLM's flat `{"object": "error", "message", "type", "param", "code"}`, or llama.cpp's
`{"error": {"code", "message", "type"}}`."""


class Quota(BaseModel):
    """What the server can take; change it while it runs with `FaultServer.set_quota`."""

    rps: float | None = None
    """Requests per second (a token bucket holding one second's worth)."""
    tpm: float | None = None
    """Tokens per minute (a request's words plus its max_tokens; a bucket holding one second's
    worth)."""
    in_flight: int | None = None
    """Requests at once; one more gets 429 at once."""
    headers: bool = False
    """Send OpenAI's x-ratelimit-* headers with every answer (OpenAI and a few gateways do;
    llama.cpp, vLLM and most self-hosted servers send none)."""


class FaultConfig(BaseModel):
    """What the server does; change it at run time with PUT /config."""

    latency_ms: float = 0.0
    """Added before every answer, faults included: a remote server's network and prompt time."""
    ms_per_token: float = Field(0.0, ge=0)
    """Added per word of an answer, as a model decodes it (local servers' time is mostly this)."""
    slots: int | None = Field(None, ge=1)
    """Requests worked on at once; the rest wait their turn, as in llama.cpp's `--parallel`
    slots (None: no limit). A queue the client sees only in the latency."""
    rates: dict[Fault, float] = Field(default_factory=dict)
    """Probability of each fault per request, e.g. {"429": 0.1, "reset": 0.05}."""
    script: list[Fault] = Field(default_factory=list)
    """Faults for the first requests, in order, before `rates` applies."""
    retry_after: float | None = 1.0
    """Retry-After seconds sent with 429 and 503; None sends none."""
    retry_after_format: RetryAfterFormat = "seconds"
    """How Retry-After is written, for these faults and for the quota's 429s: whole seconds by
    default, as real servers send; "fractional" lets a test wait less than a second."""
    retry_after_ms: bool = False
    """Also send `retry-after-ms` with the exact wait, as OpenAI does (most servers do not)."""
    error_style: ErrorStyle = "openai"
    """Whose error bodies to imitate."""
    hang_seconds: float = 3600.0
    drip_bytes_per_s: float = 1.0
    """How fast a "drip" answer's body comes: headers at once, then this many bytes a second."""
    answer_bytes: int = 0
    """Pad every answer's content to about this many bytes (0: no padding), sent in pieces so
    that the server itself never holds it: a runaway or hostile answer."""
    answer_padding: Literal["text", "whitespace"] = "text"
    """What the padding is: letters after the answer (invalid for any schema), or whitespace
    around it (valid JSON stays valid, only much larger)."""
    answer_framing: Literal["length", "close"] = "length"
    """How a padded answer is framed: with its Content-Length, as a server that builds the answer
    first sends it (a client can refuse it from its head), or close-delimited, without one, as
    HTTP/1.0 servers and some proxies send it (a client must read up to its cap to know)."""
    refuse_json_schema: bool = False
    """Answer 400 to `response_format: json_schema`, as servers without it do."""
    refuse_json_object: bool = False
    """Answer 400 to `response_format: json_object` (a server that changed since it was met)."""
    quota: Quota | None = None
    """A real capacity: requests beyond it get 429, as a provider's quota or a busy server."""
    models: list[str] = Field(default_factory=lambda: ["fault"])
    """What GET /v1/models lists."""
    logprobs: bool = True
    """Send the first token's likeliest alternatives when a request asks (`logprobs`), as
    llama.cpp, vLLM and OpenAI do; False ignores the ask, as servers without them do."""
    tokenize: bool = False
    """Serve llama.cpp's `/tokenize` (one piece per word), under the same faults as chat."""
    echo_credentials: bool = False
    """Quote the request's bearer token in every error body and in a response header, as
    OpenAI's 401 ("Incorrect API key provided: sk-...") and careless gateways do."""
    seed: int = 0
    """Seeds the faults' random draws, so a run can be repeated."""
    tools: ToolScript | None = None
    """Answer requests that offer tools with the script's tool calls (testing/fault_tools.py)."""
    cut_answers: bool = False
    """Cut answers as a model does: at a `stop` sequence, and at `max_tokens` words (then with
    `finish_reason: length`)."""
    batches: BatchFaults = Field(default_factory=BatchFaults)
    """How the Batch API (`/v1/files`, `/v1/batches`) behaves: its time, its faults."""
