"""An OpenAI-compatible LLM endpoint: the one place where retries, deadlines and limits live.

Any server that speaks the OpenAI chat API works: llama.cpp's server, Ollama, vLLM, OpenAI. The
`openai` client runs with its own retries off; tenacity retries here, and only what is transient
(DESIGN rule 2). Each attempt has a timeout and the whole call a deadline (rule 3). The concurrency
cap and the rate limits are held by the endpoint, so every agent sharing it shares them (rule 4).
"""

from __future__ import annotations

import asyncio
import json
import re
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from email.utils import parsedate_to_datetime
from typing import Any, Generic, Literal, TypeVar
from urllib.parse import urlsplit

import openai
from pydantic import BaseModel, SecretStr, ValidationError
from tenacity import (
    AsyncRetrying,
    RetryCallState,
    retry_if_exception,
    stop_after_attempt,
    stop_before_delay,
    wait_exponential_jitter,
)

from anabranch.errors import (
    LLMConnectionError,
    LLMError,
    LLMOutputError,
    LLMRateLimitError,
    LLMStatusError,
    LLMTimeoutError,
)
from anabranch.redact import public_url, register_secret
from anabranch.tools.limits import RateLimiter
from anabranch.tools.tokenizer import count_tokens, readable_pieces
from anabranch.types import Usage

T = TypeVar("T", bound=BaseModel)

TRANSIENT_STATUS = frozenset({408, 409, 429}) | frozenset(range(500, 600))
"""Statuses worth another attempt. 400/401/403/404/422 never are: the same request fails again."""

OutputMode = Literal["json_schema", "json_object", "prompted"]
"""How structured output is asked for, best first; an endpoint falls back when a server refuses."""

_MODES: tuple[OutputMode, ...] = ("json_schema", "json_object", "prompted")
_FENCE = re.compile(r"^\s*```(?:json)?\s*(.*?)\s*```\s*$", re.DOTALL)


@dataclass(slots=True)
class Completion:
    """One chat answer and what it cost, retries included."""

    text: str
    usage: Usage
    attempts: int
    latency_s: float
    finish_reason: str | None = None


@dataclass(slots=True)
class _Answer:
    """What one successful attempt brought back, before accounting."""

    text: str
    usage: Any
    finish_reason: str | None


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
    """
    url = url.rstrip("/")
    return url + "/v1" if urlsplit(url).path in ("", "/") else url


@dataclass
class Endpoint:
    """An OpenAI-compatible server and the limits that protect it. Share one per server."""

    base_url: str
    model: str
    api_key: SecretStr = field(default_factory=lambda: SecretStr("not-needed"))
    """Sent as the bearer token; a SecretStr, so it never shows in reprs, logs or reports."""
    timeout: float = 60.0
    """Seconds one attempt may take."""
    deadline: float = 180.0
    """Seconds a whole call may take, retries and waits included."""
    max_attempts: int = 4
    concurrency: int = 8
    """Requests in flight at once (llama.cpp's server runs 8 slots by default here)."""
    rpm: float | None = None
    """Requests per minute, if the server has a quota."""
    tpm: float | None = None
    """Tokens (prompt + completion) per minute, if the server has a quota."""
    max_retry_after: float = 30.0
    """The longest Retry-After honoured; a longer one is waited only this long."""
    backoff_initial: float = 0.5
    backoff_max: float = 8.0
    temperature: float = 0.0
    max_tokens: int = 256
    output_mode: OutputMode = "json_schema"
    """Where `parse` starts; it moves down by itself when the server refuses a mode."""

    def __post_init__(self) -> None:
        if isinstance(self.api_key, str):
            self.api_key = SecretStr(self.api_key)
        register_secret(self.api_key.get_secret_value())
        self.base_url = normalize_base_url(self.base_url)
        self._client = openai.AsyncOpenAI(
            base_url=self.base_url,
            api_key=self.api_key.get_secret_value(),
            max_retries=0,  # one retry layer: ours
            timeout=self.timeout,
        )
        self._slots = asyncio.Semaphore(self.concurrency)
        self._rpm = RateLimiter(self.rpm) if self.rpm else None
        self._tpm = RateLimiter(self.tpm) if self.tpm else None
        self._has_tokenize: bool | None = None

    @property
    def public_url(self) -> str:
        """The base URL without credentials, safe to print."""
        return public_url(self.base_url)

    @property
    def server_root(self) -> str:
        """The server's own root, where llama.cpp and vLLM serve /tokenize and /health."""
        return self.base_url.removesuffix("/v1")

    async def aclose(self) -> None:
        await self._client.close()

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
    ) -> Completion:
        """One chat completion, retried on transient failures within the deadline."""
        params = self._params(messages, temperature, max_tokens, model)
        if response_format is not None:
            params["response_format"] = response_format

        async def send() -> _Answer:
            async with asyncio.timeout(self.timeout):
                response = await self._client.chat.completions.create(**params)
            choice = response.choices[0] if response.choices else None
            return _Answer(
                text=(choice.message.content or "") if choice else "",
                usage=response.usage,
                finish_reason=choice.finish_reason if choice else None,
            )

        return await self._call(params, send)

    async def stream_chat(
        self,
        messages: list[dict[str, Any]],
        on_text: Callable[[str], None],
        *,
        temperature: float | None = None,
        max_tokens: int | None = None,
        model: str | None = None,
    ) -> Completion:
        """A streamed chat completion: `on_text` hears each piece of text as it arrives.

        The per-attempt timeout is an idle timeout here (no new piece for that long), so a long
        answer that keeps coming is never cut. A failure before the first piece is retried like
        any call; after it, retrying would repeat text the caller has already shown, so the call
        fails instead.
        """
        params = self._params(messages, temperature, max_tokens, model)
        params |= {"stream": True, "stream_options": {"include_usage": True}}

        async def send() -> _Answer:
            parts: list[str] = []
            usage = finish = None
            try:
                async with asyncio.timeout(self.timeout) as idle:
                    stream = await self._client.chat.completions.create(**params)
                    async for chunk in stream:
                        idle.reschedule(asyncio.get_running_loop().time() + self.timeout)
                        usage = chunk.usage or usage
                        for choice in chunk.choices:
                            finish = choice.finish_reason or finish
                            if choice.delta and choice.delta.content:
                                parts.append(choice.delta.content)
                                on_text(choice.delta.content)
            except Exception as exc:
                if parts:
                    raise LLMConnectionError(
                        f"stream broke after {len(parts)} piece(s): {_short(exc) or repr(exc)}"
                    ) from exc
                raise
            return _Answer("".join(parts), usage, finish)

        return await self._call(params, send)

    def _params(
        self,
        messages: list[dict[str, Any]],
        temperature: float | None,
        max_tokens: int | None,
        model: str | None,
    ) -> dict[str, Any]:
        return {
            "model": model or self.model,
            "messages": messages,
            "temperature": self.temperature if temperature is None else temperature,
            "max_tokens": max_tokens or self.max_tokens,
        }

    async def _call(
        self, params: dict[str, Any], send: Callable[[], Awaitable[_Answer]]
    ) -> Completion:
        """Run `send` under the limits, retries and deadline; account for what it cost."""
        estimate = _estimate_tokens(params["messages"]) + params["max_tokens"] if self._tpm else 0
        attempts = 0
        start = time.perf_counter()

        async def attempt() -> _Answer:
            nonlocal attempts
            if self._rpm:
                await self._rpm.acquire()
            if self._tpm:
                await self._tpm.acquire(estimate)
            async with self._slots:
                attempts += 1
                return await send()

        deadline = asyncio.timeout(self.deadline)
        try:
            async with deadline:
                answer = await self._retrying()(attempt)
        except Exception as exc:
            if deadline.expired() or isinstance(exc, TimeoutError | openai.APITimeoutError):
                raise LLMTimeoutError(
                    f"timed out after {attempts} attempt(s) (up to {self.timeout:g} s each, "
                    f"deadline {self.deadline:g} s)",
                    attempts=attempts,
                ) from exc
            raise _as_llm_error(exc, attempts) from exc
        prompt = answer.usage.prompt_tokens if answer.usage else 0
        completion = answer.usage.completion_tokens if answer.usage else 0
        if self._tpm and answer.usage:
            self._tpm.settle(prompt + completion - estimate)
        return Completion(
            text=answer.text,
            usage=Usage(requests=attempts, prompt_tokens=prompt, completion_tokens=completion),
            attempts=attempts,
            latency_s=time.perf_counter() - start,
            finish_reason=answer.finish_reason,
        )

    def _retrying(self) -> AsyncRetrying:
        return AsyncRetrying(
            stop=stop_after_attempt(self.max_attempts) | stop_before_delay(self.deadline),
            wait=self._wait,
            retry=retry_if_exception(is_transient),
            reraise=True,
        )

    def _wait(self, state: RetryCallState) -> float:
        """Retry-After when the server sent one (capped), else exponential backoff with jitter."""
        exc = state.outcome.exception() if state.outcome else None
        retry_after = _retry_after(exc)
        if retry_after is not None:
            return min(retry_after, self.max_retry_after)
        return wait_exponential_jitter(
            multiplier=self.backoff_initial, max=self.backoff_max, jitter=self.backoff_initial
        )(state)

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
            value = _validate(completion.text, schema)
        except (ValidationError, ValueError) as first_error:
            repair = [
                *sent,
                {"role": "assistant", "content": completion.text},
                {
                    "role": "user",
                    "content": "That answer is not valid JSON for the schema: "
                    f"{_short(first_error)}. Reply again with only the corrected JSON.",
                },
            ]
            completion = await self.chat(
                repair,
                response_format=_response_format(schema, mode),
                temperature=temperature,
                max_tokens=max_tokens,
            )
            usage, attempts = usage + completion.usage, attempts + completion.attempts
            try:
                value = _validate(completion.text, schema)
            except (ValidationError, ValueError) as exc:
                raise LLMOutputError(
                    f"{schema.__name__} still invalid after a repair re-ask: {_short(exc)}",
                    attempts=attempts,
                ) from exc
        return Parsed(value, usage, attempts, time.perf_counter() - start)

    async def _chat_structured(
        self,
        messages: list[dict[str, Any]],
        schema: type[BaseModel],
        temperature: float | None,
        max_tokens: int | None,
    ) -> tuple[Completion, list[dict[str, Any]], OutputMode]:
        """Try the current output mode; on a 400 that blames it, remember and use the next one.

        Returns the answer, the messages sent (the schema prompt included) and the mode used.
        """
        while True:
            mode = self.output_mode
            sent = _with_schema_prompt(messages, schema, mode)
            try:
                completion = await self.chat(
                    sent,
                    response_format=_response_format(schema, mode),
                    temperature=temperature,
                    max_tokens=max_tokens,
                )
                return completion, sent, mode
            except LLMStatusError as exc:
                if exc.status != 400 or mode == "prompted" or not _blames_format(str(exc)):
                    raise
                self.output_mode = _MODES[_MODES.index(mode) + 1]

    # -- tokenizer ------------------------------------------------------------------------------

    async def tokenize(self, text: str) -> tuple[list[str], int] | None:
        """The model's own tokens (readable pieces, and their count) via the server's /tokenize
        (llama.cpp, vLLM); None if the server has no such route.

        Probed once: a server without the route is not asked again.
        """
        if self._has_tokenize is False:
            return None
        try:
            async with self._slots, asyncio.timeout(self.timeout):
                response = await self._client.post(
                    f"{self.server_root}/tokenize",
                    body={"content": text, "with_pieces": True, "model": self.model},
                    cast_to=object,
                )
        except openai.APIStatusError as exc:
            if exc.status_code in (404, 405, 501):
                self._has_tokenize = False
                return None
            raise _as_llm_error(exc, 1) from exc
        except Exception as exc:
            raise _as_llm_error(exc, 1) from exc
        self._has_tokenize = True
        tokens = response.get("tokens", []) if isinstance(response, dict) else []
        return readable_pieces([_piece_bytes(t) for t in tokens]), len(tokens)


def is_transient(exc: BaseException) -> bool:
    """Worth another attempt: timeouts, dropped connections, transient statuses, and a body that
    is not JSON (a response cut short on the way is a dropped connection by another name)."""
    if isinstance(exc, openai.APIStatusError):
        return exc.status_code in TRANSIENT_STATUS
    return isinstance(exc, openai.APIConnectionError | TimeoutError | json.JSONDecodeError)


def _retry_after(exc: BaseException | None) -> float | None:
    if not isinstance(exc, openai.APIStatusError):
        return None
    headers = exc.response.headers
    if (ms := headers.get("retry-after-ms")) is not None:
        try:
            return max(0.0, float(ms) / 1000)
        except ValueError:
            pass
    value = headers.get("retry-after")
    if value is None:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        try:
            return max(0.0, parsedate_to_datetime(value).timestamp() - time.time())
        except (TypeError, ValueError):
            return None


def _as_llm_error(exc: BaseException, attempts: int) -> LLMError:
    """Our error for what the client raised, with the attempts it took. Keys never appear: the
    client's messages carry status and body, not request headers."""
    if isinstance(exc, LLMError):
        return exc
    if isinstance(exc, openai.APITimeoutError | TimeoutError):
        return LLMTimeoutError(f"timed out after {attempts} attempt(s)", attempts=attempts)
    if isinstance(exc, openai.APIConnectionError):
        return LLMConnectionError(
            f"connection failed after {attempts} attempt(s): {exc}", attempts=attempts
        )
    if isinstance(exc, openai.RateLimitError):
        return LLMRateLimitError(
            f"still rate-limited (429) after {attempts} attempt(s)", attempts=attempts, status=429
        )
    if isinstance(exc, openai.APIStatusError):
        return LLMStatusError(
            f"HTTP {exc.status_code} after {attempts} attempt(s): {_short(exc.message)}",
            attempts=attempts,
            status=exc.status_code,
        )
    if isinstance(exc, openai.APIResponseValidationError | json.JSONDecodeError):
        return LLMOutputError(f"unreadable response: {_short(exc)}", attempts=attempts)
    return LLMError(f"{type(exc).__name__}: {_short(exc)}", attempts=attempts)


def _estimate_tokens(messages: list[dict[str, Any]]) -> int:
    """Prompt tokens before the call, for the tokens-per-minute limit (corrected after)."""
    return sum(count_tokens(str(m.get("content") or "")) + 4 for m in messages)


def _response_format(schema: type[BaseModel], mode: OutputMode) -> dict[str, Any] | None:
    if mode == "json_schema":
        return {
            "type": "json_schema",
            "json_schema": {"name": schema.__name__, "schema": schema.model_json_schema()},
        }
    if mode == "json_object":
        return {"type": "json_object"}
    return None


def _with_schema_prompt(
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


def _validate(text: str, schema: type[T]) -> T:
    match = _FENCE.match(text)
    return schema.model_validate_json(match.group(1) if match else text)


def _blames_format(message: str) -> bool:
    lowered = message.lower()
    return any(word in lowered for word in ("response_format", "json_schema", "schema", "grammar"))


def _piece_bytes(token: Any) -> bytes:
    """llama.cpp gives a piece as a string, or as a list of byte values when it is not UTF-8."""
    piece = token.get("piece", "") if isinstance(token, dict) else ""
    return bytes(piece) if isinstance(piece, list) else str(piece).encode()


def _short(value: object, limit: int = 300) -> str:
    text = " ".join(str(value).split())
    return text if len(text) <= limit else text[: limit - 1] + "…"
