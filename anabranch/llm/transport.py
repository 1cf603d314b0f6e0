"""The transport layer: one attempt at one request, with a timeout.

The openai client's HTTP client (httpx2) carries every request, with the client's own retries off
(the retry layer above is the only one). A chat completion, the hot path of a batch, is posted
straight through that HTTP client with a body serialized by orjson and read back as a dict:
the SDK's request transformation and response models cost about as much CPU per call as the HTTP
exchange itself, and a batch's client is CPU-bound. The connections are spread over several
HTTP clients of at most `_PER_POOL` each, taken in turn: a pool looks at each of its idle
connections (a poll on its socket) for every request it places, so one pool of 256 connections
spends more CPU per request on that than on the request itself. Failures come back as the
openai client's own exceptions, so the layers above speak one vocabulary whichever path a
request took. Streams and the server's other routes go through the SDK.
"""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import httpx2
import openai
import orjson
from pydantic import SecretStr

from anabranch.errors import LLMConnectionError, LLMOutputError
from anabranch.llm.retry import short
from anabranch.llm.settings import Timeouts


@dataclass(slots=True)
class Tokens:
    """What the server counted for one answer."""

    prompt: int
    """Tokens of the request's messages."""
    completion: int
    """Tokens of the answer."""


@dataclass(slots=True)
class Answer:
    """What one successful attempt brought back."""

    text: str
    """The answer's text ("" when the server sent none)."""
    tokens: Tokens | None
    """The server's token counts, or None when it sent none."""
    finish_reason: str | None
    """Why the model stopped: `stop`, `length` (cut at max_tokens), ..."""
    alternatives: tuple[tuple[str, float], ...] = ()
    """The likeliest first tokens and their log probabilities, when the request asked for them
    (`top_logprobs`) and the server sent them."""
    tool_calls: tuple[dict[str, Any], ...] = ()
    """The functions the model asked for, as the server sent them (`id`, `function`)."""


_PER_POOL = 16
"""Connections per HTTP client. Measured on 6,000 bare posts to a loopback server with 20 ms
latency: with 64 in flight, one pool costs 0.93 ms per request and pools of 16 cost 0.69; with
256 in flight, 1.82 against 0.81."""

_STATUS_ERRORS: dict[int, type[openai.APIStatusError]] = {
    400: openai.BadRequestError,
    401: openai.AuthenticationError,
    403: openai.PermissionDeniedError,
    404: openai.NotFoundError,
    409: openai.ConflictError,
    422: openai.UnprocessableEntityError,
    429: openai.RateLimitError,
}
"""The openai client's exception for each status, as its own requests raise them."""


class Transport:
    """The openai client for one server, and how one attempt uses it."""

    def __init__(
        self,
        base_url: str,
        api_key: SecretStr,
        timeouts: Timeouts,
        on_headers: Callable[[Mapping[str, str]], None] | None = None,
        connections: int = _PER_POOL,
        max_bytes: int = 8 * 1024 * 1024,
    ) -> None:
        self.timeouts = timeouts
        self.max_bytes = max_bytes
        """The largest answer read; past it the attempt fails (`Limits.max_response_bytes`)."""

        async def heard(response: httpx2.Response) -> None:
            if on_headers is not None:
                on_headers(response.headers)

        # Every response's headers, errors included: a server's quota headers reach the limits
        # layer whatever the call was.
        self._pools = [
            openai.DefaultAsyncHttpxClient(
                timeout=timeouts.attempt, event_hooks={"response": [heard]}
            )
            for _ in range(max(1, -(-connections // _PER_POOL)))
        ]
        self._next_pool = itertools.cycle(self._pools)
        self.client = openai.AsyncOpenAI(
            base_url=base_url,
            api_key=api_key.get_secret_value(),
            max_retries=0,  # one retry layer: ours
            timeout=timeouts.attempt,
            http_client=self._pools[0],
        )
        self._chat_url = f"{base_url}/chat/completions"
        self._request = httpx2.Request("POST", self._chat_url)
        self._headers = {
            "Authorization": f"Bearer {api_key.get_secret_value()}",
            "Content-Type": "application/json",
            "Accept": "application/json",
            "User-Agent": "anabranch",
        }

    async def chat(self, params: dict[str, Any], timeout: float | None = None) -> Answer:
        """One chat completion, posted straight through the HTTP client, within `timeout`
        (the attempt timeout unless given: the endpoint's follows the server's speed)."""
        pool = next(self._next_pool)
        request = pool.build_request(
            "POST", self._chat_url, content=orjson.dumps(params), headers=self._headers,
            timeout=timeout or httpx2.USE_CLIENT_DEFAULT,
        )  # fmt: skip
        try:
            async with asyncio.timeout(timeout or self.timeouts.attempt):
                response = await pool.send(request, stream=True)
                try:
                    body = await self._read(response)
                finally:
                    await response.aclose()
        except httpx2.TimeoutException as exc:
            raise openai.APITimeoutError(request=self._request) from exc
        except httpx2.TransportError as exc:
            raise openai.APIConnectionError(message=short(exc), request=self._request) from exc
        if response.status_code >= 400:
            raise _status_error(response, body)
        return _answer(orjson.loads(body))

    async def _read(self, response: httpx2.Response) -> bytes:
        """The body, up to `max_bytes`: a larger one is refused before it is all read."""
        declared = response.headers.get("content-length")
        if declared is not None and declared.isdigit() and int(declared) > self.max_bytes:
            raise self._too_large(int(declared))
        parts: list[bytes] = []
        size = 0
        async for chunk in response.aiter_raw():
            size += len(chunk)
            if size > self.max_bytes:
                # The error's traceback keeps this frame, and with it what was read, while the
                # error is handled and the other calls in flight read theirs (100 MB answers,
                # 8 at a time: peak RSS 330 MB, 240 MB with this).
                parts.clear()
                raise self._too_large(size)
            parts.append(chunk)
        return b"".join(parts)

    def _too_large(self, size: int) -> LLMOutputError:
        return LLMOutputError(
            f"the answer is larger than the {self.max_bytes / 2**20:g} MiB read at most "
            f"({size / 2**20:.1f} MiB or more; Limits.max_response_bytes)"
        )

    async def stream(self, params: dict[str, Any], on_text: Callable[[str], None]) -> Answer:
        """A streamed answer; the attempt timeout is an idle timeout (no new piece for that
        long), so a long answer that keeps coming is never cut. A stream that ends without a
        finish_reason was cut (the end of a close-delimited stream looks like any other end),
        and a piece past `max_bytes` ends it too. A failure after the first piece is a broken
        connection that is not retried (an LLMConnectionError, not one of openai's
        errors): the text was already shown."""
        parts: list[str] = []
        usage: Any = None
        finish = None
        size = 0
        idle_for = self.timeouts.attempt
        params = {**params, "stream": True, "stream_options": {"include_usage": True}}
        try:
            async with asyncio.timeout(idle_for) as idle:
                stream = await self.client.chat.completions.create(**params)
                async for chunk in stream:
                    idle.reschedule(asyncio.get_running_loop().time() + idle_for)
                    usage = chunk.usage or usage
                    for choice in chunk.choices:
                        finish = choice.finish_reason or finish
                        if choice.delta and choice.delta.content:
                            parts.append(choice.delta.content)
                            size += len(choice.delta.content)
                            if size > self.max_bytes:
                                parts.clear()  # as in `_read`: not kept by the traceback
                                raise self._too_large(size)
                            on_text(choice.delta.content)
            if finish is None:  # the connection ended, not the answer
                raise openai.APIConnectionError(
                    message="the stream ended without a finish_reason or [DONE]",
                    request=self._request,
                )
        except LLMOutputError:
            raise
        except Exception as exc:
            if parts:
                raise LLMConnectionError(
                    f"stream broke after {len(parts)} piece(s): {short(exc) or repr(exc)}"
                ) from exc
            raise
        tokens = Tokens(usage.prompt_tokens, usage.completion_tokens) if usage else None
        return Answer("".join(parts), tokens, finish)

    async def post(self, url: str, body: dict[str, Any]) -> Any:
        """A JSON POST to one of the server's own routes (llama.cpp's /tokenize, say)."""
        async with asyncio.timeout(self.timeouts.attempt):
            return await self.client.post(url, body=body, cast_to=object)

    async def answers(self, url: str, timeout: float) -> bool:
        """Whether a GET of `url` gets any answer but 404 within `timeout` seconds."""
        try:
            response = await self._pools[0].get(url, headers=self._headers, timeout=timeout)
        except httpx2.HTTPError:
            return False
        return response.status_code != 404

    async def aclose(self) -> None:
        await self.client.close()
        for pool in self._pools[1:]:
            await pool.aclose()


def _answer(data: Any) -> Answer:
    """The answer in a chat completion's JSON; a body of another shape is not an answer."""
    try:
        choices = data.get("choices") or [{}]
        choice = choices[0]
        usage = data.get("usage")
        tokens = None
        if usage:
            tokens = Tokens(usage.get("prompt_tokens") or 0, usage.get("completion_tokens") or 0)
        message = choice.get("message") or {}
        first = ((choice.get("logprobs") or {}).get("content") or [{}])[0]
        alternatives = tuple(
            (str(t["token"]), float(t["logprob"])) for t in first.get("top_logprobs") or ()
        )
        text = message.get("content") or ""
        calls = tuple(message.get("tool_calls") or ())
        return Answer(text, tokens, choice.get("finish_reason"), alternatives, calls)
    except (AttributeError, IndexError, KeyError, TypeError, ValueError) as exc:
        raise LLMOutputError(f"not a chat completion: {short(data, 120)}") from exc


def _status_error(response: httpx2.Response, content: bytes) -> openai.APIStatusError:
    """The openai client's exception for an error status, with the server's message."""
    try:
        body: Any = orjson.loads(content)
    except orjson.JSONDecodeError:
        body = content.decode("utf-8", "replace") or None
    message = f"Error code: {response.status_code}"
    if body:
        detail = body.get("error", body) if isinstance(body, dict) else body
        if isinstance(detail, dict) and "message" in detail:
            detail = detail["message"]
        message += f" - {detail}"
    status = response.status_code
    kind = _STATUS_ERRORS.get(status, openai.InternalServerError if status >= 500 else None)
    return (kind or openai.APIStatusError)(message, response=response, body=body)
