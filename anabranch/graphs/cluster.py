"""Past one machine: a batch's graph runs on the workers of a Ray cluster.

`run_batch(tasks, GraphSpec(...), concurrency=C, executor=RayExecutor(workers=N))`: N Ray actors
each build their own graph from the spec (on their share of its limits) and run tasks sent to
them, up to C / N at work at once (the batch's concurrency, like its limits, is the whole
cluster's); a worker counts its runs at work where their calls' waits are heard
(`anabranch.work`), so the driver hands it more than that.
Everything else stays on the driver, in the batch runner: the input is read as it goes, results
come back in completion order through the same bounded queue, the progress bar and the trace are
the same, and the journal is written by the driver alone, so resuming after a crash of the driver
works as in one process. A worker closes what its graph opened (an endpoint, a cache file) before
it is stopped.

Tasks travel in small chunks (those the runner hands over in the same turn of the event loop, up
to `chunk`): with one Ray call per task, two workers ran 3,000 tasks at 1.07x the throughput of
one process and the driver spent 3.9 s of CPU; with chunks of 8, 1.28x and 2.3 s
(`bench/bench_ray.py --n 3000`). A worker runs a chunk's tasks at once and streams their
results back as they are done (those done within 20 ms together), so that a task that waits out
its retries holds back no other.

A worker that dies (its actor killed, its process SIGKILLed, its machine gone) loses nothing: the
chunks it held fail on the driver with `RayActorError`, a new actor takes its place, and each of
those chunks is sent again, to the next worker in turn. A task's result is delivered once, when a
worker returns it; a task a dead worker had half done is run again from its start.

A local cluster that the executor starts runs its workers at normal priority, where Ray would nice
them to 15: the batch is the machine's work, and niced workers yield to every wake-up of what
shares their cores (the driver, a local LLM server). On this project's 2-core benchmark machine
that was 4-5 % of throughput (`bench/bench_ray.py`'s Ray batch, run alternately both ways).

Ray is an optional dependency (`pip install anabranch[ray]`).
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import math
import os
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

from anabranch.errors import ConfigError, SetupError
from anabranch.graphs.executor import run_task
from anabranch.graphs.spec import GraphSpec, Share
from anabranch.graphs.state import Graph, RunContext, now
from anabranch.types import Task, TaskResult
from anabranch.work import WAITING, WorkGate

__all__ = ["GraphWorker", "RayExecutor", "init_ray"]

_RESPAWNS_PER_WORKER = 3
"""Replacements per worker before the batch gives up on a cluster that keeps losing them."""
_NICENESS = "RAY_worker_niceness"
"""Ray's setting for its workers' niceness, read by a raylet when it starts."""
_TOGETHER = 0.02
"""Seconds a worker waits, once a task of a chunk is done, for others to go back with it."""
_CLOSING = 10.0
"""Seconds a worker may take to close what its graph opened (a cache's last writes) before it
is killed anyway."""


class GraphWorker:
    """One Ray actor: builds its graph once, then runs the tasks the driver sends it."""

    def __init__(self, spec: GraphSpec, share: Share, concurrency: int = 1) -> None:
        self.resources = contextlib.AsyncExitStack()
        self.graph = spec.build(share, self.resources)
        self.gate = WorkGate(max(1, math.ceil(concurrency / share.count)), WAITING * concurrency)
        """This worker's share of the runs at work: here its calls' waits are heard."""

    async def run(self, tasks: list[Task]) -> AsyncIterator[list[tuple[int, TaskResult]]]:
        """The tasks' results, each with its place in `tasks`, as they are done (a Ray
        streaming generator): those done within `_TOGETHER` of the first go back together.
        Returned whole, a chunk waited for its slowest task, and 300 tasks under 10 % 429s and
        10 % 500s ran 18 times slower than without them; one result at a time, a fault-free
        batch took two fifths longer than in chunks (`bench/bench_ray.py --n 3000`)."""

        async def one(index: int, task: Task) -> tuple[int, TaskResult]:
            async with self.gate.working():
                return index, await run_task(self.graph, task, RunContext())

        running = {asyncio.ensure_future(one(i, t)) for i, t in enumerate(tasks)}
        try:
            while running:
                done, running = await asyncio.wait(running, return_when=asyncio.FIRST_COMPLETED)
                if running:
                    more, running = await asyncio.wait(running, timeout=_TOGETHER)
                    done |= more
                yield [d.result() for d in done]
        finally:
            for left in running:  # the driver is gone: nobody waits for these
                left.cancel()

    async def ready(self) -> bool:
        return True

    async def close(self) -> None:
        """Close what the graph opened (its endpoint, a cache file)."""
        await self.resources.aclose()


@dataclass
class RayExecutor:
    """Where `run_batch` sends its tasks instead of running them in this process."""

    address: str | None = None
    """The cluster: None starts a local one (or uses the one this process already joined),
    `auto` joins the cluster of this machine, `ray://host:10001` a remote one."""
    workers: int = 2
    """Ray actors, each with its own graph and endpoint, each running its share of the batch's
    concurrency."""
    chunk: int = 8
    """Tasks sent to a worker in one call, at most."""
    worker_niceness: int | None = 0
    """The workers' niceness on a local cluster this executor starts (None: Ray's, 15). An
    existing cluster keeps its own."""
    gates_work: bool = field(default=True, init=False)
    """The workers count their runs at work (`anabranch.work`), where the calls' waits are
    heard: the batch hands over up to `WAITING` times its concurrency."""
    respawned: int = field(default=0, init=False)
    """Workers replaced after they died."""
    actors: list[Any] = field(default_factory=list, init=False, repr=False)
    """The live actor handles, by worker number."""
    _spec: GraphSpec | None = field(default=None, init=False, repr=False)
    _concurrency: int = field(default=1, init=False, repr=False)
    _started_ray: bool = field(default=False, init=False, repr=False)
    _turn: itertools.count[int] = field(default_factory=itertools.count, init=False, repr=False)
    _waiting: list[tuple[Task, asyncio.Future[TaskResult]]] = field(
        default_factory=list, init=False, repr=False
    )
    _sending: set[asyncio.Task[None]] = field(default_factory=set, init=False, repr=False)

    def __post_init__(self) -> None:
        if min(self.workers, self.chunk) < 1:
            raise ConfigError(f"workers and chunk must be at least 1 ({self})")

    async def start(self, graph: Graph | GraphSpec, concurrency: int) -> None:
        """Join or start the cluster, and start the workers (each builds its graph), each to
        run its share of the `concurrency` tasks in flight."""
        if not isinstance(graph, GraphSpec):
            raise ConfigError(
                "a compiled graph cannot travel to Ray workers: give run_batch a "
                "GraphSpec('package.module:factory', {...}) instead"
            )
        ray = _ray()
        if not ray.is_initialized():
            try:  # on this thread: Ray sets its signal handlers from the main thread only
                init_ray(self.address, worker_niceness=self.worker_niceness)
            except (ConnectionError, RuntimeError, ValueError) as exc:
                raise SetupError(f"cannot reach the Ray cluster at {self.address}: {exc}") from exc
            self._started_ray = True
        self._spec, self._concurrency = graph, concurrency
        self.actors = [self._spawn(i) for i in range(self.workers)]
        try:
            await asyncio.gather(*(actor.ready.remote() for actor in self.actors))
        except ray.exceptions.RayActorError as exc:
            raise ConfigError(f"a Ray worker could not build the graph: {exc}") from exc

    def _spawn(self, index: int) -> Any:
        ray = _ray()
        # A chunk's call stays open while any of its tasks runs, and a worker may be sent as
        # many tasks as the batch has under way: each may be the last of its chunk.
        under_way = WAITING * self._concurrency
        worker = ray.remote(GraphWorker).options(max_concurrency=under_way + 1)
        return worker.remote(self._spec, Share(index, self.workers), self._concurrency)

    async def run(self, task: Task, context: RunContext) -> TaskResult:
        """The task's result from a worker (sent with the others handed over in this turn of
        the event loop). The stages of its graph show in the trace as one span."""
        start = now()
        future: asyncio.Future[TaskResult] = asyncio.get_running_loop().create_future()
        self._waiting.append((task, future))
        if len(self._waiting) >= self.chunk:
            self._flush()
        elif len(self._waiting) == 1:
            asyncio.get_running_loop().call_soon(self._flush)
        result = await future
        if context.clock is not None:
            for stage in ("split", "execute", "aggregate"):
                context.clock.record(stage, start, now())
        return result

    def _flush(self) -> None:
        while self._waiting:
            chunk, self._waiting = self._waiting[: self.chunk], self._waiting[self.chunk :]
            sending = asyncio.ensure_future(self._send(chunk))
            self._sending.add(sending)
            sending.add_done_callback(self._sending.discard)

    async def _send(self, chunk: list[tuple[Task, asyncio.Future[TaskResult]]]) -> None:
        """One chunk to the next worker in turn, each result handed to its waiter as it
        comes; what a worker that died had not returned, to the one after it (the dead one
        replaced)."""
        ray = _ray()
        try:
            while left := [(task, future) for task, future in chunk if not future.done()]:
                index = next(self._turn) % self.workers
                actor = self.actors[index]
                try:
                    async for ref in actor.run.remote([task for task, _ in left]):
                        for place, result in await ref:
                            if not (waiter := left[place][1]).done():  # its waiter may be gone
                                waiter.set_result(result)
                except ray.exceptions.RayActorError:
                    self._replace(index, actor)
        except asyncio.CancelledError:  # the batch ended: nobody waits for these
            for _, future in chunk:
                future.cancel()
            raise
        except Exception as exc:  # noqa: BLE001 - handed to the tasks' waiters, not swallowed
            for _, future in chunk:
                if not future.done():
                    future.set_exception(exc)

    def _replace(self, index: int, dead: Any) -> None:
        if self.actors[index] is not dead:
            return  # another chunk heard of it first
        if self.respawned >= _RESPAWNS_PER_WORKER * self.workers:
            raise SetupError(
                f"Ray workers keep dying ({self.respawned} replaced): see the cluster's logs"
            )
        self.respawned += 1
        self.actors[index] = self._spawn(index)

    async def close(self) -> None:
        """Stop the workers (once they have closed what their graphs opened), and the cluster
        if this executor started it."""
        if not self.actors and not self._started_ray:
            return  # never started, or already closed
        ray = _ray()
        for sending in list(self._sending):
            sending.cancel()
        with contextlib.suppress(ray.exceptions.RayError, TimeoutError):
            async with asyncio.timeout(_CLOSING):
                await asyncio.gather(*(actor.close.remote() for actor in self.actors))
        for actor in self.actors:
            ray.kill(actor)
        self.actors = []
        if self._started_ray:
            await asyncio.to_thread(ray.shutdown)
            self._started_ray = False


def init_ray(
    address: str | None = None, *, worker_niceness: int | None = 0, **options: Any
) -> None:
    """Join the cluster at `address`, or start a local one whose workers run at
    `worker_niceness` (unless the environment already says). `options` go to `ray.init`."""
    ray = _ray()
    chosen = os.environ.get(_NICENESS)
    if worker_niceness is not None and chosen is None:
        os.environ[_NICENESS] = str(worker_niceness)  # the raylet ray.init starts reads it
    try:
        ray.init(address=address, include_dashboard=False, configure_logging=False, **options)
    finally:
        if chosen is None:
            os.environ.pop(_NICENESS, None)


def _ray() -> Any:
    try:
        import ray
    except ImportError as exc:
        raise ConfigError("the Ray executor needs Ray: pip install 'anabranch[ray]'") from exc
    return ray
