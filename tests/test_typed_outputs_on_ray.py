"""A user's typed agent on a real local Ray cluster: its outputs come back as its own model, as
they do in-process (tests/test_reducer.py) and from a journal."""

import os
from pathlib import Path

import pytest
import ray
from typed_agents import Shout, Summary

from anabranch import GraphSpec, Journal, Task, run_batch
from anabranch.graphs.cluster import RayExecutor, init_ray
from anabranch.graphs.runner import Resume

pytestmark = pytest.mark.slow

HERE = Path(__file__).parent


@pytest.fixture(scope="module")
def cluster():
    # The workers import `typed_agents` by name, as a user's workers import their own package.
    path = os.pathsep.join(p for p in (str(HERE), os.environ.get("PYTHONPATH")) if p)
    init_ray(num_cpus=2, runtime_env={"env_vars": {"PYTHONPATH": path}})
    yield
    ray.shutdown()


async def test_a_users_typed_outputs_come_back_typed_from_ray_workers(cluster, tmp_path):
    text = " ".join(f"Worker {i} summarises this sentence well." for i in range(10))
    tasks = [Task(id=f"t{i}", text=text[: 60 * (i + 1)]) for i in range(6)]
    spec = GraphSpec("typed_agents:typed_graph", {"chunk_tokens": 16})
    with Journal(tmp_path / "j.sqlite") as journal:
        resume = Resume(journal, run_id="ray")
        batch = run_batch(tasks, spec, concurrency=8, executor=RayExecutor(workers=2),
                          resume=resume)  # fmt: skip
        results = {r.task_id: r async for r in batch}
        replayed = {r.task_id: r async for r in run_batch(tasks, spec, resume=resume)}
    assert sorted(results) == [t.id for t in tasks]
    for task in tasks:
        summary = results[task.id].output("summary")
        assert isinstance(summary, Summary) and summary.words == len(task.text.split())
        assert all(isinstance(s, Shout) for s in results[task.id].output("shout"))
        assert replayed[task.id].output("summary") == summary  # and again from the journal
