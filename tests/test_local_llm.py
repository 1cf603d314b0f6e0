"""Against the real embedded llama.cpp server with its bundled SmolLM2 model."""

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from anabranch import Task, build_fanout_graph, run_batch
from anabranch.agents.planner import LLMPlanner, RulePlanner
from anabranch.analysis import (
    DESCRIPTIONS,
    LLMKeywordAgent,
    LLMLabelProbabilities,
    make_agents,
)
from anabranch.llm.endpoint import Endpoint
from anabranch.llm.local_server import LocalLLMServer
from anabranch.llm.settings import Limits
from anabranch.tools.keywords import occurs_in
from anabranch.types import Subtask

pytestmark = pytest.mark.slow  # the embedded model

TEXTS = [
    "I love this phone, the battery is amazing.",
    "Terrible service: the food was cold and the waiter was rude.",
]


@pytest.fixture(scope="module")
def server():
    with LocalLLMServer(parallel=4) as running:
        yield running


async def test_the_three_agents_return_schema_valid_output(server):
    async with Endpoint(server.url, server.model, limits=Limits(concurrency=4)) as llm:
        tokenizer, keywords, sentiment = make_agents("llm", llm)
        for text in TEXTS:
            subtask = Subtask(task_id="t", kind="x", text=text)
            tokens = (await tokenizer.run(subtask)).output
            assert tokens.tokenizer == "server:/tokenize"  # the model's own tokenizer
            assert "".join(tokens.tokens) == text and tokens.count >= len(tokens.tokens)
            answer = await keywords.run(subtask)
            assert 0 < len(answer.output.keywords) <= keywords.top_k
            assert answer.usage.prompt_tokens > 0 and answer.usage.completion_tokens > 0
            mood = (await sentiment.run(subtask)).output
            assert mood.label in ("positive", "negative", "neutral") and -1 <= mood.score <= 1


async def test_llm_keywords_are_grounded_in_the_text(server):
    """Inventions are dropped and counted; what is kept occurs in the text; YAKE fills in."""
    texts = [*TEXTS, "Shipping was slow, but the quality of the rug made up for the wait."]
    async with Endpoint(server.url, server.model, limits=Limits(concurrency=4)) as llm:
        for text in texts:
            subtask = Subtask(task_id="t", kind="keywords", text=text)
            raw = (await LLMKeywordAgent(llm, grounded=False).run(subtask)).output
            kept = (await LLMKeywordAgent(llm).run(subtask)).output
            assert raw.invented == 0
            invented = [k.term for k in raw.keywords if not occurs_in(k.term, text)]
            # The same deterministic request (temperature 0): the same inventions, dropped.
            assert kept.invented == len(invented)
            assert all(occurs_in(k.term, text) for k in kept.keywords)
            assert len(kept.keywords) >= 3


async def test_the_label_probabilities_backend_reads_the_models_first_token(server):
    async with Endpoint(server.url, server.model, limits=Limits(concurrency=4)) as llm:
        agent = LLMLabelProbabilities(llm)
        for text in TEXTS:
            answer = await agent.run(Subtask(task_id="t", kind="sentiment", text=text))
            assert answer.usage.completion_tokens == 1  # one token generated, no JSON
            mood = answer.output
            assert mood.label in ("positive", "negative", "neutral") and -1 <= mood.score <= 1


async def test_the_llm_planner_picks_registered_agents(server):
    async with Endpoint(server.url, server.model, limits=Limits(concurrency=4)) as llm:
        agents = make_agents({"tokenize": "local", "keywords": "local", "sentiment": "llm"}, llm)
        planner = LLMPlanner(llm, DESCRIPTIONS, rule=RulePlanner(tuple(DESCRIPTIONS)))
        task = Task(id="p", text=TEXTS[1], instruction="Is this customer happy?")
        plan = await planner.plan(task)
        assert plan and {s.kind for s in plan} <= set(DESCRIPTIONS)
        graph = build_fanout_graph(agents, planner)
        batch = run_batch([task], graph)
        (result,) = [r async for r in batch]
        assert result.status == "ok" and result.subtasks == len(plan)


def test_the_server_stops_on_exit_and_dies_with_its_parent():
    with LocalLLMServer(parallel=1) as running:
        pid = running._process.pid
    assert not _alive(pid)

    parent = subprocess.Popen(
        [sys.executable, "-c", "from anabranch.llm.local_server import LocalLLMServer\n"
         "s = LocalLLMServer(parallel=1).start()\nprint(s._process.pid, flush=True)\n"
         "import time; time.sleep(600)"],
        stdout=subprocess.PIPE,
        text=True,
    )  # fmt: skip
    child = int(parent.stdout.readline())
    assert _alive(child)
    parent.send_signal(signal.SIGKILL)  # no chance to clean up: the kernel must end the child
    parent.wait()
    deadline = time.monotonic() + 10
    while _alive(child) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not _alive(child)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    with open(f"/proc/{pid}/stat") as stat:  # a zombie is dead, merely unreaped
        return stat.read().split(") ", 1)[1][0] != "Z"


def _command_on_port(port: int) -> list[bytes]:
    """The command line of the process listening on `port`, as llama-server was started."""
    for proc in Path("/proc").glob("[0-9]*"):
        try:
            command = (proc / "cmdline").read_bytes().split(b"\0")
        except OSError:  # gone meanwhile
            continue
        if b"--port" in command and command[command.index(b"--port") + 1] == str(port).encode():
            return command
    raise AssertionError(f"no process started with --port {port}")


def test_the_server_runs_a_thread_for_each_core_not_busy(server):
    """llama.cpp's threads poll for work: beside a busy second server, a thread per core starved
    the demo's. The server is started with the cores free when it started, at least one."""
    assert 1 <= server.threads <= len(os.sched_getaffinity(0))
    command = _command_on_port(server.port)
    assert command[command.index(b"--threads") + 1] == str(server.threads).encode()


def test_cores_that_another_process_just_began_to_keep_busy_get_no_thread():
    """All cores but one spun by processes started a moment before: the one-minute load average
    has not seen them yet (it took a neighbour busy for 24 s for 0.59 of a core, and the demo
    starved), the server's own measurement has."""
    cores = len(os.sched_getaffinity(0))
    spin = [subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(cores - 1)]
    try:
        time.sleep(0.3)  # the interpreters are up and spinning
        with LocalLLMServer(parallel=1) as server:
            command = _command_on_port(server.port)
    finally:
        for process in spin:
            process.kill()
            process.wait()
    assert server.threads == 1
    assert command[command.index(b"--threads") + 1] == b"1"
