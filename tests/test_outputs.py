"""Where results go: standard output, devices, FIFOs, symlinks, files; never over the input, never
truncated before the run holds its lock, and a write that fails is exit 2 with its cause.

The disk-full and read-only cases run the real command inside a mount namespace of its own
(util-linux's `unshare`), on a small tmpfs or a read-only bind mount, as a user's disk would be.
"""

from __future__ import annotations

import json
import os
import shlex
import shutil
import stat
import subprocess
import sys
import threading

import pytest
from conftest import ROOT, run_cli, write_tasks

from anabranch.analysis.records import analysis_line
from anabranch.journal import Journal
from anabranch.outputs import ResultsFile


def ids_of(text: str) -> list[str]:
    return [json.loads(line)["task_id"] for line in text.splitlines()]


def test_out_dash_streams_results_into_jq(tmp_path):
    if shutil.which("jq") is None:
        raise AssertionError("this test needs jq (the Makefile's install step puts it there)")
    tasks = tmp_path / "tasks.jsonl"
    ids = write_tasks(tasks, 6)
    cli = subprocess.Popen(
        [sys.executable, "-m", "anabranch", "run", str(tasks), "--out", "-", "--no-journal"],
        cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
    )  # fmt: skip
    jq = subprocess.run(["jq", "-r", ".task_id"], stdin=cli.stdout, capture_output=True, text=True)
    assert cli.stdout is not None and cli.stderr is not None
    cli.stdout.close()
    err = cli.stderr.read().decode()
    assert cli.wait() == 0, err
    assert jq.returncode == 0, jq.stderr
    assert sorted(jq.stdout.split()) == ids  # every result, and nothing else, on stdout
    assert "6 tasks" in err and "results: standard output" in err  # the trace went to stderr
    assert list(tmp_path.iterdir()) == [tasks]  # no file beside it: no journal, no output


def test_out_dash_with_a_journal_puts_it_in_the_working_directory(tmp_path):
    tasks = tmp_path / "tasks.jsonl"
    ids = write_tasks(tasks, 3)
    proc = run_cli("run", str(tasks), "--out", "-", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert sorted(ids_of(proc.stdout)) == ids
    journal = tmp_path / "stdout.journal"
    assert "journal: stdout.journal" in proc.stderr and journal.is_file()


def test_a_fifo_output_stays_a_fifo(tmp_path):
    tasks, pipes = tmp_path / "tasks.jsonl", tmp_path / "pipes"
    ids = write_tasks(tasks, 5)
    pipes.mkdir()
    fifo = pipes / "results.fifo"
    os.mkfifo(fifo)
    got: list[str] = []

    def read() -> None:
        with fifo.open() as f:
            got.extend(f.read().splitlines())

    reader = threading.Thread(target=read)
    reader.start()
    proc = run_cli("run", str(tasks), "--out", str(fifo), cwd=tmp_path)
    reader.join(timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert stat.S_ISFIFO(fifo.lstat().st_mode)  # not replaced by a regular file
    assert sorted(ids_of("\n".join(got))) == ids
    assert list(pipes.iterdir()) == [fifo]  # no journal beside a FIFO: in the working directory
    assert (tmp_path / "results.fifo.journal").is_file()
    assert "journal: results.fifo.journal" in proc.stdout


@pytest.mark.slow  # end to end through `anabranch` processes: over 8 s on a busy machine
def test_a_symlink_output_stays_a_symlink_and_its_target_gets_the_results(tmp_path):
    tasks, target, link = tmp_path / "tasks.jsonl", tmp_path / "real.jsonl", tmp_path / "out"
    ids = write_tasks(tasks, 4)
    target.write_text("")
    link.symlink_to(target.name)
    for _ in range(2):  # the second run resumes and rewrites from the journal
        proc = run_cli("run", str(tasks), "--out", str(link), cwd=tmp_path)
        assert proc.returncode == 0, proc.stderr
        assert link.is_symlink() and os.readlink(link) == target.name
        assert ids_of(target.read_text()) == ids


@pytest.mark.slow  # end to end through `anabranch` processes: over 8 s on a busy machine
@pytest.mark.parametrize("flags", [["--fresh"], ["--no-journal"], []])
def test_a_hard_link_to_the_input_is_refused_and_the_input_survives(tmp_path, flags):
    tasks = tmp_path / "tasks.jsonl"
    write_tasks(tasks, 3)
    original = tasks.read_bytes()
    alias = tmp_path / "alias.jsonl"
    os.link(tasks, alias)
    proc = run_cli("run", str(tasks), "--out", str(alias), *flags, cwd=tmp_path)
    assert proc.returncode == 2, proc.stderr
    assert "is the input" in proc.stderr and "Traceback" not in proc.stderr
    assert tasks.read_bytes() == original
    assert sorted(p.name for p in tmp_path.iterdir()) == ["alias.jsonl", "tasks.jsonl"]


def test_a_full_device_is_exit_2_disk_full_and_stays_a_device(tmp_path):
    if not os.path.exists("/dev/full"):
        raise AssertionError("this test needs /dev/full")
    tasks = tmp_path / "tasks.jsonl"
    write_tasks(tasks, 3)
    proc = run_cli("run", str(tasks), "--out", "/dev/full", "--no-journal", cwd=tmp_path)
    assert proc.returncode == 2, proc.stderr
    assert "disk full" in proc.stderr and "Traceback" not in proc.stderr
    assert stat.S_ISCHR(os.lstat("/dev/full").st_mode)
    assert not os.path.exists("/dev/full.journal")


def test_a_fresh_run_on_a_journal_in_use_truncates_nothing(tmp_path):
    tasks, out, path = tmp_path / "tasks.jsonl", tmp_path / "out.jsonl", tmp_path / "j.sqlite"
    write_tasks(tasks, 3)
    out.write_text("what the live run wrote\n")
    with Journal(path) as live:
        live.lock()
        proc = run_cli("run", str(tasks), "--out", str(out), "--journal", str(path), "--fresh")
    assert proc.returncode == 2 and "another run is using" in proc.stderr
    assert out.read_text() == "what the live run wrote\n"


def test_a_run_without_a_journal_refuses_an_output_another_run_writes(tmp_path):
    tasks, out = tmp_path / "tasks.jsonl", tmp_path / "out.jsonl"
    write_tasks(tasks, 3)
    out.write_text("being written\n")
    with ResultsFile(out) as live:  # what a run holds while it writes the file
        live.lock()
        proc = run_cli("run", str(tasks), "--out", str(out), "--no-journal")
    assert proc.returncode == 2 and "another run is writing" in proc.stderr, proc.stderr
    assert out.read_text() == "being written\n"


@pytest.mark.slow  # end to end through `anabranch` processes: over 8 s on a busy machine
def test_the_library_exports_a_run_as_its_output_file(tmp_path):
    tasks, out = tmp_path / "tasks.jsonl", tmp_path / "out.jsonl"
    ids = write_tasks(tasks, 4)
    assert run_cli("run", str(tasks), "--out", str(out)).returncode == 0
    listing = run_cli("runs", str(tmp_path / "out.jsonl.journal"))
    run_id = listing.stdout.split()[0]
    copy = tmp_path / "copy.jsonl"
    with Journal(tmp_path / "out.jsonl.journal") as journal:
        assert journal.export(run_id, copy, line=analysis_line) == 4
    assert copy.read_text() == out.read_text() and ids_of(copy.read_text()) == ids


def in_namespace(script: str, tmp_path) -> subprocess.CompletedProcess[str]:
    """Run a shell script in a mount namespace of its own (mounts vanish with it)."""
    if shutil.which("unshare") is None:
        raise AssertionError("this test needs util-linux's `unshare`")
    return subprocess.run(["unshare", "--mount", "sh", "-ec", script], capture_output=True,
                          text=True, cwd=ROOT, timeout=300)  # fmt: skip


def cli_line(*args: object) -> str:
    return shlex.join([sys.executable, "-m", "anabranch", *map(str, args)])


@pytest.mark.slow  # end to end through `anabranch` processes: over 8 s on a busy machine
@pytest.mark.parametrize("journal", [False, True])
def test_a_full_disk_is_exit_2_with_its_cause(tmp_path, journal):
    tasks, disk = tmp_path / "tasks.jsonl", tmp_path / "disk"
    write_tasks(tasks, 200)  # some 200 kB of results: more than the 64 kB disk holds
    disk.mkdir()
    flags = [] if journal else ["--no-journal"]
    proc = in_namespace(
        f"mount -t tmpfs -o size=64k tmpfs {disk}\n"
        f"{cli_line('run', tasks, '--out', disk / 'out.jsonl', *flags)}",
        tmp_path,
    )
    assert proc.returncode == 2, proc.stderr
    assert "disk full" in proc.stderr and "Traceback" not in proc.stderr, proc.stderr


@pytest.mark.slow  # end to end through `anabranch` processes: over 8 s on a busy machine
@pytest.mark.parametrize("what", ["journal", "output"])
def test_a_read_only_journal_or_output_is_exit_2_with_its_cause(tmp_path, what):
    tasks, ro = tmp_path / "tasks.jsonl", tmp_path / "ro"
    write_tasks(tasks, 3)
    ro.mkdir()
    journal, out = tmp_path / "j.sqlite", tmp_path / "out.jsonl"
    if what == "journal":
        journal = ro / "j.sqlite"
    else:
        out = ro / "out.jsonl"
    first = run_cli("run", str(tasks), "--out", str(out), "--journal", str(journal))
    assert first.returncode == 0, first.stderr
    proc = in_namespace(
        f"mount --bind {ro} {ro}\nmount -o remount,ro,bind {ro}\n"
        f"{cli_line('run', tasks, '--out', out, '--journal', journal, '--fresh')}",
        tmp_path,
    )
    assert proc.returncode == 2, proc.stderr
    assert "read-only" in proc.stderr and "Traceback" not in proc.stderr, proc.stderr


@pytest.mark.slow  # end to end through `anabranch` processes: over 8 s on a busy machine
def test_a_corrupt_journal_says_how_to_start_over_and_fresh_can(tmp_path):
    tasks, out, path = tmp_path / "tasks.jsonl", tmp_path / "out.jsonl", tmp_path / "j.sqlite"
    ids = write_tasks(tasks, 3)
    path.write_bytes(b"this is no database" * 300)
    proc = run_cli("run", str(tasks), "--out", str(out), "--journal", str(path))
    assert proc.returncode == 2 and "is not a journal" in proc.stderr
    assert "--fresh" in proc.stderr
    fresh = run_cli("run", str(tasks), "--out", str(out), "--journal", str(path), "--fresh")
    assert fresh.returncode == 0, fresh.stderr
    assert ids_of(out.read_text()) == ids
