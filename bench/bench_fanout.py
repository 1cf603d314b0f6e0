"""Benchmark: N tasks x 3 LLM calls, anabranch against what a user would write instead.

The server is the project's fault server in pure-latency mode (no faults), in its own process.
Each measurement runs in a fresh Python process (so that its peak RSS is its own), the
implementations interleaved, against the same server:
- floor:     asyncio.gather over the openai client's `chat.completions.create`, a semaphore of C;
- langgraph: the graph a user writes by hand: planner -> 3 Send -> reducer per task, agents
             calling the openai client, `abatch(max_concurrency=C)`, a semaphore of C on calls;
- anabranch: run_batch over build_fanout_graph: rule planner, three agents that each make one
             `Endpoint.chat` call, the reducer, the runner; the endpoint capped at C in flight;
- journal:   the same with a journal recording every subtask and task as it finishes;
- bare:      httpx2 (the openai client's HTTP library) posting the same request, no SDK.
Ratios are against the floor. Figures go to bench/results/fanout.json and a chart to
bench/results/fanout.png.

    python bench/bench_fanout.py               # N = 1,000 and 10,000; C = 64, 256; + zero latency
    python bench/bench_fanout.py --quick       # N = 1,000 only
    python bench/bench_fanout.py --profile     # where anabranch's CPU goes, at zero latency
"""

from __future__ import annotations

import argparse
import asyncio
import json
import operator
import resource
import subprocess
import sys
import time
from pathlib import Path
from typing import Annotated, TypedDict

from langgraph.graph import END, START, StateGraph
from langgraph.types import Send

from anabranch.testing.load_graph import AGENTS, MESSAGES, ChatAgent

MODES = ("floor", "langgraph", "anabranch", "journal", "bare")
RESULTS = Path(__file__).parent / "results"


async def floor(url: str, n: int, c: int) -> int:
    import openai

    client = openai.AsyncOpenAI(base_url=url, api_key="x", max_retries=0)
    slots = asyncio.Semaphore(c)

    async def call() -> str:
        async with slots:
            response = await client.chat.completions.create(
                model="m", messages=MESSAGES, max_tokens=16
            )
            return response.choices[0].message.content or ""

    answers = await asyncio.gather(*(call() for _ in range(3 * n)))
    await client.close()
    return len(answers) // 3


async def bare(url: str, n: int, c: int) -> int:
    import httpx2
    import orjson

    headers = {"Authorization": "Bearer x", "Content-Type": "application/json"}
    client = httpx2.AsyncClient(timeout=60, headers=headers)
    slots = asyncio.Semaphore(c)

    async def call() -> str:
        async with slots:
            body = orjson.dumps({"model": "m", "messages": MESSAGES, "max_tokens": 16})
            response = await client.post(f"{url}/chat/completions", content=body)
            response.raise_for_status()
            return orjson.loads(response.content)["choices"][0]["message"]["content"]

    answers = await asyncio.gather(*(call() for _ in range(3 * n)))
    await client.aclose()
    return len(answers) // 3


class HandState(TypedDict, total=False):
    text: str
    subtasks: list[str]
    results: Annotated[list[dict[str, str]], operator.add]
    merged: dict[str, str]


async def langgraph(url: str, n: int, c: int) -> int:
    """The per-task graph a LangGraph user writes by hand for this job."""
    import openai

    client = openai.AsyncOpenAI(base_url=url, api_key="x", max_retries=0)
    slots = asyncio.Semaphore(c)

    async def planner(state: HandState) -> dict:
        return {"subtasks": list(AGENTS)}

    def fan_out(state: HandState) -> list[Send]:
        return [Send("agent", {"text": state["text"], "kind": k}) for k in state["subtasks"]]

    async def agent(subtask: dict[str, str]) -> dict:
        async with slots:
            response = await client.chat.completions.create(
                model="m", messages=MESSAGES, max_tokens=16
            )
        text = response.choices[0].message.content or ""
        return {"results": [{"kind": subtask["kind"], "text": text}]}

    async def reducer(state: HandState) -> dict:
        return {"merged": {r["kind"]: r["text"] for r in state["results"]}}

    builder = StateGraph(HandState)
    builder.add_node("planner", planner)
    builder.add_node("agent", agent)
    builder.add_node("reducer", reducer)
    builder.add_edge(START, "planner")
    builder.add_conditional_edges("planner", fan_out, ["agent"])
    builder.add_edge("agent", "reducer")
    builder.add_edge("reducer", END)
    graph = builder.compile()
    inputs = [{"text": "Analyse this short text."} for _ in range(n)]
    outputs = await graph.abatch(inputs, config={"max_concurrency": c})
    await client.close()
    assert all(len(o["merged"]) == 3 for o in outputs)
    return len(outputs)


async def anabranch(url: str, n: int, c: int, journaled: bool = False) -> int:
    import tempfile

    from anabranch import Journal, Task, build_fanout_graph, run_batch
    from anabranch.graphs.progress import Display
    from anabranch.graphs.runner import Resume
    from anabranch.llm.connect import LLMOptions, build_endpoint
    from anabranch.llm.settings import Limits

    with tempfile.TemporaryDirectory() as scratch:
        journal = Journal(Path(scratch) / "journal.sqlite") if journaled else None
        llm = LLMOptions(url, "m", limits=Limits(concurrency=c))
        async with build_endpoint(llm) as endpoint:
            agents = [ChatAgent(endpoint, name) for name in AGENTS]
            graph = build_fanout_graph(agents=agents)
            tasks = (Task(id=str(i), text="Analyse this short text.") for i in range(n))
            resume = Resume(journal) if journal is not None else None
            batch = run_batch(tasks, graph, concurrency=c, resume=resume, display=Display(False))
            delivered = sum([1 async for _ in batch])
        if journal is not None:
            journal.close()
    assert delivered == n and batch.report.tasks_ok == n, batch.report
    return delivered


async def journal(url: str, n: int, c: int) -> int:
    return await anabranch(url, n, c, journaled=True)


def measure(mode: str, url: str, n: int, c: int) -> dict:
    """Run one measurement in this process (called in a child)."""
    runner = {"floor": floor, "langgraph": langgraph, "anabranch": anabranch,
              "journal": journal, "bare": bare}[mode]  # fmt: skip
    start = time.perf_counter()
    done = asyncio.run(runner(url, n, c))
    wall = time.perf_counter() - start
    assert done == n, (mode, done, n)
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return {"mode": mode, "n": n, "c": c, "wall": wall, "ms_per_call": wall / (3 * n) * 1000,
            "peak_mb": peak_mb}  # fmt: skip


def child(mode: str, url: str, n: int, c: int) -> dict:
    out = subprocess.run(
        [sys.executable, __file__, "--child", mode, "--url", url, "--n", str(n), "--c", str(c)],
        capture_output=True,
        text=True,
    )
    if out.returncode != 0:
        raise SystemExit(f"{mode} N={n} C={c} failed:\n{out.stderr[-3000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def profile(url: str, n: int, c: int) -> None:
    """anabranch under cProfile: its own CPU time split by the package the time is spent in."""
    import collections
    import cProfile
    import pstats
    import re

    profiler = cProfile.Profile()
    profiler.enable()
    asyncio.run(anabranch(url, n, c))
    profiler.disable()
    by_package: collections.Counter[str] = collections.Counter()
    for (path, _, _), (_, _, own, _, _) in pstats.Stats(profiler).stats.items():  # type: ignore[attr-defined]
        found = re.search(r"site-packages/([A-Za-z0-9_]+)", path)
        if found:
            package = found.group(1)
        elif "/anabranch/" in path:
            package = "anabranch"
        elif "asyncio" in path:
            package = "asyncio"
        else:
            package = "python (builtins, stdlib)"
        by_package[package] += own
    total = sum(by_package.values())
    print(f"anabranch, N = {n:,}, C = {c}, zero latency: own CPU time by package (cProfile)")
    for package, seconds in by_package.most_common(15):
        print(f"  {package:28s} {seconds / total:6.1%}")


def row(label: str, runs: dict[str, dict]) -> str:
    base = runs["floor"]["wall"]
    cells = [f"{runs[m]['wall']:.2f} s ({runs[m]['wall'] / base:.2f}x)" for m in MODES]
    peaks = "/".join(f"{runs[m]['peak_mb']:.0f}" for m in MODES)
    return f"| {label} | " + " | ".join(cells) + f" | {peaks} |"


def chart(measured: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    labels = [m["label"] for m in measured]
    fig, ax = plt.subplots(figsize=(10, 4.5))
    width = 0.8 / len(MODES)
    for i, mode in enumerate(MODES):
        ratios = [m["runs"][mode]["wall"] / m["runs"]["floor"]["wall"] for m in measured]
        xs = [x + (i - (len(MODES) - 1) / 2) * width for x in range(len(labels))]
        ax.bar(xs, ratios, width, label=mode)
    ax.axhline(1.0, color="black", linewidth=0.8, linestyle="--")
    ax.set_xticks(range(len(labels)), labels)
    ax.set_ylabel("wall time / floor (lower is faster)")
    ax.set_title("N tasks x 3 LLM calls on a loopback server, one run")
    ax.legend(ncols=len(MODES), fontsize="small")
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--profile", action="store_true")
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

    if args.profile:
        with FaultServer(latency_ms=0) as server:
            profile(server.url, 1_000, 64)
        return
    sizes = (1_000,) if args.quick else (1_000, 10_000)
    print(f"N tasks x 3 chat calls; fault server at {args.latency_ms:g} ms latency, then at 0 ms")
    print("wall seconds (x the floor); peak MB in the same order")
    print("| N, C | " + " | ".join(MODES) + " | peak MB |")
    print("|---" * (len(MODES) + 2) + "|")
    measured = []
    with FaultServer(latency_ms=args.latency_ms) as server:
        plan = [(n, c, args.latency_ms) for n in sizes for c in (64, 256)]
        plan.append((1_000, 64, 0.0))
        for n, c, latency in plan:
            server.configure(latency_ms=latency)
            runs = {mode: child(mode, server.url, n, c) for mode in MODES}
            label = f"N={n:,} C={c}" + (" 0 ms" if latency == 0 else "")
            measured.append({"label": label, "n": n, "c": c, "latency_ms": latency, "runs": runs})
            print(row(label, runs), flush=True)
    zero = measured[-1]["runs"]
    print("\nms per call at zero latency: " + ", ".join(
        f"{m} {zero[m]['ms_per_call']:.2f}" for m in MODES))  # fmt: skip
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "fanout.json").write_text(json.dumps(measured, indent=1) + "\n")
    chart(measured, RESULTS / "fanout.png")
    print(f"figures: {RESULTS / 'fanout.json'}, chart: {RESULTS / 'fanout.png'}")


if __name__ == "__main__":
    main()
