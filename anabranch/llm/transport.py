"""The transport layer: one attempt at one request, through the openai client, with a timeout.

The client runs with `max_retries=0` (the retry layer above is the only one). An attempt either
returns what the server said or raises what the client raised; the layers above decide what that
means.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import httpx
import openai
from pydantic import SecretStr

from anabranch.errors import LLMConnectionError
from anabranch.llm.retry import short
from anabranch.llm.settings import Timeouts


@dataclass(slots=True)
class Answer:
    """What one successful attempt brought back."""

    text: str
    """The answer's text ("" when the server sent none)."""
    usage: Any
    """The server's `usage` object, or None when it sent none."""
    finish_reason: str | None
    """Why the model stopped: `stop`, `length` (cut at max_tokens), ..."""


class Transport:
    """The openai client for one server, and how one attempt uses it."""

    def __init__(
        self,
        base_url: str,
        api_key: SecretStr,
        timeouts: Timeouts,
        on_headers: Callable[[Mapping[str, str]], None] | None = None,
    ) -> None:
        self.timeouts = timeouts

        async def heard(response: httpx.Response) -> None:
            if on_headers is not None:
                on_headers(response.headers)

        self.client = openai.AsyncOpenAI(
            base_url=base_url,
            api_key=api_key.get_secret_value(),
            max_retries=0,  # one retry layer: ours
            timeout=timeouts.attempt,
            # Every response's headers, errors included: a server's quota headers reach the
            # limits layer whatever the call was.
            http_client=openai.DefaultAsyncHttpxClient(
                timeout=timeouts.attempt, event_hooks={"response": [heard]}
            ),
        )

    async def chat(self, params: dict[str, Any]) -> Answer:
        async with asyncio.timeout(self.timeouts.attempt):
            response = await self.client.chat.completions.create(**params)
        choice = response.choices[0] if response.choices else None
        return Answer(
            text=(choice.message.content or "") if choice else "",
            usage=response.usage,
            finish_reason=choice.finish_reason if choice else None,
        )

    async def stream(self, params: dict[str, Any], on_text: Callable[[str], None]) -> Answer:
        """A streamed answer; the attempt timeout is an idle timeout (no new piece for that
        long), so a long answer that keeps coming is never cut. A failure after the first piece
        is a broken connection that is not retried (an LLMConnectionError, not one of openai's
        errors): the text was already shown."""
        parts: list[str] = []
        usage = finish = None
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
                            on_text(choice.delta.content)
        except Exception as exc:
            if parts:
                raise LLMConnectionError(
                    f"stream broke after {len(parts)} piece(s): {short(exc) or repr(exc)}"
                ) from exc
            raise
        return Answer("".join(parts), usage, finish)

    async def post(self, url: str, body: dict[str, Any]) -> Any:
        """A JSON POST to one of the server's own routes (llama.cpp's /tokenize, say)."""
        async with asyncio.timeout(self.timeouts.attempt):
            return await self.client.post(url, body=body, cast_to=object)

    async def aclose(self) -> None:
        await self.client.close()
