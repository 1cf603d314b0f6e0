"""Benchmark: what telemetry costs. The same batch with OpenTelemetry off and on.

N tasks x 3 chat calls (`anabranch.testing.load_graph`'s agents) through run_batch against the
fault server (its own process, no faults), C calls in flight, each measurement in a fresh
process, the modes interleaved:
- off:  no `instrument()` (the run's timeline, which the HTML report draws, is always kept);
- on:   `instrument()` on the SDK's providers: every span (workflow, 3N agent, 3N chat) goes
        through a BatchSpanProcessor to an exporter that keeps nothing, and the metrics to a
        reader collected at the end; what is measured is the instrumentation, not a network.
Reported: wall and CPU time per call and the ratios on/off (medians of the repeats), at zero
latency (where the client's CPU is everything, so any cost shows) and at 20 ms. On a shared
machine the CPU ratio is the steadier figure: the client is CPU-bound. Figures go to
bench/results/tracing.json.

    python bench/bench_tracing.py            # N = 1,000, C = 64, 3 repeats
    python bench/bench_tracing.py --quick    # N = 300, 1 repeat
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path

RESULTS = Path(__file__).parent / "results"
MODES = ("off", "on")


async def batch(url: str, n: int, c: int) -> int:
    from anabranch import Task, build_fanout_graph, run_batch
    from anabranch.graphs.progress import Display
    from anabranch.llm.connect import LLMOptions, build_endpoint
    from anabranch.llm.settings import Limits
    from anabranch.testing.load_graph import AGENTS, ChatAgent

    async with build_endpoint(LLMOptions(url, "m", limits=Limits(concurrency=c))) as endpoint:
        graph = build_fanout_graph([ChatAgent(endpoint, name) for name in AGENTS])
        tasks = (Task(id=str(i), text="Analyse this short text.") for i in range(n))
        run = run_batch(tasks, graph, concurrency=c, display=Display(progress=False))
        delivered = sum([1 async for _ in run])
    assert delivered == n and run.report.tasks_ok == n, run.report
    return delivered


def measure(mode: str, url: str, n: int, c: int) -> dict:
    """One measurement in this process (called in a child)."""
    spans = 0
    if mode == "on":
        from opentelemetry.sdk.metrics import MeterProvider
        from opentelemetry.sdk.metrics.export import InMemoryMetricReader
        from opentelemetry.sdk.trace import TracerProvider
        from opentelemetry.sdk.trace.export import (
            BatchSpanProcessor,
            SpanExporter,
            SpanExportResult,
        )

        from anabranch.telemetry import instrument

        class Counting(SpanExporter):
            def export(self, batch):  # type: ignore[no-untyped-def]
                nonlocal spans
                spans += len(batch)
                return SpanExportResult.SUCCESS

        tracer_provider = TracerProvider()
        tracer_provider.add_span_processor(BatchSpanProcessor(Counting()))
        reader = InMemoryMetricReader()
        instrument(tracer_provider, MeterProvider(metric_readers=[reader]))
    import anabranch.graphs.progress
    import anabranch.llm.connect
    import anabranch.testing.load_graph  # noqa: F401 - imported before the clock starts

    start, cpu = time.perf_counter(), time.process_time()
    done = asyncio.run(batch(url, n, c))
    wall, cpu = time.perf_counter() - start, time.process_time() - cpu
    if mode == "on":
        tracer_provider.force_flush()
        reader.get_metrics_data()
        assert spans == 1 + 6 * n, spans  # every span was made and exported
    assert done == n
    return {"mode": mode, "n": n, "c": c, "wall": wall, "cpu": cpu,
            "ms_per_call": wall / (3 * n) * 1000, "spans": spans}  # fmt: skip


def child(mode: str, url: str, n: int, c: int) -> dict:
    out = subprocess.run(
        [sys.executable, __file__, "--child", mode, "--url", url, "--n", str(n), "--c", str(c)],
        capture_output=True,
        text=True,
    )
    if out.returncode != 0:
        raise SystemExit(f"{mode} N={n} C={c} failed:\n{out.stderr[-3000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--child")
    parser.add_argument("--url")
    parser.add_argument("--n", type=int, default=1000)
    parser.add_argument("--c", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args()
    if args.child:
        print(json.dumps(measure(args.child, args.url, args.n, args.c)))
        return
    if args.quick:
        args.n, args.repeats = 300, 1

    from anabranch.testing.fault_server import FaultServer

    figures = []
    for latency in (0, 20):
        with FaultServer(latency_ms=latency) as server:
            runs: dict[str, list[dict]] = {m: [] for m in MODES}
            for _ in range(args.repeats):
                for mode in MODES:  # interleaved: a slow minute hits both
                    runs[mode].append(child(mode, server.url, args.n, args.c))
        median = {m: statistics.median(r["ms_per_call"] for r in runs[m]) for m in MODES}
        cpu = {m: statistics.median(r["cpu"] / (3 * r["n"]) * 1000 for r in runs[m]) for m in MODES}
        figure = {"latency_ms": latency, "n": args.n, "c": args.c, "repeats": args.repeats,
                  "ms_per_call": median, "cpu_ms_per_call": cpu,
                  "on_vs_off": median["on"] / median["off"],
                  "cpu_on_vs_off": cpu["on"] / cpu["off"], "runs": runs}  # fmt: skip
        figures.append(figure)
        print(f"latency {latency:>2} ms, N={args.n}, C={args.c}: wall {median['off']:.3f} -> "
              f"{median['on']:.3f} ms/call ({figure['on_vs_off']:.2f}x), CPU {cpu['off']:.3f} -> "
              f"{cpu['on']:.3f} ms/call ({figure['cpu_on_vs_off']:.2f}x), off -> on")  # fmt: skip
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "tracing.json").write_text(json.dumps(figures, indent=1) + "\n")


if __name__ == "__main__":
    main()
