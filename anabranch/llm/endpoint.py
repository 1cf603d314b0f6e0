"""An OpenAI-compatible LLM endpoint: the one place where retries, deadlines and limits live.

Any server that speaks the OpenAI chat API works: llama.cpp's server, Ollama, vLLM, OpenAI. A
call goes down through a few layers, each in a module of its own:

    cache      an answer already given to the same request, given again (opt-in)
    limits     a concurrency slot for the call; requests and tokens per minute per attempt
    retry      transient failures only, Retry-After honoured, a deadline for the call
    transport  one attempt through the openai client, with a timeout

`Endpoint` holds the live resources those layers need and composes them; what it is told comes
in frozen settings (`Timeouts`, `RetryPolicy`, `Limits`, `Sampling`).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, TypeVar

import openai
from pydantic import BaseModel, SecretStr

from anabranch.errors import LLMAuthError, LLMStatusError, LLMTimeoutError
from anabranch.llm.adaptive import SlotStats
from anabranch.llm.batch_api import BatchLayer
from anabranch.llm.breaker import CHECK_TIMEOUT
from anabranch.llm.cache import ResponseCache
from anabranch.llm.completion import Completion, completion_of
from anabranch.llm.learnt import Knowledge, Memory, server_key
from anabranch.llm.limits import CallLimiter, estimate_tokens
from anabranch.llm.retry import Retrier, Tally, short
from anabranch.llm.runaway import StreamWatch, asked_again, is_runaway
from anabranch.llm.settings import BatchSettings, Limits, RetryPolicy, Sampling, Timeouts
from anabranch.llm.speed import Speed
from anabranch.llm.structured import OutputMode, Parsed, parse, response_format
from anabranch.llm.transport import Answer, Transport
from anabranch.llm.url import normalize_base_url
from anabranch.redact import public_url, register_secret
from anabranch.telemetry.llm import first_chunk, llm_call
from anabranch.tools.tokenizer import piece_bytes, readable_pieces
from anabranch.types import BatchReport, Usage

T = TypeVar("T", bound=BaseModel)


@dataclass
class Endpoint:
    """An OpenAI-compatible server and the limits that protect it. Share one per server."""

    base_url: str
    """The server's OpenAI API root (`/v1` is added to a bare host)."""
    model: str
    """The model name to ask the server for."""
    api_key: SecretStr = field(default_factory=lambda: SecretStr("not-needed"))
    """Sent as the bearer token; a SecretStr, so it never shows in reprs, logs or reports."""
    timeouts: Timeouts = field(default_factory=Timeouts)
    """Per attempt and per call."""
    retry: RetryPolicy = field(default_factory=RetryPolicy)
    """What is retried, how often, after how long."""
    limits: Limits = field(default_factory=Limits)
    """Concurrency, requests and tokens per minute."""
    sampling: Sampling = field(default_factory=Sampling)
    """Temperature and max_tokens unless a call says otherwise."""
    cache: ResponseCache | None = None
    """Answers already given, given again at no cost (the caller opens and closes it)."""
    batch: BatchSettings | None = None
    """Send chat calls through the provider's Batch API (half the price, answers within 24h)
    instead of live; streams and /tokenize stay live."""

    def __post_init__(self) -> None:
        if isinstance(self.api_key, str):
            self.api_key = SecretStr(self.api_key)
        register_secret(self.api_key.get_secret_value())
        self.base_url = normalize_base_url(self.base_url)
        self._limiter = CallLimiter(self.limits, public_url(self.base_url), self._answers)
        self._transport = Transport(
            self.base_url,
            self.api_key,
            self.timeouts,
            on_headers=self._limiter.observe,
            connections=self.limits.concurrency,
            max_bytes=self.limits.max_response_bytes,
        )
        self._retrier = Retrier(self.retry, self.timeouts)
        self.knowledge = Knowledge()
        """What the endpoint learnt of the server (output mode, logprobs, /tokenize, tools)."""
        self._refused: LLMAuthError | None = None
        self._speed = Speed()
        self._batches = BatchLayer(self.client, self.batch, self._live) if self.batch else None

    @property
    def client(self) -> openai.AsyncOpenAI:
        """The openai client behind the endpoint, for what the endpoint does not wrap (listing
        models, say). Calls made on it bypass the endpoint's limits and retries."""
        return self._transport.client

    @property
    def slot_stats(self) -> SlotStats:
        """The concurrency the endpoint has settled on, its range so far, and the 429s."""
        return self._limiter.slots.stats

    @property
    def public_url(self) -> str:
        """The base URL without credentials, safe to print."""
        return public_url(self.base_url)

    @property
    def server_root(self) -> str:
        """The server's own root, where llama.cpp and vLLM serve /tokenize and /health."""
        return self.base_url.removesuffix("/v1")

    @property
    def refused_key(self) -> LLMAuthError | None:
        """The server's 401 or 403, once it refused the key: the endpoint sends no more."""
        return self._refused

    @property
    def outage(self) -> str | None:
        """While the server is taken for down: since when, and when the endpoint gives up."""
        return self._limiter.breaker.outage

    async def _answers(self) -> bool:
        """The cheap check: does the server answer anything at all (its /health, else
        /v1/models), within a few seconds? A slow server does; a hung or dead one does not."""
        timeout = min(CHECK_TIMEOUT, self.timeouts.attempt)  # both at once: a hung server
        urls = (f"{self.server_root}/health", f"{self.base_url}/models")  # costs one timeout
        return any(await asyncio.gather(*(self._transport.answers(u, timeout) for u in urls)))

    def remember(self, memory: Memory) -> None:
        """Take up what `memory` (a journal) holds of this server and model, and keep there
        what the endpoint learns: the next process does not probe again."""
        self.knowledge.attach(memory, server_key(self.public_url, self.model))

    @property
    def batch_report(self) -> BatchReport | None:
        """What went by batch so far, when the endpoint sends by batch."""
        return self._batches.report if self._batches is not None else None

    async def aclose(self) -> None:
        if self._batches is not None:
            await self._batches.aclose()
        await self._limiter.breaker.aclose()
        await self._transport.aclose()

    async def __aenter__(self) -> Endpoint:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    # -- chat -----------------------------------------------------------------------------------

    async def chat(
        self,
        messages: list[dict[str, Any]],
        *,
        response_format: dict[str, Any] | None = None,
        temperature: float | None = None,
        max_tokens: int | None = None,
        model: str | None = None,
        top_logprobs: int | None = None,
        tools: list[dict[str, Any]] | None = None,
        extra: Mapping[str, Any] | None = None,
    ) -> Completion:
        """One chat completion, retried on transient failures within the deadline.

        `top_logprobs`: also ask for the likeliest first tokens and their log probabilities
        (`Completion.alternatives`). `tools`: functions the model may call
        (`Completion.tool_calls`); an answer that calls one is not cached. `extra`: more of
        OpenAI's request fields (`top_p`, `stop`, `seed`...), sent as given."""
        params = self._params(messages, temperature, max_tokens, model, response_format, extra)
        if tools:
            params["tools"] = tools
        if top_logprobs:
            params["logprobs"] = True
            params["top_logprobs"] = top_logprobs
        key = self.cache.key(self.base_url, params) if self.cache is not None else None
        if self.cache is not None and key is not None:
            start = time.perf_counter()
            if (hit := await self.cache.get(key)) is not None:
                return Completion(
                    text=hit.text,
                    usage=Usage(cached=1),
                    attempts=0,
                    latency_s=time.perf_counter() - start,
                    finish_reason=hit.finish_reason,
                    alternatives=hit.alternatives,
                )
        if self._batches is not None:  # the batch layer takes the place of limits, retry, transport
            began = time.perf_counter()
            answer, sent = await self._batches.chat(params)
            completion = completion_of(answer, sent, time.perf_counter() - began)
        else:
            completion = await self._call(
                params, lambda timeout: self._transport.chat(params, timeout)
            )
            if is_runaway(completion.text, completion.finish_reason) is not None:
                completion = await asked_again(params, completion, lambda again: self._call(
                    again, lambda timeout: self._transport.chat(again, timeout)))  # fmt: skip
        if self.cache is not None and key is not None and not completion.tool_calls:
            self.cache.put(key, completion.answer)
        return completion

    async def stream_chat(
        self,
        messages: list[dict[str, Any]],
        on_text: Callable[[str], None],
        *,
        temperature: float | None = None,
        max_tokens: int | None = None,
        model: str | None = None,
        extra: Mapping[str, Any] | None = None,
    ) -> Completion:
        """A streamed chat completion: `on_text` hears each piece of text as it arrives;
        `extra` as for `chat`.

        The per-attempt timeout is an idle timeout here. A failure before the first piece is
        retried like any call; after it, retrying would repeat text the caller has already
        shown, so the call fails instead.
        """
        params = self._params(messages, temperature, max_tokens, model, extra=extra)
        heard = first_chunk(on_text)  # the time to the first piece, when telemetry is on
        watched = StreamWatch(heard)  # a loop of the model stops the stream (llm/runaway.py)
        return await self._call(params, lambda _: self._transport.stream(params, watched))

    def _bounds(self, params: dict[str, Any]) -> tuple[float, float]:
        """The attempt timeout and the call deadline: the configured ones, or longer if the
        server's measured speed needs it (`llm/speed.py`)."""
        given = self.timeouts
        return self._speed.bounds(given.attempt, given.call, params["max_tokens"], given.stretch)

    async def _live(self, params: dict[str, Any]) -> tuple[Answer, int]:
        """A request through the live layers, for the batch layer's `live_fallback`."""
        completion = await self._call(params, lambda timeout: self._transport.chat(params, timeout))
        return completion.answer, completion.attempts

    def _params(
        self,
        messages: list[dict[str, Any]],
        temperature: float | None,
        max_tokens: int | None,
        model: str | None,
        response_format: dict[str, Any] | None = None,
        extra: Mapping[str, Any] | None = None,
    ) -> dict[str, Any]:
        params = {
            "model": model or self.model,
            "messages": messages,
            "temperature": self.sampling.temperature if temperature is None else temperature,
            "max_tokens": max_tokens or self.sampling.max_tokens,
        }
        if response_format is not None:
            params["response_format"] = response_format
        return {**params, **(extra or {})}

    async def _call(
        self, params: dict[str, Any], send: Callable[[float], Awaitable[Answer]]
    ) -> Completion:
        """Run `send` through the layers (limits -> retry -> transport); account for its cost."""
        limiter = self._limiter
        estimate = 0
        tally = Tally()
        budget = granted = self._bounds(params)[1]
        if self._refused is not None:  # the same key, refused for every request: not sent
            raise LLMAuthError(str(self._refused), attempts=0, status=self._refused.status)

        async def attempt() -> Answer:
            nonlocal estimate, granted
            if not estimate and limiter.counts_tokens:  # known once a slot is held
                estimate = estimate_tokens(params["messages"]) + params["max_tokens"]
            await limiter.pace(estimate)
            if self._refused is not None:  # refused while this call waited to retry: not sent
                raise LLMAuthError(str(self._refused), attempts=tally.sent,
                                   status=self._refused.status)  # fmt: skip
            tally.sent += 1
            call.sending()
            began = time.perf_counter()
            each, deadline = self._bounds(params)  # the speed may have been measured since
            if deadline > granted:
                tally.extend(deadline - granted)
                granted = deadline
            # ending just before the call's deadline: an attempt the deadline cut was a
            # cancellation, which the breaker never heard
            left = limiter.breaker.bound(tally.left())
            timeout = each if left is None else max(0.001, min(each, left - 0.01))
            try:
                with limiter.sending(timeout):
                    answer = await send(timeout)
            except Exception as exc:
                tally.last = exc
                call.failed(exc)
                if isinstance(exc, openai.APIStatusError) and exc.status_code in (401, 403):
                    self._refused = LLMAuthError(
                        f"the server at {self.public_url} refused the API key "
                        f"(HTTP {exc.status_code}: {short(exc.message, 160)})",
                        attempts=tally.sent,
                        status=exc.status_code,
                    )
                    limiter.breaker.stop()  # calls waiting on it are let through, to fail
                    raise self._refused from exc
                limiter.heard(exc, self.retry.max_retry_after, time.perf_counter() - began)
                raise
            used = answer.tokens.completion if answer.tokens else 0
            limiter.succeeded(time.perf_counter() - began, used)
            self._speed.answered(time.perf_counter() - began, used)
            return answer

        call = llm_call(self.base_url, lambda: limiter.slots.limit, params)
        start = time.perf_counter()
        if limiter.breaker.outage is not None:  # a server that is down: wait here, slot-free,
            try:  # within the call's deadline (--deadline bounds a call's whole life)
                async with asyncio.timeout(budget):
                    await limiter.breaker.admit()
            except TimeoutError:
                raise limiter.breaker.unavailable(
                    f"the call's deadline ({budget:g} s) passed while waiting for it"
                ) from None
            budget -= time.perf_counter() - start
        async with limiter.slot():
            try:
                with call:  # the chat span, the metrics and the run's timeline (telemetry/)
                    answer = await self._retrier.run(attempt, tally, limiter.lend, budget=budget)
                    call.answered(answer)
            except LLMTimeoutError as exc:
                if limiter.breaker.outage is not None:  # it ended waiting for a down server
                    raise limiter.breaker.unavailable(
                        f"the call's deadline ({granted:g} s) passed while waiting for it",
                        attempts=tally.sent,
                    ) from exc
                raise
        tokens = answer.tokens
        prompt, completion = (tokens.prompt, tokens.completion) if tokens else (0, 0)
        if tokens:
            limiter.settle(prompt + completion, estimate)
        return Completion(
            text=answer.text,
            usage=Usage(requests=tally.sent, prompt_tokens=prompt, completion_tokens=completion),
            attempts=tally.sent,
            latency_s=time.perf_counter() - start,
            finish_reason=answer.finish_reason,
            alternatives=answer.alternatives,
            tool_calls=answer.tool_calls,
        )

    # -- structured output ----------------------------------------------------------------------

    async def parse(
        self,
        messages: list[dict[str, Any]],
        schema: type[T],
        *,
        temperature: float | None = None,
        max_tokens: int | None = None,
    ) -> Parsed[T]:
        """JSON matching `schema`, validated; invalid JSON gets one re-ask showing the error
        (`structured.parse`)."""
        return await parse(self, messages, schema, temperature=temperature, max_tokens=max_tokens)

    def forget(self, messages: list[dict[str, Any]], mode: OutputMode, schema: type[BaseModel],
               temperature: float | None, max_tokens: int | None) -> None:  # fmt: skip
        """Drop a cached answer that failed validation: a retry must ask the model again."""
        if self.cache is not None:
            params = self._params(messages, temperature, max_tokens, None,
                                  response_format(schema, mode))  # fmt: skip
            if (key := self.cache.key(self.base_url, params)) is not None:
                self.cache.discard(key)

    # -- tokenizer ------------------------------------------------------------------------------

    async def tokenize(self, text: str) -> tuple[list[str], int] | None:
        """The model's own tokens (readable pieces, and their count) via the server's /tokenize
        (llama.cpp, vLLM); None if the server has no such route.

        Retried like a chat call; probed once: a server without the route is not asked again.
        """
        if self.knowledge.now.tokenize is False:
            return None
        body = {"content": text, "with_pieces": True, "model": self.model}
        tally = Tally()

        async def attempt() -> Any:
            tally.sent += 1
            return await self._transport.post(f"{self.server_root}/tokenize", body)

        try:
            async with self._limiter.slot():
                response = await self._retrier.run(attempt, tally)
        except LLMStatusError as exc:
            if exc.status in (404, 405, 501):
                self.knowledge.learn(tokenize=False)
                return None
            raise
        self.knowledge.learn(tokenize=True)
        tokens = response.get("tokens", []) if isinstance(response, dict) else []
        return readable_pieces([piece_bytes(t) for t in tokens]), len(tokens)
