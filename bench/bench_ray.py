"""Benchmark: one process against a local Ray cluster of two workers, N tasks x 3 LLM calls.

The server is the project's fault server at 20 ms latency (the client's CPU is the bottleneck,
not the server). Both runs use the load graph (`anabranch.testing.load_graph`: three agents, one
chat call each) with 64 tasks and 64 LLM calls in flight in all: one process holds them all; on
the cluster each worker holds half. Each run is a fresh process; the cluster's start is timed
apart from the batch.

    python bench/bench_ray.py              # N = 10,000
    python bench/bench_ray.py --n 2000
"""

from __future__ import annotations

import argparse
import asyncio
import json
import resource
import subprocess
import sys
import time

C = 64


async def batch(url: str, n: int, workers: int) -> dict:
    from anabranch import Task, run_batch
    from anabranch.graphs.cluster import RayExecutor
    from anabranch.graphs.spec import GraphSpec

    spec = GraphSpec("anabranch.testing.load_graph:load_graph",
                     {"base_url": url, "model": "m", "concurrency": C})  # fmt: skip
    tasks = (Task(id=str(i), text="Analyse this short text.") for i in range(n))
    started = 0.0
    if workers:
        import ray

        began = time.perf_counter()
        ray.init(num_cpus=workers, include_dashboard=False, configure_logging=False)
        started = time.perf_counter() - began
        executor = RayExecutor(workers=workers, per_worker_concurrency=C // workers)
        run = run_batch(tasks, spec, executor=executor, progress=False)
    else:
        run = run_batch(tasks, spec, concurrency=C, progress=False)
    begin = time.perf_counter()
    delivered = sum([1 async for _ in run])
    wall = time.perf_counter() - begin
    assert delivered == n and run.report.tasks_ok == n, run.report
    usage = resource.getrusage(resource.RUSAGE_SELF)
    cpu = usage.ru_utime + usage.ru_stime
    return {"workers": workers, "n": n, "wall": wall, "cluster_start": started, "driver_cpu": cpu}


def child(url: str, n: int, workers: int) -> dict:
    out = subprocess.run(
        [sys.executable, __file__, "--child", str(workers), "--url", url, "--n", str(n)],
        capture_output=True,
        text=True,
    )
    if out.returncode != 0:
        raise SystemExit(f"workers={workers} failed:\n{out.stderr[-3000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--n", type=int, default=10_000)
    parser.add_argument("--child", type=int)
    parser.add_argument("--url")
    args = parser.parse_args()
    if args.child is not None:
        print(json.dumps(asyncio.run(batch(args.url, args.n, args.child))))
        return

    from anabranch.testing.fault_server import FaultServer

    with FaultServer(latency_ms=20) as server:
        one = child(server.url, args.n, 0)
        two = child(server.url, args.n, 2)
    calls = 3 * args.n
    print(f"N = {args.n:,} tasks x 3 calls, 20 ms server, {C} in flight in all")
    print(f"one process:         {one['wall']:.1f} s, {calls / one['wall']:.0f} calls/s")
    print(f"Ray, 2 workers:      {two['wall']:.1f} s, {calls / two['wall']:.0f} calls/s "
          f"(cluster start {two['cluster_start']:.1f} s, not counted)")  # fmt: skip
    print(f"throughput ratio:    {one['wall'] / two['wall']:.2f}x")
    print(
        f"CPU of the driver process: one process {one['driver_cpu']:.1f} s, "
        f"Ray {two['driver_cpu']:.1f} s"
    )


if __name__ == "__main__":
    main()
