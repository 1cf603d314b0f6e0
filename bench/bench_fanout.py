"""Benchmark: N tasks x 3 LLM subtasks through anabranch, against the plain-gather floor.

The server is the project's fault server in pure-latency mode (no faults), in its own process. Each
measurement runs in a fresh Python process, so that its peak RSS is its own. Compared:
- floor:     asyncio.gather over the raw openai client, a semaphore of C, 3N chat calls;
- anabranch: run_batch over the fan-out graph, three agents that each make one endpoint.chat call,
             the endpoint capped at C in flight;
- journal:   the same with a journal recording every subtask and task as it finishes.
All are reported against the ideal ceil(3N / C) x latency.

    python bench/bench_fanout.py               # N = 100, 1,000, 10,000; C = 64, 256; 20 ms
    python bench/bench_fanout.py --quick       # N = 100, 1,000 only
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import resource
import subprocess
import sys
import time
from dataclasses import dataclass

from anabranch import Answer
from anabranch.types import SentimentOutput

MESSAGES = [{"role": "user", "content": "Analyse this short text."}]


@dataclass
class ChatAgent:
    """One LLM call per subtask: the framework's own cost is everything around it."""

    endpoint: object
    name: str

    async def run(self, subtask):
        completion = await self.endpoint.chat(MESSAGES, max_tokens=16)
        return Answer(SentimentOutput(label="neutral", score=0.0), completion.usage)


async def floor(url: str, n: int, c: int) -> None:
    import openai

    client = openai.AsyncOpenAI(base_url=url, api_key="x", max_retries=0)
    slots = asyncio.Semaphore(c)

    async def call() -> None:
        async with slots:
            await client.chat.completions.create(model="m", messages=MESSAGES, max_tokens=16)

    await asyncio.gather(*(call() for _ in range(3 * n)))
    await client.close()


async def anabranch_run(url: str, n: int, c: int, journaled: bool = False) -> None:
    import tempfile
    from pathlib import Path

    from anabranch import Journal, Task, build_fanout_graph, run_batch
    from anabranch.llm.endpoint import Endpoint
    from anabranch.llm.settings import Limits

    with tempfile.TemporaryDirectory() as scratch:
        journal = Journal(Path(scratch) / "journal.sqlite") if journaled else None
        async with Endpoint(url, "m", limits=Limits(concurrency=c)) as endpoint:
            agents = [ChatAgent(endpoint, name) for name in ("first", "second", "third")]
            graph = build_fanout_graph(agents=agents)
            tasks = (Task(id=str(i), text="Analyse this short text.") for i in range(n))
            batch = run_batch(tasks, graph, concurrency=c, progress=False, journal=journal)
            delivered = sum([1 async for _ in batch])
        if journal is not None:
            journal.close()
    assert delivered == n and batch.report.tasks_ok == n, batch.report


async def journaled_run(url: str, n: int, c: int) -> None:
    await anabranch_run(url, n, c, journaled=True)


def measure(mode: str, url: str, n: int, c: int) -> dict:
    """Run one measurement in this process (called in a child)."""
    runner = {"floor": floor, "anabranch": anabranch_run, "journal": journaled_run}[mode]
    start = time.perf_counter()
    asyncio.run(runner(url, n, c))
    wall = time.perf_counter() - start
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return {"mode": mode, "n": n, "c": c, "wall": wall, "peak_mb": peak_mb}


def child(mode: str, url: str, n: int, c: int) -> dict:
    out = subprocess.run(
        [sys.executable, __file__, "--child", mode, "--url", url, "--n", str(n), "--c", str(c)],
        capture_output=True,
        text=True,
        check=True,
    )
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--latency-ms", type=float, default=20.0)
    parser.add_argument("--child")
    parser.add_argument("--url")
    parser.add_argument("--n", type=int)
    parser.add_argument("--c", type=int)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(measure(args.child, args.url, args.n, args.c)))
        return

    from anabranch.testing.fault_server import FaultServer

    sizes = (100, 1_000) if args.quick else (100, 1_000, 10_000)
    latency = args.latency_ms / 1000
    print(f"N tasks x 3 chat calls, fault server at {args.latency_ms:g} ms latency")
    print(
        "| N | C | ideal s | floor s | anabranch s | anabranch / floor | floor / ideal "
        "| peak MB floor | peak MB anabranch | + journal s | journal cost | peak MB journal |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|---|---|")
    with FaultServer(latency_ms=args.latency_ms) as server:
        for n in sizes:
            for c in (64, 256):
                ideal = math.ceil(3 * n / c) * latency
                base = child("floor", server.url, n, c)
                ours = child("anabranch", server.url, n, c)
                kept = child("journal", server.url, n, c)
                print(
                    f"| {n:,} | {c} | {ideal:.2f} | {base['wall']:.2f} | {ours['wall']:.2f} "
                    f"| {ours['wall'] / base['wall']:.2f}x | {base['wall'] / ideal:.2f}x "
                    f"| {base['peak_mb']:.0f} | {ours['peak_mb']:.0f} | {kept['wall']:.2f} "
                    f"| {kept['wall'] / ours['wall'] - 1:+.1%} | {kept['peak_mb']:.0f} |",
                    flush=True,
                )
        server.configure(latency_ms=0)
        n, c = 1_000, 64
        base = child("floor", server.url, n, c)
        ours = child("anabranch", server.url, n, c)
        per_call = (ours["wall"] - base["wall"]) / (3 * n) * 1000
        print(
            f"\nzero latency, N = {n:,}, C = {c}: floor {base['wall'] / (3 * n) * 1000:.2f} ms "
            f"per subtask, anabranch {ours['wall'] / (3 * n) * 1000:.2f} ms; "
            f"framework overhead {per_call:.2f} ms per subtask"
        )


if __name__ == "__main__":
    main()
