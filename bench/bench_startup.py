"""Benchmark: how long a user waits before anabranch does anything.

Each case runs in a fresh interpreter, several times; the table gives the median and the best
wall time. `anabranch --help` and `anabranch run --help` must answer before LangGraph, the openai
SDK, Ray or tiktoken are imported (the commands import them where they are used); `import
anabranch` is what a notebook pays on its first cell.

    python bench/bench_startup.py [--repeat 5]
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import time

CASES = {
    "python -c pass (the floor)": [sys.executable, "-c", "pass"],
    "import anabranch": [sys.executable, "-c", "import anabranch"],
    "anabranch --help": [sys.executable, "-m", "anabranch", "--help"],
    "anabranch run --help": [sys.executable, "-m", "anabranch", "run", "--help"],
}


def timed(command: list[str]) -> float:
    start = time.perf_counter()
    subprocess.run(command, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return time.perf_counter() - start


def main(repeat: int) -> None:
    print(f"start-up, {repeat} fresh processes each")
    print("| case | median s | best s |")
    print("|---|---|---|")
    for name, command in CASES.items():
        timed(command)  # once to warm the file cache and the bytecode
        times = [timed(command) for _ in range(repeat)]
        print(f"| {name} | {statistics.median(times):.2f} | {min(times):.2f} |")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=5)
    main(parser.parse_args().repeat)
