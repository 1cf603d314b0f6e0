"""The batch layer: a provider's Batch API under the endpoint, at half the price of live calls.

OpenAI's Batch API (and the same file format at Azure OpenAI, Groq, Together, Mistral, LiteLLM,
vLLM's `run-batch`) answers a file of requests within 24 hours at half the price. The graph's
code does not change: each LLM call awaits as usual, and this layer gathers the calls of every
run in flight into waves. A wave is sent once no new call has come for `gather` seconds of an
idle event loop: it is written as JSONL (one `custom_id` per request), split to the provider's
limits (requests, bytes and enqueued tokens per file), uploaded (`POST /v1/files`, purpose
`batch`), created as a batch (`POST /v1/batches`, endpoint `/v1/chat/completions`, window 24h)
and polled with backoff; its output and error files are downloaded and each waiting call
resolved. So a graph with two LLM stages
(the LLM planner, then the agents) runs as two waves, and a structured-output repair re-ask joins
the wave after its first answer.

What a batch did not finish (it failed or expired, or lost a request) and transient per-request
errors (429, 5xx) go in the next wave, up to `max_rounds` batches per request (or, with
`live_fallback`, what a batch did not finish goes to the live API); a permanent error
(a 400) fails its call with the provider's message, and the agent makes it its subtask's error
record. With a `BatchStore` (the run's journal), every batch and request is recorded: a re-run
after a crash polls the batches still running and takes the answers already downloaded instead
of paying for them again (`anabranch.batches_store`).
"""

from __future__ import annotations

import asyncio
import hashlib
from collections import Counter
from collections.abc import Awaitable, Callable, Coroutine
from dataclasses import dataclass, field
from typing import Any, TypeVar

import openai
import orjson

from anabranch.batches_store import BatchStore
from anabranch.errors import LLMError, LLMStatusError, LLMTimeoutError
from anabranch.llm.batch_calls import TERMINAL, read_batch, retried
from anabranch.llm.batch_files import answer_of, request_line, split
from anabranch.llm.limits import estimate_tokens
from anabranch.llm.retry import short
from anabranch.llm.settings import TRANSIENT_STATUS, BatchSettings
from anabranch.llm.transport import Answer
from anabranch.types import BatchReport

R = TypeVar("R")

Live = Callable[[dict[str, Any]], Awaitable[tuple[Answer, int]]]
"""The endpoint's live path for a request: its answer, and the requests it took."""

_MAX_GATHER = 120.0
"""The longest a wave gathers, however busy the event loop stays."""


@dataclass(slots=True)
class _Call:
    """A call waiting for its answer, and how many batches it has been in."""

    custom_id: str
    params: dict[str, Any]
    line: bytes
    rounds: int = 0
    tokens: int = 0
    """Its estimate for the enqueued token limit (0 when there is none)."""


@dataclass(slots=True)
class _Tally:
    """What the layer did in this process, for the report."""

    waves: int = 0
    batches: list[int] = field(default_factory=list)
    requests: int = 0
    from_journal: int = 0
    resubmitted: int = 0
    live: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    states: Counter[str] = field(default_factory=Counter)


class BatchLayer:
    """The endpoint's batch transport: `chat(params)` resolves when a batch brings its answer."""

    def __init__(
        self, client: openai.AsyncOpenAI, settings: BatchSettings, live: Live | None = None
    ) -> None:
        self.client = client
        self.settings = settings
        self._live = live if settings.live_fallback else None
        self._store = BatchStore(settings.journal, settings.run_id) if settings.journal else None
        self._loading: asyncio.Task[None] | None = None
        self._answers: dict[str, dict[str, Any]] = {}
        """Answers downloaded before a call asked for them (from a batch an earlier run sent)."""
        self._followed: set[str] = set()
        """Requests in a batch being polled: a call for one waits for it."""
        self._calls: dict[str, _Call] = {}
        self._waiting: dict[str, asyncio.Future[tuple[Answer, int]]] = {}
        self._queue: list[_Call] = []
        self._seen: Counter[str] = Counter()
        self._arrived = asyncio.Event()
        self._tasks: set[asyncio.Task[None]] = set()
        self._tally = _Tally()
        self._room = asyncio.Condition()
        self._enqueued = 0
        """Tokens of the batches this layer has waiting at the provider."""

    async def chat(self, params: dict[str, Any]) -> tuple[Answer, int]:
        """The answer to one chat request, and the batches it took (0: from the journal)."""
        line = orjson.dumps(params, option=orjson.OPT_SORT_KEYS)
        digest = hashlib.sha256(line).hexdigest()[:24]
        custom_id = f"{digest}-{self._seen[digest]}"  # the same request again gets the next
        self._seen[digest] += 1
        if self._loading is None:
            self._loading = asyncio.ensure_future(self._resume())
        await self._loading
        if (body := self._answers.pop(custom_id, None)) is not None:
            self._tally.from_journal += 1
            return self._answer(body), 0
        future = asyncio.get_running_loop().create_future()
        self._waiting[custom_id] = future
        followed = custom_id in self._followed  # sent by an earlier run: its poller answers
        call = self._calls.setdefault(custom_id, _Call(custom_id, params, line, int(followed)))
        if self.settings.max_enqueued_tokens is not None and not call.tokens:
            call.tokens = estimate_tokens(params["messages"]) + int(params.get("max_tokens") or 0)
        if not followed:
            self._enqueue(call)
        try:
            return await future
        finally:
            self._waiting.pop(custom_id, None)

    @property
    def report(self) -> BatchReport:
        """What went by batch so far, and what it cost against live."""
        t, prices = self._tally, self.settings.prices
        live = batch = None
        if prices is not None:
            live = (t.prompt_tokens * prices.input + t.completion_tokens * prices.output) / 1e6
            batch = live * prices.batch_share
        return BatchReport(
            waves=t.waves,
            batches=len(t.batches),
            requests_per_batch=t.batches,
            requests=t.requests,
            from_journal=t.from_journal,
            resubmitted=t.resubmitted,
            live=t.live,
            prompt_tokens=t.prompt_tokens,
            completion_tokens=t.completion_tokens,
            states=dict(t.states),
            live_cost=live,
            batch_cost=batch,
        )

    async def aclose(self) -> None:
        """Stop polling (the batches go on at the provider: a re-run finds them)."""
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        if self._store is not None:
            self._store.close()

    async def _resume(self) -> None:
        """Load what the journal holds; poll the batches an earlier run left unread."""
        if self._store is None:
            return
        known = await asyncio.to_thread(self._store.requests)
        members: dict[str, list[str]] = {}
        for custom_id, record in known.items():
            if record.state == "answered" and record.answer is not None:
                self._answers[custom_id] = orjson.loads(record.answer)
            elif record.state == "sent":
                members.setdefault(record.input_file, []).append(custom_id)
        waves = set()
        for batch in await asyncio.to_thread(self._store.batches):
            if ids := members.get(batch.input_file):
                waves.add(batch.wave)
                self._followed.update(ids)
                self._spawn(self._follow(batch.input_file, batch.batch_id, ids, resumed=True))
        self._tally.waves += len(waves)

    # -- sending ---------------------------------------------------------------------------------

    def _enqueue(self, call: _Call) -> None:
        self._queue.append(call)
        self._arrived.set()
        if not any(t.get_name() == "anabranch-batch-waves" for t in self._tasks):
            self._spawn(self._send_waves(), name="anabranch-batch-waves")

    async def _send_waves(self) -> None:
        """Send a wave whenever calls have come and then none for `gather` seconds of an idle
        event loop: a loop busy with the graph runs that a batch's answers set going (10,000 at
        once, say) is still making the next calls, so its busy time does not count as quiet."""
        loop = asyncio.get_running_loop()
        tick = min(0.05, self.settings.gather)
        while True:
            await self._arrived.wait()
            quiet, began = 0.0, loop.time()
            while quiet < self.settings.gather and loop.time() - began < _MAX_GATHER:
                self._arrived.clear()
                before = loop.time()
                await asyncio.sleep(tick)
                late = loop.time() - before - tick
                if self._arrived.is_set():
                    quiet = 0.0
                elif late < tick:  # an idle tick: nothing is on its way
                    quiet += tick
            wave, self._queue = self._queue, []
            if wave:
                self._tally.waves += 1
                lines = [request_line(c.custom_id, c.line) for c in wave]
                limits = self.settings.max_requests, self.settings.max_bytes
                tokens = [c.tokens for c in wave]
                for part in split(lines, *limits, tokens, self.settings.max_enqueued_tokens):
                    calls = [wave[i] for i in part]
                    self._followed.update(c.custom_id for c in calls)
                    body = b"".join(lines[i] for i in part)
                    self._spawn(self._submit(calls, body, self._tally.waves))

    async def _submit(self, calls: list[_Call], body: bytes, wave: int) -> None:
        """Upload one file of the wave, create its batch, and follow it to its answers."""
        ids = [c.custom_id for c in calls]
        for call in calls:
            call.rounds += 1
        tokens = sum(c.tokens for c in calls)
        limit = self.settings.max_enqueued_tokens
        async with self._room:  # the provider's enqueued tokens: wait for earlier batches
            await self._room.wait_for(
                lambda: limit is None or not self._enqueued or self._enqueued + tokens <= limit
            )
            self._enqueued += tokens
        try:
            await self._upload(ids, body, wave)
        finally:
            async with self._room:
                self._enqueued -= tokens
                self._room.notify_all()

    async def _upload(self, ids: list[str], body: bytes, wave: int) -> None:
        """Upload a file of requests, journal it, and follow its batch to its end."""
        try:
            upload = await retried(
                lambda: self.client.files.create(
                    file=("anabranch-requests.jsonl", body), purpose="batch"
                )
            )
            if self._store is not None:
                await asyncio.to_thread(self._store.uploaded, upload.id, wave, ids)
        except Exception as exc:  # noqa: BLE001 - every waiting call hears why
            self._followed.difference_update(ids)
            self._fail(ids, exc)
            return
        await self._follow(upload.id, None, ids, resumed=False)

    async def _follow(
        self, input_file: str, batch_id: str | None, ids: list[str], *, resumed: bool
    ) -> None:
        """Create the batch of an uploaded file (unless it exists), poll it to its end, and
        answer, fail or send again each of its calls."""
        try:
            if batch_id is None:
                batch_id = await self._created(input_file, resumed)
            self._tally.batches.append(len(ids))
            self._tally.requests += len(ids)
            batch = await self._poll(input_file, batch_id)
            answers, failures = await read_batch(self.client, batch)
            if self._store is not None:
                await asyncio.to_thread(
                    self._store.answered,
                    [(c, orjson.dumps(answers[c]).decode()) for c in ids if c in answers],
                )
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # noqa: BLE001 - every waiting call hears why
            self._followed.difference_update(ids)
            self._fail(ids, exc)
            return
        self._followed.difference_update(ids)
        again = []
        for custom_id in ids:
            if custom_id in answers:
                self._resolve(custom_id, answers[custom_id])
                continue
            status, message = failures.get(custom_id, (None, f"the batch {batch.status}"))
            rounds = self._calls[custom_id].rounds if custom_id in self._calls else 1
            if status is not None and status not in TRANSIENT_STATUS:
                self._fail(
                    [custom_id],
                    LLMStatusError(
                        f"batch {batch.id}: HTTP {status} - {message}",
                        attempts=rounds,
                        status=status,
                    ),
                )
            elif status is None and self._live is not None and custom_id in self._waiting:
                self._spawn(self._send_live(self._calls[custom_id]))
            elif rounds >= self.settings.max_rounds:
                self._fail(
                    [custom_id],
                    LLMTimeoutError(
                        f"not answered in {rounds} batches (last {batch.id}: {message})",
                        attempts=rounds,
                        status=status,
                    ),
                )
            else:
                again.append(custom_id)
        if again:  # in the next wave; a call not asked for yet is sent when it is
            if self._store is not None:
                await asyncio.to_thread(self._store.unfinished, again)
            self._tally.resubmitted += len(again)
            for custom_id in again:
                if custom_id in self._waiting:
                    self._enqueue(self._calls[custom_id])

    async def _send_live(self, call: _Call) -> None:
        """A request its batch did not finish, sent to the live API (`live_fallback`)."""
        assert self._live is not None
        future = self._waiting.get(call.custom_id)
        try:
            answer, sent = await self._live(call.params)
        except Exception as exc:  # noqa: BLE001 - the waiting call hears why
            self._fail([call.custom_id], exc)
            return
        self._tally.live += 1
        self._calls.pop(call.custom_id, None)
        if future is not None and not future.done():
            future.set_result((answer, call.rounds + sent))

    async def _created(self, input_file: str, resumed: bool) -> str:
        """The batch of an input file: one an earlier run created before it crashed (among the
        provider's latest), or a new one."""
        if resumed:
            page = await retried(lambda: self.client.batches.list(limit=100))
            for batch in page.data:
                if batch.input_file_id == input_file:
                    if self._store is not None:
                        await asyncio.to_thread(
                            self._store.state, input_file, batch.status, batch.id
                        )
                    return batch.id
        created = await retried(
            lambda: self.client.batches.create(
                input_file_id=input_file,
                endpoint="/v1/chat/completions",
                completion_window="24h",
                metadata={"anabranch_run": self.settings.run_id or "-"},
            )
        )
        if self._store is not None:
            await asyncio.to_thread(self._store.state, input_file, created.status, created.id)
        return created.id

    async def _poll(self, input_file: str, batch_id: str) -> Any:
        """Poll with backoff until the batch ends; its state is journaled as it changes."""
        delay, state = self.settings.poll_initial, ""
        while True:
            batch = await retried(lambda: self.client.batches.retrieve(batch_id))
            if batch.status != state and self._store is not None:
                await asyncio.to_thread(self._store.state, input_file, batch.status)
            state = batch.status
            if state in TERMINAL:
                self._tally.states[state] += 1
                return batch
            await asyncio.sleep(delay)
            delay = min(delay * 2, self.settings.poll_max)

    # -- answers ---------------------------------------------------------------------------------

    def _resolve(self, custom_id: str, body: dict[str, Any]) -> None:
        future = self._waiting.get(custom_id)
        if future is None or future.done():  # no call asks yet (a resumed batch): keep it
            self._answers[custom_id] = body
            return
        rounds = self._calls.pop(custom_id).rounds
        try:
            future.set_result((self._answer(body), rounds))
        except LLMError as exc:
            future.set_exception(exc)

    def _answer(self, body: dict[str, Any]) -> Answer:
        answer = answer_of(body)
        if answer.tokens:
            self._tally.prompt_tokens += answer.tokens.prompt
            self._tally.completion_tokens += answer.tokens.completion
        return answer

    def _fail(self, ids: list[str], exc: BaseException) -> None:
        error = exc if isinstance(exc, LLMError) else LLMError(f"batch API: {short(exc)}")
        for custom_id in ids:
            self._calls.pop(custom_id, None)
            future = self._waiting.get(custom_id)
            if future is not None and not future.done():
                future.set_exception(error)

    def _spawn(self, work: Coroutine[Any, Any, None], name: str | None = None) -> None:
        task = asyncio.get_running_loop().create_task(work, name=name)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
