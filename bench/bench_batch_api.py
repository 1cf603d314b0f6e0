"""Benchmark: a big batch through the Batch API layer, against the fault server's batches.

N tasks run at once through the analysis agents on the LLM (keywords and sentiment; the
tokenizer stays local), planned by the LLM planner, so the run goes in two waves: the plans,
then the agents' calls. The fault server's batches take `--step` seconds per state (hours,
compressed). Reported: waves, batches and requests per file (split at `--max-requests`), the
server's paid requests, the wall time and the peak memory of this process.

    python bench/bench_batch_api.py [--tasks 10000] [--max-requests 50000] [--step 0.5]

`--kill` runs `anabranch run --batch-api` on the tasks instead, kills it (SIGKILL) while its
batch is in progress and runs the same command again: the figures are the two runs' batches and
requests paid, as the server counts them.

    python bench/bench_batch_api.py --kill --tasks 300 --step 4
"""

from __future__ import annotations

import argparse
import asyncio
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from anabranch import Endpoint, build_fanout_graph, run_batch
from anabranch.agents.planner import LLMPlanner, RulePlanner
from anabranch.analysis import make_agents
from anabranch.llm.settings import BatchSettings
from anabranch.testing.fault_batches import BatchFaults
from anabranch.testing.fault_server import FaultServer
from anabranch.types import Task

MENU = {"keywords": "the text's key phrases", "sentiment": "how the text feels"}
"""What the LLM planner is offered (the fault server's model picks the first)."""


async def run(server: FaultServer, tasks: int, max_requests: int) -> str:
    settings = BatchSettings(gather=1.0, poll_initial=0.5, poll_max=2.0, max_requests=max_requests)
    work = [Task(id=f"t{i}", text=f"Review {i}: it works well, I like it.") for i in range(tasks)]
    async with Endpoint(server.url, "fault", batch=settings) as endpoint:
        agents = make_agents({"tokenize": "local", "keywords": "llm", "sentiment": "llm"},
                             endpoint)  # fmt: skip
        planner = LLMPlanner(endpoint, MENU, rule=RulePlanner(kinds=[a.name for a in agents]))
        graph = build_fanout_graph(agents, planner)
        start = time.perf_counter()
        results = [r async for r in run_batch(work, graph, concurrency=tasks)]
        wall = time.perf_counter() - start
        report = endpoint.batch_report
    assert report is not None
    seen = server.stats()["batches"]
    ok = sum(r.status == "ok" for r in results)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return (
        f"{tasks} tasks in, {len(results)} out ({ok} ok); waves {report.waves}, batches "
        f"{seen['batches_created']}, requests per file {seen['requests_per_batch']}, paid "
        f"{seen['requests_paid']} ({seen['paid_twice']} twice); wall {wall:.1f} s; "
        f"peak memory {peak:.0f} MB"
    )


def kill_and_resume(server: FaultServer, tasks: int) -> str:
    folder = Path(tempfile.mkdtemp())
    source, out = folder / "tasks.jsonl", folder / "results.jsonl"
    source.write_text("".join(json.dumps({"id": f"t{i}", "text": f"Review {i}: it works."}) + "\n"
                              for i in range(tasks)))  # fmt: skip
    command = [sys.executable, "-m", "anabranch", "run", str(source), "--out", str(out),
               "--llm", server.url, "--model", "fault", "--backend", "llm", "--batch-api",
               "--batch-poll", "0.2"]  # fmt: skip
    first = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    while server.stats()["batches"]["states"].get("in_progress", 0) == 0:
        time.sleep(0.1)
    time.sleep(0.5)
    first.kill()
    first.wait()
    before = server.stats()["batches"]
    start = time.perf_counter()
    second = subprocess.run(command, capture_output=True, text=True)
    wall = time.perf_counter() - start
    after = server.stats()["batches"]
    lines = [json.loads(line) for line in out.read_text().splitlines()]
    return (
        f"killed in {before['states']}: batches {before['batches_created']} "
        f"({before['requests_per_batch']} requests), paid {before['requests_paid']}; "
        f"the same command (exit {second.returncode}, {wall:.1f} s): {len(lines)} results, "
        f"{len({r['task_id'] for r in lines})} distinct tasks of {tasks}; batches created by "
        f"it {after['batches_created'] - before['batches_created']}; paid "
        f"{after['requests_paid']} of {sum(after['requests_per_batch'])} requests, "
        f"{after['paid_twice']} twice; live requests {server.stats()['requests']}"
    )


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--tasks", type=int, default=10_000)
    parser.add_argument("--max-requests", type=int, default=50_000)
    parser.add_argument("--step", type=float, default=0.5, help="seconds per batch state")
    parser.add_argument("--kill", action="store_true", help="kill a command run and resume it")
    args = parser.parse_args()
    with FaultServer(batches=BatchFaults(step_seconds=args.step)) as server:
        if args.kill:
            print(kill_and_resume(server, args.tasks))
        else:
            print(asyncio.run(run(server, args.tasks, args.max_requests)))


if __name__ == "__main__":
    main()
