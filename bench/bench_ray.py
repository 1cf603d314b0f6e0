"""Benchmark: one process against a local Ray cluster of two workers, N tasks x 3 LLM calls.

The server is the project's fault server at 20 ms latency (the client's CPU is the bottleneck,
not the server). Both runs use the load graph (`anabranch.testing.load_graph`: three agents, one
chat call each) with C tasks and C LLM calls in flight in all (64 unless --c says otherwise): one
process holds them all; on the cluster each worker holds half. Each run is a fresh process; the
cluster's start is timed apart from the batch.

    python bench/bench_ray.py              # N = 10,000
    python bench/bench_ray.py --n 2000 --c 128

A third run, not part of the ratio, SIGKILLs a worker's process after 30 % of the results and
checks that every task still comes back, once.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import resource
import signal
import subprocess
import sys
import time


async def batch(url: str, n: int, workers: int, c: int, kill_at: int | None = None) -> dict:
    from anabranch import Task, run_batch
    from anabranch.graphs.cluster import RayExecutor
    from anabranch.graphs.progress import Display
    from anabranch.graphs.spec import GraphSpec
    from anabranch.llm.connect import LLMOptions
    from anabranch.llm.settings import Limits

    llm = LLMOptions(url, "m", limits=Limits(concurrency=c))
    spec = GraphSpec("anabranch.testing.load_graph:load_graph", {"llm": llm})
    tasks = (Task(id=str(i), text="Analyse this short text.") for i in range(n))
    started = 0.0
    if workers:
        from anabranch.graphs.cluster import init_ray

        began = time.perf_counter()
        init_ray(num_cpus=workers)
        started = time.perf_counter() - began
        executor = RayExecutor(workers=workers)
        run = run_batch(tasks, spec, concurrency=c, executor=executor, display=Display(False))
    else:
        run = run_batch(tasks, spec, concurrency=c, display=Display(False))
    begin = time.perf_counter()
    ids = []
    async for result in run:
        ids.append(result.task_id)
        if len(ids) == kill_at:  # as the kernel's OOM killer would: the process, not the actor
            found = subprocess.run(["pgrep", "-f", "ray::GraphWorker"], capture_output=True,
                                   text=True, check=True)  # fmt: skip
            os.kill(int(found.stdout.split()[0]), signal.SIGKILL)
    wall = time.perf_counter() - begin
    assert len(ids) == len(set(ids)) == n and run.report.tasks_ok == n, run.report
    usage = resource.getrusage(resource.RUSAGE_SELF)
    cpu = usage.ru_utime + usage.ru_stime
    replaced = executor.respawned if workers else 0
    return {"workers": workers, "n": n, "wall": wall, "cluster_start": started, "driver_cpu": cpu,
            "delivered_once": len(set(ids)), "replaced": replaced}  # fmt: skip


def child(url: str, n: int, workers: int, c: int, kill_at: int | None = None) -> dict:
    args = ["--child", str(workers), "--url", url, "--n", str(n), "--c", str(c)]
    if kill_at:
        args += ["--kill-at", str(kill_at)]
    out = subprocess.run([sys.executable, __file__, *args], capture_output=True, text=True)
    if out.returncode != 0:
        raise SystemExit(f"workers={workers} failed:\n{out.stderr[-3000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--n", type=int, default=10_000)
    parser.add_argument("--c", type=int, default=64, help="LLM calls in flight in all")
    parser.add_argument("--child", type=int)
    parser.add_argument("--url")
    parser.add_argument("--kill-at", type=int, help="SIGKILL a worker after this many results")
    args = parser.parse_args()
    if args.child is not None:
        print(json.dumps(asyncio.run(batch(args.url, args.n, args.child, args.c, args.kill_at))))
        return

    from anabranch.testing.fault_server import FaultServer

    with FaultServer(latency_ms=20) as server:
        one = child(server.url, args.n, 0, args.c)
        two = child(server.url, args.n, 2, args.c)
        killed = child(server.url, args.n, 2, args.c, kill_at=args.n * 3 // 10)
    calls = 3 * args.n
    print(f"N = {args.n:,} tasks x 3 calls, 20 ms server, {args.c} in flight in all")
    print(f"one process:         {one['wall']:.1f} s, {calls / one['wall']:.0f} calls/s")
    print(f"Ray, 2 workers:      {two['wall']:.1f} s, {calls / two['wall']:.0f} calls/s "
          f"(cluster start {two['cluster_start']:.1f} s, not counted)")  # fmt: skip
    print(f"throughput ratio:    {one['wall'] / two['wall']:.2f}x")
    print(
        f"CPU of the driver process: one process {one['driver_cpu']:.1f} s, "
        f"Ray {two['driver_cpu']:.1f} s"
    )
    print(f"Ray, a worker SIGKILLed after {args.n * 3 // 10:,} results: "
          f"{killed['delivered_once']:,} of {args.n:,} tasks delivered, each once; "
          f"{killed['replaced']} worker replaced; {killed['wall']:.1f} s")  # fmt: skip


if __name__ == "__main__":
    main()
