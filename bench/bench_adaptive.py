"""Benchmark: a static concurrency cap against adaptive concurrency, on servers as they are.

Four kinds of server, each a behaviour of the fault server (docs/architecture.md, "Holding a
server's capacity"):
- `seconds`: a quota of R requests per second whose 429s say `Retry-After` in whole seconds
  (RFC 9110), and nothing else: llama.cpp's and vLLM's gateways, most self-hosted proxies;
- `ms`: the same with `retry-after-ms`, the exact wait;
- `headers`: the same with OpenAI's x-ratelimit-* headers on every answer;
- `random`: no quota, but 15 % of requests answered 429 (`Retry-After: 1`) and 15 % 500 at
  random, as a flaky gateway does; measured against the same calls without faults.
Each case sends the same calls at a cap of 64 and reports the wall time, the goodput as a
fraction of the quota (or the fault-free time), the share of requests answered 429, and the
calls that failed for good. One more case halves the `seconds` quota mid-run.

A second table has no quota: answers of mixed lengths (2 and 31 words) on servers whose time is
fixed (a remote server's network and prompt), per token (a local model's decoding), and either
of those with 4 slots that queue the rest. Adaptive should come near the static cap on the
first two (after its slow start) and stay under the cap on the queues.

    python bench/bench_adaptive.py [--calls 600] [--rps 40]
"""

from __future__ import annotations

import argparse
import asyncio
import time
from typing import Literal

from anabranch.llm.connect import LLMOptions, build_endpoint
from anabranch.llm.settings import Limits, RetryPolicy
from anabranch.testing.fault_server import FaultConfig, FaultServer, Quota

HI = [{"role": "user", "content": "hi"}]
SPEEDS = {
    "fixed 100 ms": FaultConfig(latency_ms=100),
    "5 ms/token": FaultConfig(latency_ms=5, ms_per_token=5),
    "fixed, 4 slots": FaultConfig(latency_ms=100, slots=4),
    "per token, 4 slots": FaultConfig(latency_ms=5, ms_per_token=5, slots=4),
}
"""Servers without a quota, by how their time goes."""
Kind = Literal["seconds", "ms", "headers", "random", "clean"]


def config(kind: Kind, rps: float) -> FaultConfig:
    """The fault server as that kind of server."""
    if kind == "random":
        return FaultConfig(latency_ms=20, rates={"429": 0.15, "500": 0.15}, retry_after=1,
                           retry_after_format="seconds")  # fmt: skip
    if kind == "clean":
        return FaultConfig(latency_ms=20)
    quota = Quota(rps=rps, headers=kind == "headers")
    return FaultConfig(latency_ms=20, quota=quota, retry_after_format="seconds",
                       retry_after_ms=kind in ("ms", "headers"))  # fmt: skip


async def run(server: FaultServer, calls: int, adaptive: bool) -> tuple[float, int]:
    """The calls at once through one endpoint: (seconds, answered)."""
    options = LLMOptions(server.url, "fault", limits=Limits(64, adaptive=adaptive),
                         retry=RetryPolicy(max_attempts=4))  # fmt: skip
    async with build_endpoint(options) as llm:
        start = time.perf_counter()
        done = await asyncio.gather(*(llm.chat(HI) for _ in range(calls)), return_exceptions=True)
        return time.perf_counter() - start, sum(not isinstance(d, BaseException) for d in done)


async def speed_row(server: FaultServer, name: str, calls: int, adaptive: bool) -> str:
    """Answers of mixed lengths at a cap of 64 on one kind of `SPEEDS`."""
    server.configure(SPEEDS[name])
    options = LLMOptions(server.url, "fault", limits=Limits(64, adaptive=adaptive))
    async with build_endpoint(options) as llm:
        start = time.perf_counter()
        await asyncio.gather(*(llm.chat([{"role": "user", "content": "word " * (1 + 29 * (i % 2))}])
                               for i in range(calls)))  # fmt: skip
        wall, stats = time.perf_counter() - start, llm.slot_stats
    return (
        f"| {name} | {'adaptive' if adaptive else 'static 64'} | {wall:.2f} "
        f"| {stats.limit:.1f} ({stats.low:.0f}-{stats.high:.0f}) "
        f"| {server.stats()['max_in_flight']} |"
    )


async def one_case(
    server: FaultServer, kind: Kind, calls: int, rps: float, *, adaptive: bool, halve: bool,
    clean: float,
) -> str:  # fmt: skip
    server.configure(config(kind, rps))

    async def halving() -> None:
        await asyncio.sleep(3.0)
        await asyncio.to_thread(server.set_quota, Quota(rps=rps / 2))

    halver = asyncio.create_task(halving()) if halve else None
    wall, answered = await run(server, calls, adaptive)
    if halver is not None:
        await halver
    stats = server.stats()
    refused = stats["faults"].get("quota", 0) + stats["faults"].get("429", 0)
    if kind == "random":
        measure = f"{wall / clean:.2f}x fault-free"
    else:  # what the quota allowed over the run: its one-second burst, then its rate
        allowed = rps + (rps * min(wall, 3.0) + rps / 2 * max(0.0, wall - 3.0) if halve
                         else rps * wall)  # fmt: skip
        measure = f"{answered / allowed:.0%} of the quota"
    return (
        f"| {kind} | {'adaptive' if adaptive else 'static 64'} "
        f"| {'halves at 3 s' if halve else 'fixed'} | {wall:.1f} | {answered}/{calls} "
        f"| {measure} | {refused / stats['requests']:.1%} |"
    )


async def main(calls: int, rps: float) -> None:
    print(f"{calls} chat calls at a cap of 64, fault server with 20 ms latency; quotas of "
          f"{rps:g} requests/s")  # fmt: skip
    print("| server | mode | quota | wall s | answered | goodput | 429 share |")
    print("|---|---|---|---|---|---|---|")
    with FaultServer() as server:
        server.configure(config("clean", rps))
        clean, _ = await run(server, calls, True)
        print(f"| clean | adaptive | none | {clean:.1f} | {calls}/{calls} | 1.00x | 0.0% |")
        cases: list[tuple[Kind, bool]] = [
            ("seconds", False), ("ms", False), ("headers", False), ("random", False),
            ("seconds", True),
        ]  # fmt: skip
        for kind, halve in cases:
            for adaptive in (False, True):
                row = await one_case(server, kind, calls, rps, adaptive=adaptive, halve=halve,
                                     clean=clean)  # fmt: skip
                print(row, flush=True)
        print(f"\n{calls} chat calls of mixed answer lengths at a cap of 64, no quota")
        print("| server | mode | wall s | limit at the end (range) | most in flight |")
        print("|---|---|---|---|---|")
        for name in SPEEDS:
            for adaptive in (False, True):
                print(await speed_row(server, name, calls, adaptive), flush=True)


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--calls", type=int, default=600)
    parser.add_argument("--rps", type=float, default=40)
    args = parser.parse_args()
    asyncio.run(main(args.calls, args.rps))
