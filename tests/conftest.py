"""Shared helpers for the tests: real components only, started by the tests themselves."""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from anabranch.llm.local_server import free_port
from anabranch.testing.fault_server import FaultServer

ROOT = Path(__file__).resolve().parent.parent
EXAMPLES = ROOT / "examples"
TOKEN = "test-token-123"
"""The bearer token the test chat servers require."""


def run_cli(
    *args: str,
    env: dict[str, str] | None = None,
    timeout: float = 300,
    prefix=(),
    cwd: Path = ROOT,
):
    """Run the real `anabranch` command in a subprocess and return the completed process."""
    return subprocess.run(
        [*prefix, sys.executable, "-m", "anabranch", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env={**os.environ, **(env or {})},
        cwd=cwd,
    )


def start_server(
    *args: str, token: str | None = TOKEN, timeout: float = 60, env: dict[str, str] | None = None
):
    """Start `anabranch serve` in a subprocess; return it and its base URL once it answers."""
    port = free_port()
    command = [sys.executable, "-m", "anabranch", "serve", "--port", str(port), *args]
    if token:
        command += ["--api-token", token]
    process = subprocess.Popen(
        command,
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env={**os.environ, **(env or {})},
    )
    url = f"http://127.0.0.1:{port}/v1"
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise AssertionError(process.stderr.read().decode())
        try:
            httpx.get(f"{url}/models", timeout=1)
            return process, url
        except httpx.TransportError:
            time.sleep(0.2)
    process.kill()
    raise AssertionError("the chat server did not start")


@pytest.fixture(scope="session")
def fault_server():
    """One real fault-injecting server for the session; each test configures it afresh."""
    with FaultServer() as server:
        yield server


@pytest.fixture
def faults(fault_server):
    fault_server.configure()
    return fault_server


# -- runs killed and resumed (durability, on one machine and on a cluster) --------------------


def write_tasks(path: Path, n: int) -> list[str]:
    """`n` tasks `t0000`, `t0001`, ... as a tasks file; their ids."""
    ids = [f"t{i:04d}" for i in range(n)]
    path.write_text("".join(json.dumps({"id": i, "text": f"Review {i}: it works well."}) + "\n"
                            for i in ids))  # fmt: skip
    return ids


def delivered(journal: Path, status: str | None = None) -> int:
    """Tasks the journal holds (with `status`, if given), read as another process would while
    the run writes."""
    if not journal.exists():
        return 0
    query, args = "SELECT COUNT(*) FROM tasks", ()
    if status is not None:
        query, args = query + " WHERE status = ?", (status,)
    try:
        with sqlite3.connect(f"file:{journal}?mode=ro", uri=True, timeout=5) as db:
            return db.execute(query, args).fetchone()[0]
    except sqlite3.OperationalError:  # the tables are not there yet
        return 0


def kill_when(
    process: subprocess.Popen,
    journal: Path,
    tasks: int,
    limit: float = 120,
    status: str | None = None,
) -> int:
    """SIGKILL `process` once the journal holds `tasks` tasks (with `status`, if given): a point
    in the run that its own record shows, never a guess in seconds. Return how many it held."""
    deadline = time.monotonic() + limit
    while delivered(journal, status) < tasks:
        assert process.poll() is None, process.communicate()
        assert time.monotonic() < deadline, "the run made no progress"
        time.sleep(0.02)
    process.send_signal(signal.SIGKILL)
    process.wait()
    return delivered(journal, status)


def start_run(*args: str, new_session: bool = False) -> subprocess.Popen:
    """`anabranch run ARGS` in the background; `new_session` puts it and what it starts (a local
    Ray cluster) in a process group of their own, to be cleared away together."""
    return subprocess.Popen([sys.executable, "-m", "anabranch", "run", *args], cwd=ROOT,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                            start_new_session=new_session)  # fmt: skip


def output_ids(out: Path) -> list[str]:
    """The task ids of the output, line by line."""
    return [json.loads(line)["task_id"] for line in out.read_text().splitlines()]


@pytest.fixture(scope="module")
def backend(fault_server, tmp_path_factory):
    """A real `anabranch serve` over the fault server, one per test module: its URL."""
    db = tmp_path_factory.mktemp("threads") / "threads.sqlite"
    process, url = start_server("--llm", fault_server.url, "--model", "m",
                                "--threads-db", str(db))  # fmt: skip
    yield url
    process.terminate()
    process.wait(timeout=10)
