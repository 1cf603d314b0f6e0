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
import json
import random
import select
import subprocess
import sys
import time
import urllib.request
from collections import Counter, deque
from dataclasses import dataclass, field
from typing import Any

from anabranch.errors import SetupError
from anabranch.llm.local_server import stop_process
from anabranch.testing.fault_batches import BatchApi
from anabranch.testing.fault_bodies import (
    LABEL_LOGPROBS,
    Act,
    acted,
    completion_body,
    digest,
    echo_answer,
    error_reply,
    json_reply,
    logprobs_for,
    looping_answer,
    padded,
    sse_body,
)
from anabranch.testing.fault_config import Fault, FaultConfig, Quota
from anabranch.testing.fault_http import serve_connection
from anabranch.testing.fault_tools import refusal, scripted_message

__all__ = ["LABEL_LOGPROBS", "FaultConfig", "FaultServer", "Quota", "serve"]


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
        self._slots = asyncio.Semaphore(config.slots) if config.slots else None
        self.set_quota(config.quota)
        self.batches = BatchApi(config.batches, self._batch_answer)

    def _batch_answer(self, request: dict[str, Any], invalid: bool) -> dict[str, Any]:
        """A batch's answer to one request: what a live chat would get."""
        content = "I am not JSON at all." if invalid else echo_answer(request)
        completion = completion_body(request, content, cut=self.config.cut_answers)
        if request.get("logprobs") and self.config.logprobs and not invalid:
            completion["choices"][0]["logprobs"] = logprobs_for(content, request)
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
        status, headers, payload = error_reply(429, self.config, None, wait=max(wait, 0.05))
        return status, {**headers, **self.quota_headers()}, payload

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

    def _down(self) -> Fault | None:
        """A server that hangs or drops its connections does so on every route, its cheap ones
        (/health, /v1/models) included, at the same rates; its HTTP errors are chat's alone."""
        if not any(self.config.rates.get(f) for f in ("hang", "reset")):
            return None
        roll = self._random.random()
        for fault in ("hang", "reset"):
            rate = self.config.rates.get(fault, 0.0)
            if roll < rate:
                return fault
            roll -= rate
        return None

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
    ) -> tuple[int, dict, bytes] | str | Act:
        """Answer (status, headers, body), "reset" for the connection to drop, or an `Act` for
        it to play out (a drip, a cut, a close-delimited stream, a huge body).

        `key` is the request's bearer token, which the server quotes when `echo_credentials`.
        """
        path = path.split("?", 1)[0]
        if method == "GET" and path in ("/health", "/v1/models") and (down := self._down()):
            if down == "hang":
                await asyncio.sleep(self.config.hang_seconds)
            return "reset"
        if method == "GET" and path == "/health":
            return json_reply(200, {"status": "ok"})
        if method == "GET" and path == "/stats":
            return json_reply(200, self.stats.as_dict() | {"batches": self.batches.stats()})
        if method == "PUT" and path == "/config":
            self.configure(FaultConfig.model_validate_json(body))
            return json_reply(200, self.config.model_dump())
        if method == "PUT" and path == "/quota":
            self.set_quota(Quota.model_validate_json(body) if body.strip() != b"null" else None)
            return json_reply(200, self.config.model_dump())
        if method == "GET" and path == "/v1/models":
            listed = [{"id": m, "object": "model"} for m in self.config.models]
            return json_reply(200, {"object": "list", "data": listed})
        if method == "POST" and path == "/v1/chat/completions":
            return await self._chat(body, key)
        echoed = key if self.config.echo_credentials else None
        if (batch_answer := self.batches.handle(method, path, body, echoed)) is not None:
            return batch_answer
        if method == "POST" and path == "/tokenize" and self.config.tokenize:
            return await self._chat(body, key, tokenize=True)
        return json_reply(
            404, {"error": {"message": f"no route {method} {path}", "type": "not_found"}}
        )

    async def _chat(
        self, body: bytes, key: str, *, tokenize: bool = False
    ) -> tuple[int, dict, bytes] | str | Act:
        stats = self.stats
        stats.requests += 1
        stats.prompts[digest(body)] += 1
        stats.arrivals.append(round(time.monotonic() - stats.started, 6))
        stats.in_flight += 1
        stats.max_in_flight = max(stats.max_in_flight, stats.in_flight)
        held = None
        try:
            if (refused := self._over_quota(body)) is not None:
                return refused
            fault = self._pick()
            stats.faults[fault] += 1
            if self._slots is not None:
                await self._slots.acquire()
                held = self._slots
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
                return error_reply(int(fault), self.config, echoed)
            request = json.loads(body or b"{}")
            if not tokenize:
                stats.params.append({k: v for k, v in request.items() if k != "messages"})
            if tokenize:
                words = str(request.get("content", "")).split()
                return json_reply(
                    200, {"tokens": [{"id": i, "piece": w} for i, w in enumerate(words)]}
                )
            wants = (request.get("response_format") or {}).get("type")
            refuses = {"json_schema": self.config.refuse_json_schema,
                        "json_object": self.config.refuse_json_object}  # fmt: skip
            if refuses.get(wants or ""):
                return json_reply(
                    400,
                    {
                        "error": {
                            "message": f"response_format {wants} is not supported",
                            "type": "invalid_request_error",
                        }
                    },
                )
            script = self.config.tools
            if script is not None and (refused_tools := refusal(request, script)) is not None:
                return json_reply(400, refused_tools)
            scripted = scripted_message(request, script) if script is not None else None
            content = "I am not JSON at all." if fault == "invalid" else echo_answer(request)
            if fault == "repeat":
                content = looping_answer(request)
            cut = self.config.cut_answers or fault == "repeat"
            completion = completion_body(request, content, cut=cut)
            if self.config.ms_per_token:
                tokens = completion["usage"]["completion_tokens"]
                await asyncio.sleep(self.config.ms_per_token * tokens / 1000)
            if scripted is not None and fault != "invalid":
                completion["choices"][0]["message"] = scripted
                completion["choices"][0]["finish_reason"] = (
                    "tool_calls" if scripted.get("tool_calls") else "stop"
                )
            if request.get("logprobs") and self.config.logprobs and fault != "invalid":
                completion["choices"][0]["logprobs"] = logprobs_for(content, request)
            if request.get("stream"):
                events = sse_body(completion, cut=fault == "stream_cut")
                if fault == "stream_cut":
                    return Act({"content-type": "text/event-stream"}, [events], length=None)
                return acted(fault, self.config, 200, {"content-type": "text/event-stream"},
                              [events])  # fmt: skip
            headers = {"content-type": "application/json", **self.quota_headers()}
            reply = acted(fault, self.config, 200, headers, padded(completion, self.config))
            if isinstance(reply, Act) and self.config.answer_framing == "close":
                reply.length = None
            return reply
        finally:
            stats.in_flight -= 1
            if held is not None:
                held.release()


async def serve(config: FaultConfig, host: str = "127.0.0.1", port: int = 0) -> None:
    app = FaultApp(config)
    server = await asyncio.start_server(
        lambda r, w: serve_connection(app, r, w), host, port, backlog=1024
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
