"""Durable batches, tried with real crashes: a real `anabranch run` against the fault server,
killed with SIGKILL part-way, then resumed. Nothing finished is lost or sent again, beyond what
was in flight when the kill landed, and every task is delivered exactly once.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import signal
import sqlite3
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import pytest
from conftest import delivered, kill_when, output_ids, run_cli, start_run, write_tasks

from anabranch import Task, run_batch
from anabranch.analysis import build_analysis_graph
from anabranch.graphs.runner import Resume
from anabranch.journal import Journal, JournalBusyError, JournalError
from anabranch.llm.endpoint import Endpoint
from anabranch.llm.settings import Limits

N = 240
LLM_CONCURRENCY = 16
"""The most requests in flight at the server when a kill lands."""
IN_FLIGHT = LLM_CONCURRENCY + 14
"""What a kill may leave unrecorded: the requests at the server, and the answers already back
but still on their way to the journal (its writer commits every 100 ms: at this test's pace,
about 107 answers a second, some 11)."""


def repeats(before: dict[str, int], after: dict[str, int]) -> int:
    """Requests for conversations that had been sent before: the work a crash made us redo."""
    return sum(n for prompt, n in after.items() if prompt in before) - sum(
        n for prompt, n in before.items() if prompt in after
    )


def whole_lines(out: Path) -> list[str]:
    """The task ids of the output's complete lines (a kill may cut the last one)."""
    ids = []
    for line in out.read_text().splitlines():
        with contextlib.suppress(ValueError):
            ids.append(json.loads(line)["task_id"])
    return ids


@pytest.mark.slow
def test_killed_three_times_then_resumed_delivers_each_task_once(tmp_path, faults):
    faults.configure(latency_ms=150)
    tasks, out = tmp_path / "tasks.jsonl", tmp_path / "out.jsonl"
    journal = tmp_path / "out.jsonl.journal"
    ids = write_tasks(tasks, N)
    command = [str(tasks), "--out", str(out), "--llm", faults.url, "--model", "fault",
               "--llm-concurrency", str(LLM_CONCURRENCY), "--concurrency", "16"]  # fmt: skip
    fractions = (0.25, 0.5, 0.75)
    seen = faults.stats()["prompts"]
    held, redone = [], []  # what the journal held at each kill; what each run sent again
    for fraction in fractions:
        held.append(kill_when(start_run(*command), journal, int(N * fraction)))
        # An interrupted resume never shrinks the output: what was delivered stays, each once.
        lines = whole_lines(out)
        assert len(lines) == len(set(lines)) and len(lines) >= (held[-2] if len(held) > 1 else 0)
        now = faults.stats()["prompts"]
        redone.append(repeats(seen, now))
        seen = now
    final = run_cli("run", *command)
    assert final.returncode == 0, final.stderr
    redone.append(repeats(seen, faults.stats()["prompts"]))
    print("".join(f"\nafter the kill at {f:.0%} (journal held {h}/{N}): {r} requests repeated"
                  for f, h, r in zip(fractions, held, redone[1:], strict=True)))  # fmt: skip
    assert redone[0] == 0 and max(redone) <= IN_FLIGHT  # only what was in flight
    assert output_ids(out) == ids  # each exactly once, in input order
    assert "from the journal ->" in final.stdout
    total = sum(faults.stats()["prompts"].values())
    assert total <= 2 * N + 3 * IN_FLIGHT  # 2 LLM calls a task, plus what was in flight


@pytest.mark.slow
def test_a_killed_retry_failed_run_resumes(tmp_path, faults):
    faults.configure(rates={"400": 0.3}, seed=3)  # a 400 is never retried: subtasks fail
    tasks, out = tmp_path / "tasks.jsonl", tmp_path / "out.jsonl"
    ids = write_tasks(tasks, 120)
    command = [str(tasks), "--out", str(out), "--llm", faults.url, "--model", "fault"]
    first = run_cli("run", *command)
    assert first.returncode == 4  # delivered, some with errors
    failed = [r for r in map(json.loads, out.read_text().splitlines()) if r["status"] != "ok"]
    assert failed
    faults.configure(latency_ms=300)  # the provider is back, and slow
    before = faults.stats()["prompts"]
    journal = out.with_name(out.name + ".journal")
    ok = delivered(journal, "ok")
    retry = start_run(*command, "--retry-failed")
    kill_when(retry, journal, ok + max(1, len(failed) // 3), status="ok")  # part of the retries
    again = run_cli("run", *command, "--retry-failed")
    assert again.returncode == 0, again.stderr
    results = [json.loads(line) for line in out.read_text().splitlines()]
    assert [r["task_id"] for r in results] == ids and all(r["status"] == "ok" for r in results)
    # Only the failed subtasks were sent: one request each, and a few twice (in flight at the kill).
    sent = sum(faults.stats()["prompts"].values()) - sum(before.values())
    failed_subtasks = sum(len(r["errors"]) for r in failed)
    assert failed_subtasks <= sent <= failed_subtasks + IN_FLIGHT


@pytest.mark.slow  # 15-20 s
async def test_the_python_api_resumes_after_a_kill(tmp_path, faults):
    faults.configure(latency_ms=150)
    path = tmp_path / "journal.sqlite"
    script = f"""
import asyncio
from anabranch import Task, run_batch
from anabranch.analysis import build_analysis_graph
from anabranch.graphs.runner import Resume
from anabranch.journal import Journal
from anabranch.llm.endpoint import Endpoint
from anabranch.llm.settings import Limits

async def main():
    tasks = [Task(id=f"t{{i}}", text=f"Text {{i}} reads well.") for i in range({N})]
    async with Endpoint({faults.url!r}, "fault", limits=Limits(concurrency=16)) as llm:
        resume = Resume(Journal({str(path)!r}), run_id="notebook")
        batch = run_batch(tasks, build_analysis_graph(llm), resume=resume)
        async for _ in batch:
            pass

asyncio.run(main())
"""
    process = subprocess.Popen([sys.executable, "-c", script], stderr=subprocess.PIPE)
    held = kill_when(process, path, N // 2)
    assert held < N
    before = faults.stats()["prompts"]
    tasks = [Task(id=f"t{i}", text=f"Text {i} reads well.") for i in range(N)]
    with Journal(path) as journal:
        async with Endpoint(faults.url, "fault", limits=Limits(concurrency=16)) as llm:
            resume = Resume(journal, run_id="notebook")
            batch = run_batch(tasks, build_analysis_graph(llm), resume=resume)
            results = [r async for r in batch]
        assert sorted(r.task_id for r in results) == sorted(t.id for t in tasks)
        assert batch.report.tasks_from_journal == held
        assert repeats(before, faults.stats()["prompts"]) <= IN_FLIGHT
        (info,) = journal.runs()
        assert info.run_id == "notebook" and info.finished and info.tasks == {"ok": N}
        assert [r["task_id"] for r in journal.records("notebook")] == [t.id for t in tasks]


async def test_a_finished_subtask_of_an_unfinished_task_is_reused(tmp_path, faults):
    """The first attempt's sentiment call answers; its keywords call hangs until the kill."""
    faults.configure(latency_ms=50)
    path = tmp_path / "journal.sqlite"
    task = Task(id="one", text="A long review that takes a while.")
    graph_llm = Endpoint(faults.url, "fault")
    journal = Journal(path)
    ledger = journal.begin("r", fingerprint="f")
    ledger.start(task, ledger.key(task))
    from anabranch.types import SubtaskResult

    kept = SubtaskResult(task_id="one", kind="sentiment", status="ok",
                         output={"label": "positive", "score": 0.9})  # fmt: skip
    ledger.record_subtask(kept)
    ledger.finish(None)  # the crash: the task itself was never delivered
    resume = Resume(journal, run_id="r", fingerprint="f")
    batch = run_batch([task], build_analysis_graph(graph_llm), resume=resume)
    [result] = [r async for r in batch]
    await graph_llm.aclose()
    journal.close()
    sentiment = result.output("sentiment")
    assert (sentiment.label, sentiment.score) == ("positive", 0.9)  # reused, not asked
    assert batch.report.subtasks_reused == 1
    assert faults.stats()["requests"] == 1  # keywords only


@pytest.mark.slow  # end to end through `anabranch` processes: over 8 s on a busy machine
def test_two_runs_on_one_journal_get_a_clear_error(tmp_path):
    path = tmp_path / "journal.sqlite"
    first = Journal(path)
    first.begin("a")
    with Journal(path) as second, pytest.raises(JournalBusyError, match="another run is using"):
        second.begin("b")
    tasks = tmp_path / "tasks.jsonl"
    write_tasks(tasks, 3)
    proc = run_cli("run", str(tasks), "--journal", str(path), "--out", str(tmp_path / "o"))
    assert proc.returncode == 2 and "another run is using" in proc.stderr
    first.close()


def test_a_journal_of_another_version_is_refused(tmp_path):
    path = tmp_path / "journal.sqlite"
    Journal(path).close()
    with sqlite3.connect(path) as db:
        db.execute("UPDATE meta SET value = '999' WHERE key = 'version'")
    with pytest.raises(JournalError, match="version 999"):
        Journal(path)
    (tmp_path / "junk").write_bytes(os.urandom(4096))
    with pytest.raises(JournalError, match="is not a journal"):
        Journal(tmp_path / "junk")


@pytest.mark.slow  # 15-20 s
def test_a_changed_task_is_run_again_and_counted(tmp_path):
    tasks, out = tmp_path / "tasks.jsonl", tmp_path / "out.jsonl"
    write_tasks(tasks, 5)
    assert run_cli("run", str(tasks), "--out", str(out)).returncode == 0
    lines = tasks.read_text().splitlines()
    lines[2] = json.dumps({"id": "t0002", "text": "Now it is broken and awful."})
    tasks.write_text("\n".join(lines) + "\n")
    again = run_cli("run", str(tasks), "--out", str(out))
    assert "5 tasks -> 4 from the journal -> 1 run" in again.stdout
    assert "1 changed since" in again.stdout
    results = {r["task_id"]: r for r in map(json.loads, out.read_text().splitlines())}
    assert len(results) == 5 and results["t0002"]["sentiment"] == "negative"
    fresh = run_cli("run", str(tasks), "--out", str(out), "--fresh")
    assert "0 from the journal -> 5 run" in fresh.stdout
    listing = run_cli("runs", str(tmp_path / "out.jsonl.journal"))
    assert "finished" in listing.stdout and "5 ok" in listing.stdout
    run_id = listing.stdout.split()[0]
    shown = run_cli("runs", "show", run_id, str(tmp_path / "out.jsonl.journal"))
    assert "5 tasks -> 0 from the journal -> 5 run" in shown.stdout
    assert Counter(output_ids(out)) == Counter(f"t{i:04d}" for i in range(5))


@pytest.mark.slow  # end to end through `anabranch` processes: over 8 s on a busy machine
@pytest.mark.parametrize(("sig", "code"), [(signal.SIGTERM, 143), (signal.SIGINT, 130)])
def test_a_signal_flushes_the_journal_and_prints_the_resume_line(tmp_path, faults, sig, code):
    faults.configure(latency_ms=150)
    tasks, out = tmp_path / "tasks.jsonl", tmp_path / "out.jsonl"
    journal = tmp_path / "out.jsonl.journal"
    ids = write_tasks(tasks, 120)
    command = [str(tasks), "--out", str(out), "--llm", faults.url, "--model", "fault"]
    run = start_run(*command)
    deadline = time.monotonic() + 120
    while delivered(journal) < 10:
        assert run.poll() is None, run.communicate()
        assert time.monotonic() < deadline, "the run made no progress"
        time.sleep(0.02)
    run.send_signal(sig)
    _, err = run.communicate(timeout=60)
    stderr = err.decode()
    assert run.returncode == code, stderr
    found = re.search(
        r"interrupted: (\d+) of 120 delivered; run the same command to resume", stderr
    )
    assert found, stderr
    assert "Traceback" not in stderr
    held = delivered(journal)
    assert int(found.group(1)) == held  # what it says is what the journal holds: flushed
    assert sorted(whole_lines(out)) == sorted(output_ids(out)) and len(output_ids(out)) == held
    final = run_cli("run", *command)
    assert final.returncode == 0, final.stderr
    assert f"{held} from the journal" in final.stdout and output_ids(out) == ids
