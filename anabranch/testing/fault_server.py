"""A fault-injecting OpenAI-compatible server, for tests and for users testing their own graphs.

A real LLM will not rate-limit, hang or answer garbage on demand; this server does, on a schedule
(`script`: what the first requests get) or at random (`rates`). Otherwise it answers like a model:
with JSON valid for the requested `response_format` schema, or an echo of the last user message.
It counts requests, the most in flight at once, and when each arrived, and keeps what the latest
requests asked (max_tokens, temperature, stop...), at GET /stats.

It runs in a process of its own (`FaultServer`), so that its CPU never competes with the client
being measured. HTTP/1.1 with keep-alive via h11, which lets it reset a connection for real.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import random
import select
import subprocess
import sys
import time
import urllib.request
from collections import Counter, deque
from collections.abc import Awaitable
from dataclasses import dataclass, field
from typing import Any, Literal

import h11
from pydantic import BaseModel, Field

from anabranch.errors import SetupError
from anabranch.llm.local_server import stop_process
from anabranch.testing.fault_batches import BatchApi, BatchFaults
from anabranch.testing.fault_tools import ToolScript, refusal, scripted_message

Fault = Literal[
    "ok", "429", "500", "503", "400", "401", "403", "reset", "hang", "malformed", "invalid"
]
"""What one request gets: a normal answer, an HTTP error, a dropped connection, a hang past any
timeout, a body that is not JSON, or a well-formed answer whose content fails the schema."""


class Quota(BaseModel):
    """What the server can take; change it while it runs with `FaultServer.set_quota`."""

    rps: float | None = None
    """Requests per second (a token bucket holding one second's worth)."""
    tpm: float | None = None
    """Tokens per minute (a request's words plus its max_tokens; a bucket holding one second's
    worth)."""
    in_flight: int | None = None
    """Requests at once; one more gets 429 at once."""
    headers: bool = True
    """Send OpenAI's x-ratelimit-* headers with every answer (many servers send none)."""


class FaultConfig(BaseModel):
    """What the server does; change it at run time with PUT /config."""

    latency_ms: float = 0.0
    """Added before every answer, faults included."""
    rates: dict[Fault, float] = Field(default_factory=dict)
    """Probability of each fault per request, e.g. {"429": 0.1, "reset": 0.05}."""
    script: list[Fault] = Field(default_factory=list)
    """Faults for the first requests, in order, before `rates` applies."""
    retry_after: float | None = 1.0
    """Retry-After seconds sent with 429 and 503; None sends none."""
    hang_seconds: float = 3600.0
    refuse_json_schema: bool = False
    """Answer 400 to `response_format: json_schema`, as servers without it do."""
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
    tools: ToolScript | None = None
    """Answer requests that offer tools with the script's tool calls (testing/fault_tools.py)."""
    cut_answers: bool = False
    """Cut answers as a model does: at a `stop` sequence, and at `max_tokens` words (then with
    `finish_reason: length`)."""
    batches: BatchFaults = Field(default_factory=BatchFaults)
    """How the Batch API (`/v1/files`, `/v1/batches`) behaves: its time, its faults."""


@dataclass
class _Stats:
    started: float = field(default_factory=time.monotonic)
    requests: int = 0
    in_flight: int = 0
    max_in_flight: int = 0
    cancelled: int = 0
    """Requests whose client hung up before the answer."""
    faults: Counter[str] = field(default_factory=Counter)
    arrivals: list[float] = field(default_factory=list)
    prompts: Counter[str] = field(default_factory=Counter)
    """Requests per distinct conversation (a digest of the messages), to tell repeats."""
    params: deque[dict[str, Any]] = field(default_factory=lambda: deque(maxlen=256))
    """What the latest chat requests asked besides their messages (max_tokens, stop...)."""

    def as_dict(self) -> dict[str, Any]:
        return {
            "requests": self.requests,
            "in_flight": self.in_flight,
            "max_in_flight": self.max_in_flight,
            "cancelled": self.cancelled,
            "faults": dict(self.faults),
            "arrivals": self.arrivals,
            "prompts": dict(self.prompts),
            "params": list(self.params),
        }


class FaultApp:
    def __init__(self, config: FaultConfig) -> None:
        self.configure(config)

    def configure(self, config: FaultConfig) -> None:
        self.config = config
        self.stats = _Stats()
        self._random = random.Random(config.seed)
        self._bucket = self._stamp = 0.0
        self.set_quota(config.quota)
        self.batches = BatchApi(config.batches, self._batch_answer)

    def _batch_answer(self, request: dict[str, Any], invalid: bool) -> dict[str, Any]:
        """A batch's answer to one request: what a live chat would get."""
        content = "I am not JSON at all." if invalid else _answer(request)
        completion = _completion(request, content, cut=self.config.cut_answers)
        if request.get("logprobs") and self.config.logprobs and not invalid:
            completion["choices"][0]["logprobs"] = _logprobs(content, request)
        return completion

    def set_quota(self, quota: Quota | None) -> None:
        """A new capacity, counters kept (a provider's limit changing during a run)."""
        self.config.quota = quota
        self._bucket = quota.rps if quota and quota.rps else 0.0
        self._tokens = quota.tpm / 60 if quota and quota.tpm else 0.0
        self._stamp = time.monotonic()

    def _over_quota(self, body: bytes) -> tuple[int, dict[str, str], bytes] | None:
        """A 429 if this request is beyond the quota; else None, and the request is counted."""
        quota = self.config.quota
        if quota is None:
            return None
        wait, now = 0.0, time.monotonic()
        elapsed, self._stamp = now - self._stamp, now
        if quota.rps:
            self._bucket = min(quota.rps, self._bucket + elapsed * quota.rps)
            if self._bucket < 1:
                wait = (1 - self._bucket) / quota.rps
        cost = 0
        if quota.tpm:
            rate = quota.tpm / 60
            self._tokens = min(rate, self._tokens + elapsed * rate)
            request = json.loads(body or b"{}")
            cost = sum(len(str(m.get("content", "")).split()) for m in request.get("messages", []))
            cost += int(request.get("max_tokens") or 0)
            if self._tokens < min(cost, rate):
                wait = max(wait, (min(cost, rate) - self._tokens) / rate)
        busy = quota.in_flight is not None and self.stats.in_flight > quota.in_flight
        if wait == 0 and not busy:
            if quota.rps:
                self._bucket -= 1
            self._tokens -= cost
            return None
        self.stats.faults["quota"] += 1
        status, headers, payload = _error(429, None, None)
        return (
            status,
            {**headers, **self.quota_headers(), "retry-after": f"{max(wait, 0.05):.3f}"},
            payload,
        )

    def quota_headers(self) -> dict[str, str]:
        """The x-ratelimit-* headers an answer carries, when the quota sends them."""
        quota = self.config.quota
        if quota is None or not quota.headers:
            return {}
        headers = {}
        if quota.tpm:
            rate = quota.tpm / 60
            headers = {
                "x-ratelimit-limit-tokens": f"{rate:g}",
                "x-ratelimit-remaining-tokens": str(max(0, int(self._tokens))),
                "x-ratelimit-reset-tokens": f"{max(0.0, rate - self._tokens) / rate:.3f}s",
            }
        if not quota.rps:
            return headers
        return headers | {
            "x-ratelimit-limit-requests": f"{quota.rps:g}",
            "x-ratelimit-remaining-requests": str(max(0, int(self._bucket))),
            # As OpenAI's: the time until the quota is whole again.
            "x-ratelimit-reset-requests": f"{(quota.rps - self._bucket) / quota.rps:.3f}s",
        }

    def _pick(self) -> Fault:
        index = self.stats.requests - 1
        if index < len(self.config.script):
            return self.config.script[index]
        roll = self._random.random()
        for fault, rate in self.config.rates.items():
            if roll < rate:
                return fault
            roll -= rate
        return "ok"

    async def handle(
        self, method: str, path: str, body: bytes, key: str = ""
    ) -> tuple[int, dict, bytes] | str:
        """Answer (status, headers, body), or "reset"/"hang" for the connection to act out.

        `key` is the request's bearer token, which the server quotes when `echo_credentials`.
        """
        path = path.split("?", 1)[0]
        if method == "GET" and path == "/health":
            return _json(200, {"status": "ok"})
        if method == "GET" and path == "/stats":
            return _json(200, self.stats.as_dict() | {"batches": self.batches.stats()})
        if method == "PUT" and path == "/config":
            self.configure(FaultConfig.model_validate_json(body))
            return _json(200, self.config.model_dump())
        if method == "PUT" and path == "/quota":
            self.set_quota(Quota.model_validate_json(body) if body.strip() != b"null" else None)
            return _json(200, self.config.model_dump())
        if method == "GET" and path == "/v1/models":
            listed = [{"id": m, "object": "model"} for m in self.config.models]
            return _json(200, {"object": "list", "data": listed})
        if method == "POST" and path == "/v1/chat/completions":
            return await self._chat(body, key)
        echoed = key if self.config.echo_credentials else None
        if (batch_answer := self.batches.handle(method, path, body, echoed)) is not None:
            return batch_answer
        if method == "POST" and path == "/tokenize" and self.config.tokenize:
            return await self._chat(body, key, tokenize=True)
        return _json(404, {"error": {"message": f"no route {method} {path}", "type": "not_found"}})

    async def _chat(
        self, body: bytes, key: str, *, tokenize: bool = False
    ) -> tuple[int, dict, bytes] | str:
        stats = self.stats
        stats.requests += 1
        stats.prompts[_digest(body)] += 1
        stats.arrivals.append(round(time.monotonic() - stats.started, 6))
        stats.in_flight += 1
        stats.max_in_flight = max(stats.max_in_flight, stats.in_flight)
        try:
            if (refused := self._over_quota(body)) is not None:
                return refused
            fault = self._pick()
            stats.faults[fault] += 1
            if self.config.latency_ms:
                await asyncio.sleep(self.config.latency_ms / 1000)
            if fault == "hang":
                await asyncio.sleep(self.config.hang_seconds)
                return "reset"
            if fault == "reset":
                return "reset"
            if fault == "malformed":
                return 200, {"content-type": "application/json"}, b'{"id": "x", "choices": [{'
            if fault in ("400", "401", "403", "429", "500", "503"):
                echoed = key if self.config.echo_credentials else None
                return _error(int(fault), self.config.retry_after, echoed)
            request = json.loads(body or b"{}")
            if not tokenize:
                stats.params.append({k: v for k, v in request.items() if k != "messages"})
            if tokenize:
                words = str(request.get("content", "")).split()
                return _json(200, {"tokens": [{"id": i, "piece": w} for i, w in enumerate(words)]})
            wants = (request.get("response_format") or {}).get("type")
            if self.config.refuse_json_schema and wants == "json_schema":
                return _json(
                    400,
                    {
                        "error": {
                            "message": "response_format json_schema is not supported",
                            "type": "invalid_request_error",
                        }
                    },
                )
            script = self.config.tools
            if script is not None and (refused_tools := refusal(request, script)) is not None:
                return _json(400, refused_tools)
            scripted = scripted_message(request, script) if script is not None else None
            content = "I am not JSON at all." if fault == "invalid" else _answer(request)
            completion = _completion(request, content, cut=self.config.cut_answers)
            if scripted is not None and fault != "invalid":
                completion["choices"][0]["message"] = scripted
                completion["choices"][0]["finish_reason"] = (
                    "tool_calls" if scripted.get("tool_calls") else "stop"
                )
            if request.get("logprobs") and self.config.logprobs and fault != "invalid":
                completion["choices"][0]["logprobs"] = _logprobs(content, request)
            if request.get("stream"):
                return 200, {"content-type": "text/event-stream"}, _sse(completion)
            return _json(200, completion, self.quota_headers())
        finally:
            stats.in_flight -= 1


def _digest(body: bytes) -> str:
    """A short name for the request's conversation (its messages), whatever else it asks."""
    try:
        messages = json.loads(body or b"{}").get("messages")
    except (ValueError, AttributeError):
        messages = None
    return hashlib.sha1(json.dumps(messages, sort_keys=True).encode()).hexdigest()[:16]


def _answer(request: dict[str, Any]) -> str:
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


def _completion(request: dict[str, Any], content: str, cut: bool = False) -> dict[str, Any]:
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


def _logprobs(content: str, request: dict[str, Any]) -> dict[str, Any]:
    """OpenAI's `logprobs` for the answer's first word: itself most likely, then the three
    sentiment labels (a model's first token is often not a label), cut to `top_logprobs`."""
    first = content.split(" ", 1)[0]
    ranked = [(first, -0.4), *LABEL_LOGPROBS]
    top = [{"token": t, "logprob": p} for t, p in ranked[: int(request.get("top_logprobs") or 0)]]
    return {"content": [{"token": first, "logprob": -0.4, "top_logprobs": top}]}


def _sse(completion: dict[str, Any]) -> bytes:
    """The completion as OpenAI's stream: a chunk per word, a usage chunk, then [DONE]."""
    base = {k: completion[k] for k in ("id", "created", "model")} | {
        "object": "chat.completion.chunk"
    }
    words = completion["choices"][0]["message"]["content"].split(" ")
    pieces = [w if i == 0 else " " + w for i, w in enumerate(words)]
    events = [
        base | {"choices": [{"index": 0, "delta": {"content": p}, "finish_reason": None}]}
        for p in pieces
    ]
    finish = completion["choices"][0]["finish_reason"]
    events.append(base | {"choices": [{"index": 0, "delta": {}, "finish_reason": finish}]})
    events.append(base | {"choices": [], "usage": completion["usage"]})
    return b"".join(f"data: {json.dumps(e)}\n\n".encode() for e in events) + b"data: [DONE]\n\n"


def _json(status: int, payload: Any, headers: dict | None = None) -> tuple[int, dict, bytes]:
    return (
        status,
        {"content-type": "application/json", **(headers or {})},
        json.dumps(payload).encode(),
    )


def _error(status: int, retry_after: float | None, echoed: str | None) -> tuple[int, dict, bytes]:
    headers = {}
    if status in (429, 503) and retry_after is not None:
        headers["retry-after"] = f"{retry_after:g}"
    message = {
        400: "bad request: 'messages' does not match the message schema",
        401: "invalid api key",
        403: "forbidden",
        429: "rate limit exceeded",
    }.get(status, "server error")
    if echoed is not None:
        message += f": Incorrect API key provided: {echoed} (Authorization: Bearer {echoed})"
        headers["x-echoed-authorization"] = f"Bearer {echoed}"
    return _json(status, {"error": {"message": message, "type": str(status)}}, headers)


async def _serve_connection(
    app: FaultApp, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
) -> None:
    conn = h11.Connection(h11.SERVER)
    try:
        while True:
            request, body = None, bytearray()
            while True:
                event = conn.next_event()
                if event is h11.NEED_DATA:
                    conn.receive_data(await reader.read(65536))
                elif isinstance(event, h11.Request):
                    request = event
                elif isinstance(event, h11.Data):
                    body += event.data
                elif isinstance(event, h11.EndOfMessage):
                    break
                elif isinstance(event, h11.ConnectionClosed):
                    return
            assert request is not None  # h11 gives the request before its end of message
            auth = dict(request.headers).get(b"authorization", b"").decode("latin-1")
            key = auth.partition(" ")[2]
            work = app.handle(request.method.decode(), request.target.decode(), bytes(body), key)
            answer = await _unless_client_leaves(app, conn, reader, work)
            if answer is None:  # the client hung up first: its request was cancelled
                return
            if isinstance(answer, str):  # "reset": drop the connection without a word
                writer.transport.abort()
                return
            status, headers, payload = answer
            sent = [*headers.items(), ("content-length", str(len(payload)))]
            writer.write(conn.send(h11.Response(status_code=status, headers=sent)))
            writer.write(conn.send(h11.Data(data=payload)))
            writer.write(conn.send(h11.EndOfMessage()))
            await writer.drain()
            if conn.our_state is h11.MUST_CLOSE:
                return
            conn.start_next_cycle()
    except (ConnectionError, h11.RemoteProtocolError, asyncio.IncompleteReadError):
        return
    finally:
        writer.close()


async def _unless_client_leaves(
    app: FaultApp,
    conn: h11.Connection,
    reader: asyncio.StreamReader,
    work: Awaitable[tuple[int, dict[str, str], bytes] | str],
) -> tuple[int, dict[str, str], bytes] | str | None:
    """Run the handler, but cancel it if the client closes the connection meanwhile (as a
    cancelled LLM call does), so that in-flight counts show cancellation for real."""
    handler = asyncio.ensure_future(work)
    while True:
        watcher = asyncio.ensure_future(reader.read(65536))
        done, _ = await asyncio.wait({handler, watcher}, return_when=asyncio.FIRST_COMPLETED)
        if handler in done:
            watcher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await watcher  # the stream allows one reader at a time: let this one finish
            return handler.result()
        data = watcher.result()
        if data:  # the client's next request, early: keep it for the next cycle
            conn.receive_data(data)
            continue
        handler.cancel()
        app.stats.cancelled += 1
        return None


async def serve(config: FaultConfig, host: str = "127.0.0.1", port: int = 0) -> None:
    app = FaultApp(config)
    server = await asyncio.start_server(
        lambda r, w: _serve_connection(app, r, w), host, port, backlog=1024
    )
    bound = server.sockets[0].getsockname()[1]
    print(f"fault server listening on http://{host}:{bound}", flush=True)
    async with server:
        await server.serve_forever()


class FaultServer:
    """Start the fault server in a child process; use as a context manager.

    >>> with FaultServer(FaultConfig(rates={"429": 0.3})) as server:
    ...     endpoint = Endpoint(server.url, "fault")
    """

    def __init__(
        self, config: FaultConfig | None = None, *, startup_timeout: float = 30.0, **kwargs: Any
    ) -> None:
        self.config = config or FaultConfig(**kwargs)
        self.startup_timeout = startup_timeout
        """Seconds the child may take to say it listens; then it is stopped and start fails."""
        self._process: subprocess.Popen | None = None
        self.port: int | None = None

    @property
    def url(self) -> str:
        """The OpenAI base URL (with /v1)."""
        return f"http://127.0.0.1:{self.port}/v1"

    @property
    def root(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> FaultServer:
        self._process = subprocess.Popen(
            [sys.executable, "-m", "anabranch", "fault-server",
             "--port", "0", "--config", self.config.model_dump_json()],
            stdout=subprocess.PIPE,
            text=True,
        )  # fmt: skip
        assert self._process.stdout is not None
        ready, _, _ = select.select([self._process.stdout], [], [], self.startup_timeout)
        line = self._process.stdout.readline() if ready else "(nothing within the timeout)"
        if "listening on" not in line:
            self.stop()
            raise SetupError(f"fault server did not start: {line!r}")
        self.port = int(line.rsplit(":", 1)[1])
        return self

    def stop(self) -> None:
        if self._process is not None:
            stop_process(self._process, grace=5)
            self._process = None

    def configure(self, config: FaultConfig | None = None, **kwargs: Any) -> None:
        """Replace the behaviour and zero the counters."""
        self.config = config or FaultConfig(**kwargs)
        request = urllib.request.Request(
            f"{self.root}/config", data=self.config.model_dump_json().encode(), method="PUT"
        )
        with urllib.request.urlopen(request, timeout=10):
            pass

    def set_quota(self, quota: Quota | None) -> None:
        """Change the server's capacity now, keeping its counters."""
        self.config.quota = quota
        request = urllib.request.Request(
            f"{self.root}/quota",
            data=quota.model_dump_json().encode() if quota else b"null",
            method="PUT",
        )
        with urllib.request.urlopen(request, timeout=10):
            pass

    def stats(self) -> dict[str, Any]:
        with urllib.request.urlopen(f"{self.root}/stats", timeout=10) as response:
            return json.load(response)

    def __enter__(self) -> FaultServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
