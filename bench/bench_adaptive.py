"""Benchmark: a static concurrency cap against adaptive concurrency, on a server with a quota.

The fault server's quota mode answers 429 (with Retry-After and OpenAI's x-ratelimit-* headers,
or without them) beyond R requests per second. Each case sends the same calls at a cap of 64 and
reports the wall time, the goodput as a fraction of the quota, the share of requests answered
429, and the calls that failed for good. One case halves the quota mid-run.

    python bench/bench_adaptive.py [--calls 400] [--rps 40]
"""

from __future__ import annotations

import argparse
import asyncio
import time

from anabranch.llm.connect import LLMOptions, build_endpoint
from anabranch.llm.settings import Limits, RetryPolicy
from anabranch.testing.fault_server import FaultServer, Quota

HI = [{"role": "user", "content": "hi"}]


async def one_case(
    server: FaultServer, calls: int, rps: float, *, adaptive: bool, headers: bool, halve: bool
) -> str:
    server.configure(latency_ms=20, quota=Quota(rps=rps, headers=headers))
    limits = Limits(64, adaptive=adaptive)
    retry = RetryPolicy(max_attempts=4)

    async def halving() -> None:
        await asyncio.sleep(3.0)
        await asyncio.to_thread(server.set_quota, Quota(rps=rps / 2, headers=headers))

    async with build_endpoint(LLMOptions(server.url, "fault", limits=limits, retry=retry)) as llm:
        halver = asyncio.create_task(halving()) if halve else None
        start = time.perf_counter()
        done = await asyncio.gather(*(llm.chat(HI) for _ in range(calls)), return_exceptions=True)
        wall = time.perf_counter() - start
        if halver is not None:
            await halver
    stats = server.stats()
    answered = sum(not isinstance(d, BaseException) for d in done)
    refused = stats["faults"].get("quota", 0)
    # What the quota allowed over the run: its one-second burst, then its rate.
    allowed = rps + (rps * min(wall, 3.0) + rps / 2 * max(0.0, wall - 3.0) if halve else rps * wall)
    return (
        f"| {'adaptive' if adaptive else 'static 64'} | {'yes' if headers else 'no'} "
        f"| {'halves at 3 s' if halve else 'fixed'} | {wall:.1f} | {answered}/{calls} "
        f"| {answered / allowed:.0%} | {refused / stats['requests']:.1%} |"
    )


async def main(calls: int, rps: float) -> None:
    print(f"{calls} chat calls at a cap of 64, fault server: {rps:g} requests/s quota, 20 ms")
    print("| mode | headers | quota | wall s | answered | goodput / quota | 429 share |")
    print("|---|---|---|---|---|---|---|")
    with FaultServer() as server:
        for headers, halve in ((True, False), (False, False), (True, True)):
            for adaptive in (False, True):
                row = await one_case(server, calls, rps, adaptive=adaptive, headers=headers,
                                     halve=halve)  # fmt: skip
                print(row, flush=True)


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--calls", type=int, default=400)
    parser.add_argument("--rps", type=float, default=40)
    args = parser.parse_args()
    asyncio.run(main(args.calls, args.rps))
