"""The few Batch API calls the batch layer makes (upload, create, poll, download), each retried
when transient: losing a batch's poll to one 503 would strand thousands of calls."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from functools import partial
from typing import Any, TypeVar

import openai

from anabranch.llm.batch_files import read_results

R = TypeVar("R")

TERMINAL = frozenset({"completed", "failed", "expired", "cancelled"})
"""States after which a batch changes no more."""


async def read_batch(
    client: openai.AsyncOpenAI, batch: Any
) -> tuple[dict[str, dict[str, Any]], dict[str, tuple[int, str]]]:
    """The batch's output file (answers by custom_id) and error file (a status and message
    by custom_id; those it says expired or were cancelled are left out: unfinished)."""
    answers: dict[str, dict[str, Any]] = {}
    failures: dict[str, tuple[int, str]] = {}
    for file_id in (batch.output_file_id, batch.error_file_id):
        if file_id:
            content = await retried(partial(client.files.content, file_id))
            read_results(content.content, answers, failures)
    return answers, failures


async def retried(send: Callable[[], Awaitable[R]], attempts: int = 5) -> R:
    """`send`, again after a transient failure (a connection, a timeout, 429, 5xx), with a
    growing pause, up to `attempts` times in all."""
    attempt = 0
    while True:
        try:
            return await send()
        except (
            openai.APIConnectionError,
            openai.APITimeoutError,
            openai.RateLimitError,
            openai.InternalServerError,
        ):
            attempt += 1
            if attempt == attempts:
                raise
            await asyncio.sleep(min(2**attempt, 30))
