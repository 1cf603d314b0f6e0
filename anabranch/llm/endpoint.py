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

import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar
from urllib.parse import urlsplit

import openai
from pydantic import BaseModel, SecretStr, ValidationError

from anabranch.errors import ConfigError, LLMOutputError, LLMStatusError
from anabranch.llm.adaptive import SlotStats
from anabranch.llm.batch_api import BatchLayer
from anabranch.llm.cache import ResponseCache
from anabranch.llm.limits import CallLimiter
from anabranch.llm.retry import Retrier, Tally, retry_after, short
from anabranch.llm.settings import BatchSettings, Limits, RetryPolicy, Sampling, Timeouts
from anabranch.llm.structured import (
    OutputMode,
    next_mode,
    response_format,
    validate,
    with_schema_prompt,
)
from anabranch.llm.transport import Answer, Tokens, Transport
from anabranch.redact import public_url, register_secret
from anabranch.telemetry.llm import first_chunk, llm_call
from anabranch.tools.tokenizer import count_tokens, readable_pieces
from anabranch.types import BatchReport, Usage

T = TypeVar("T", bound=BaseModel)


@dataclass(slots=True)
class Completion:
    """One chat answer and what it cost, retries included."""

    text: str
    usage: Usage
    attempts: int
    """Requests sent for it, the first included."""
    latency_s: float
    finish_reason: str | None = None
    alternatives: tuple[tuple[str, float], ...] = ()
    """The likeliest first tokens and their log probabilities (asked for with `top_logprobs`)."""
    tool_calls: tuple[dict[str, Any], ...] = ()
    """The tools the model called (asked for with `tools`), in the server's JSON form."""

    @property
    def answer(self) -> Answer:
        """The answer as the transport gave it, for the cache."""
        tokens = Tokens(self.usage.prompt_tokens, self.usage.completion_tokens)
        return Answer(self.text, tokens, self.finish_reason, self.alternatives)


@dataclass(slots=True)
class Parsed(Generic[T]):
    """A validated structured answer and what it cost, repair re-ask included."""

    value: T
    usage: Usage
    attempts: int
    latency_s: float


def normalize_base_url(url: str) -> str:
    """`http://host:11434` means the server's OpenAI API, which lives under /v1.

    A URL with a path of its own is taken as given (some gateways mount the API elsewhere).
    Anything but an http(s) URL with a host is a configuration mistake, refused here rather than
    failing once per request.
    """
    parts = urlsplit(url.strip())
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ConfigError(
            f"not an http(s) URL with a host: {public_url(url)!r} "
            "(expected, e.g., http://localhost:11434 or https://api.openai.com/v1)"
        )
    url = url.strip().rstrip("/")
    return url + "/v1" if parts.path in ("", "/") else url


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
        self._limiter = CallLimiter(self.limits, public_url(self.base_url))
        self._transport = Transport(
            self.base_url,
            self.api_key,
            self.timeouts,
            on_headers=self._limiter.observe,
            connections=self.limits.concurrency,
        )
        self._retrier = Retrier(self.retry, self.timeouts)
        self._output_mode: OutputMode = "json_schema"
        self._has_tokenize: bool | None = None
        self.tools_native: bool = True
        """Whether the server takes `tools`; the tool loop learns it (agents/prompted_tools.py)."""
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
    def output_mode(self) -> OutputMode:
        """How `parse` asks for JSON: learned from the server, which may refuse `json_schema`."""
        return self._output_mode

    @property
    def batch_report(self) -> BatchReport | None:
        """What went by batch so far, when the endpoint sends by batch."""
        return self._batches.report if self._batches is not None else None

    async def aclose(self) -> None:
        if self._batches is not None:
            await self._batches.aclose()
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
            completion = _completion_of(answer, sent, time.perf_counter() - began)
        else:
            completion = await self._call(params, lambda: self._transport.chat(params))
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
        return await self._call(params, lambda: self._transport.stream(params, heard))

    async def _live(self, params: dict[str, Any]) -> tuple[Answer, int]:
        """A request through the live layers, for the batch layer's `live_fallback`."""
        completion = await self._call(params, lambda: self._transport.chat(params))
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

    def _forget(self, messages: list[dict[str, Any]], mode: OutputMode, schema: type[BaseModel],
                temperature: float | None, max_tokens: int | None) -> None:  # fmt: skip
        """Drop a cached answer that failed validation: a retry must ask the model again."""
        if self.cache is not None:
            params = self._params(messages, temperature, max_tokens, None,
                                  response_format(schema, mode))  # fmt: skip
            if (key := self.cache.key(self.base_url, params)) is not None:
                self.cache.discard(key)

    async def _call(
        self, params: dict[str, Any], send: Callable[[], Awaitable[Answer]]
    ) -> Completion:
        """Run `send` through the layers (limits -> retry -> transport); account for its cost."""
        limiter = self._limiter
        estimate = 0
        tally = Tally()

        async def attempt() -> Answer:
            nonlocal estimate
            if not estimate and limiter.counts_tokens:  # known once a slot is held
                estimate = _estimate_tokens(params["messages"]) + params["max_tokens"]
            await limiter.pace(estimate)
            tally.sent += 1
            call.sending()
            began = time.perf_counter()
            try:
                answer = await send()
            except Exception as exc:
                call.failed(exc)
                if _unhealthy(exc):
                    wait = retry_after(exc)
                    capped = None if wait is None else min(wait, self.retry.max_retry_after)
                    limiter.failed(overloaded=_overloaded(exc), retry_after=capped)
                raise
            used = answer.tokens.completion if answer.tokens else 0
            limiter.succeeded(time.perf_counter() - began, used)
            return answer

        call = llm_call(self.base_url, lambda: limiter.slots.limit, params)
        async with limiter.slot():
            start = time.perf_counter()
            await limiter.breaker.admit()  # a server that is down: wait here, off the deadline
            with call:  # the chat span, the metrics and the run's timeline (telemetry/)
                answer = await self._retrier.run(attempt, tally)
                call.answered(answer)
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
        """JSON matching `schema`, validated; invalid JSON gets one re-ask showing the error."""
        start = time.perf_counter()
        completion, sent, mode = await self._chat_structured(
            messages, schema, temperature, max_tokens
        )
        usage, attempts = completion.usage, completion.attempts
        try:
            value = validate(completion.text, schema)
        except ValueError as first_error:
            self._forget(sent, mode, schema, temperature, max_tokens)
            repair = [
                *sent,
                {"role": "assistant", "content": completion.text},
                {
                    "role": "user",
                    "content": "That answer is not valid JSON for the schema: "
                    f"{short(first_error)}. Reply again with only the corrected JSON.",
                },
            ]
            completion = await self.chat(
                repair,
                response_format=response_format(schema, mode),
                temperature=temperature,
                max_tokens=max_tokens,
            )
            usage, attempts = usage + completion.usage, attempts + completion.attempts
            try:
                value = validate(completion.text, schema)
            except (ValidationError, ValueError) as exc:
                self._forget(repair, mode, schema, temperature, max_tokens)
                raise LLMOutputError(
                    f"{schema.__name__} still invalid after a repair re-ask: {short(exc)}",
                    attempts=attempts,
                    usage=usage,
                ) from exc
        return Parsed(value, usage, attempts, time.perf_counter() - start)

    async def _chat_structured(
        self,
        messages: list[dict[str, Any]],
        schema: type[BaseModel],
        temperature: float | None,
        max_tokens: int | None,
    ) -> tuple[Completion, list[dict[str, Any]], OutputMode]:
        """Try the learned output mode; a refusal of that mode moves every later call down.

        Returns the answer, the messages sent (the schema prompt included) and the mode used.
        """
        while True:
            mode = self._output_mode
            sent = with_schema_prompt(messages, schema, mode)
            try:
                completion = await self.chat(
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
                self._output_mode = fallback

    # -- tokenizer ------------------------------------------------------------------------------

    async def tokenize(self, text: str) -> tuple[list[str], int] | None:
        """The model's own tokens (readable pieces, and their count) via the server's /tokenize
        (llama.cpp, vLLM); None if the server has no such route.

        Retried like a chat call; probed once: a server without the route is not asked again.
        """
        if self._has_tokenize is False:
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
                self._has_tokenize = False
                return None
            raise
        self._has_tokenize = True
        tokens = response.get("tokens", []) if isinstance(response, dict) else []
        return readable_pieces([_piece_bytes(t) for t in tokens]), len(tokens)


def _completion_of(answer: Answer, sent: int, latency_s: float) -> Completion:
    """A completion from the answer of its last request, `sent` requests in all."""
    tokens = answer.tokens
    prompt, completion = (tokens.prompt, tokens.completion) if tokens else (0, 0)
    return Completion(
        text=answer.text,
        usage=Usage(requests=sent, prompt_tokens=prompt, completion_tokens=completion),
        attempts=sent,
        latency_s=latency_s,
        finish_reason=answer.finish_reason,
        alternatives=answer.alternatives,
        tool_calls=answer.tool_calls,
    )


def _overloaded(exc: BaseException) -> bool:
    """The server said it has no room: 429, or 503."""
    return isinstance(exc, openai.APIStatusError) and exc.status_code in (429, 503)


def _unhealthy(exc: BaseException) -> bool:
    """A failure that says something about the server's health or load (a 400 says nothing)."""
    if isinstance(exc, openai.APIStatusError):
        return exc.status_code in (429, 503) or exc.status_code >= 500
    return isinstance(exc, openai.APIConnectionError | TimeoutError)


def _estimate_tokens(messages: list[dict[str, Any]]) -> int:
    """Prompt tokens before the call, for the tokens-per-minute limit (corrected after)."""
    return sum(count_tokens(str(m.get("content") or "")) + 4 for m in messages)


def _piece_bytes(token: Any) -> bytes:
    """llama.cpp gives a piece as a string, or as a list of byte values when it is not UTF-8."""
    piece = token.get("piece", "") if isinstance(token, dict) else ""
    return bytes(piece) if isinstance(piece, list) else str(piece).encode()
