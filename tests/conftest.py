"""Shared helpers for the tests: real components only, started by the tests themselves."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from anabranch.testing.fault_server import FaultServer

ROOT = Path(__file__).resolve().parent.parent
EXAMPLES = ROOT / "examples"


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


@pytest.fixture(scope="session")
def fault_server():
    """One real fault-injecting server for the session; each test configures it afresh."""
    with FaultServer() as server:
        yield server


@pytest.fixture
def faults(fault_server):
    fault_server.configure()
    return fault_server
