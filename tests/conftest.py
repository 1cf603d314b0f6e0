"""Shared helpers for the tests: real components only, started by the tests themselves."""

from __future__ import annotations

import os
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


def run_cli(*args: str, env: dict[str, str] | None = None, timeout: float = 300, prefix=()):
    """Run the real `anabranch` command in a subprocess and return the completed process."""
    return subprocess.run(
        [*prefix, sys.executable, "-m", "anabranch", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env={**os.environ, **(env or {})},
        cwd=ROOT,
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
