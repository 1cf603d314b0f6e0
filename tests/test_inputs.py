"""Reading task files: every line is a task or a rejection that names its line, nothing else."""

import json
import subprocess
import sys

import pytest
from conftest import run_cli

from anabranch import Task, read_tasks
from anabranch.errors import InputError
from anabranch.inputs import count_task_lines


def read(tmp_path, data: bytes) -> list[Task | InputError]:
    path = tmp_path / "tasks.jsonl"
    path.write_bytes(data)
    items = list(read_tasks(path))
    assert count_task_lines(path) == len(items)
    return items


def test_a_byte_order_mark_is_not_part_of_line_one(tmp_path):
    (task,) = read(tmp_path, b'\xef\xbb\xbf{"id": "a", "text": "x"}\n')
    assert isinstance(task, Task) and task.id == "a"


def test_a_second_line_with_the_same_id_is_rejected_by_name(tmp_path):
    first, second = read(tmp_path, b'{"id": "a", "text": "x"}\n{"id": "a", "text": "y"}\n')
    assert isinstance(first, Task) and first.text == "x"
    assert isinstance(second, InputError) and second.task_id == "a@line-2"
    assert "tasks.jsonl:2: duplicate id 'a'" in str(second)


def test_ids_zero_and_empty(tmp_path):
    zero, empty, boolean = read(
        tmp_path,
        b'{"id": 0, "text": "x"}\n{"id": "", "text": "x"}\n{"id": true, "text": "x"}\n',
    )
    assert isinstance(zero, Task) and zero.id == "0"
    assert isinstance(empty, InputError) and "'id' must be a non-empty string" in str(empty)
    assert isinstance(boolean, InputError) and empty.task_id == "line-2"


def test_invalid_utf8_is_named_and_the_rest_still_reads(tmp_path):
    bad, good = read(tmp_path, b'{"id": "a", "text": "caf\xe9"}\n{"id": "b", "text": "ok"}\n')
    assert isinstance(bad, InputError) and "tasks.jsonl:1: not valid UTF-8" in str(bad)
    assert isinstance(good, Task) and good.id == "b"


def test_a_malformed_line_reads_as_a_whole_sentence(tmp_path):
    (bad,) = read(tmp_path, b"{not json\n")
    message = str(bad)
    assert message.endswith("not valid JSON: Expecting property name enclosed in double quotes "
                            "at column 2")  # fmt: skip


def test_lines_json_cannot_parse_are_rejected_by_number(tmp_path):
    deep = b'{"id": "deep", "text": "x", "metadata": ' + b"[" * 100_000 + b"]" * 100_000 + b"}"
    huge = b'{"id": "huge", "text": "x", "n": ' + b"7" * 5_000 + b"}"
    nested = b'{"id": "nest", "text": "x", "metadata": {"a": ' + b"[" * 900 + b"]" * 900 + b"}}"
    good, deep_bad, huge_bad, nest_bad, last = read(
        tmp_path,
        b'{"id": "a", "text": "x"}\n' + deep + b"\n" + huge + b"\n" + nested + b"\n"
        b'{"id": "b", "text": "y"}\n',
    )
    assert isinstance(good, Task) and isinstance(last, Task) and last.id == "b"
    assert isinstance(deep_bad, InputError) and "tasks.jsonl:2: " in str(deep_bad)
    assert "nested too deeply" in str(deep_bad)
    assert isinstance(huge_bad, InputError) and "tasks.jsonl:3: " in str(huge_bad)
    assert "number too long" in str(huge_bad)
    assert isinstance(nest_bad, InputError) and "tasks.jsonl:4: nested too deeply" in str(nest_bad)


def test_a_line_over_the_size_limit_is_rejected_and_never_held_whole(tmp_path):
    path = tmp_path / "tasks.jsonl"
    giant = b'{"id": "big", "text": "' + b"word " * 200_000 + b'"}'
    path.write_bytes(b'{"id": "a", "text": "x"}\n' + giant + b'\n{"id": "b", "text": "y"}\n')
    first, big, last = read_tasks(path, max_line_bytes=100_000)
    assert isinstance(first, Task) and isinstance(last, Task) and last.id == "b"
    assert isinstance(big, InputError) and big.task_id == "line-2"
    assert "tasks.jsonl:2: the line is over 100000 bytes" in str(big)
    assert count_task_lines(path) == 3


def test_the_cli_delivers_the_good_lines_around_the_ones_json_cannot_read(tmp_path):
    tasks, out = tmp_path / "tasks.jsonl", tmp_path / "out.jsonl"
    tasks.write_bytes(
        b'{"id": "a", "text": "I love it."}\n'
        b'{"id": "deep", "text": "x", "m": ' + b"[" * 100_000 + b"]" * 100_000 + b"}\n"
        b'{"id": "huge", "text": "x", "n": ' + b"9" * 5_000 + b"}\n"
        b'{"id": "b", "text": "Awful."}\n'
    )
    proc = run_cli("run", str(tasks), "--out", str(out), "--no-journal")
    assert proc.returncode == 2, proc.stderr
    assert "Traceback" not in proc.stderr
    assert f"{tasks}:2: nested too deeply" in proc.stderr
    assert f"{tasks}:3: number too long" in proc.stderr
    results = {r["task_id"]: r["status"] for r in map(json.loads, out.read_text().splitlines())}
    assert results == {"a": "ok", "line-2": "rejected", "line-3": "rejected", "b": "ok"}


def test_an_empty_input_says_0_tasks(tmp_path):
    tasks = tmp_path / "tasks.jsonl"
    tasks.write_text("\n\n")
    proc = run_cli("run", str(tasks), "--out", str(tmp_path / "o.jsonl"), "--no-journal")
    assert proc.returncode == 0, proc.stderr
    assert f"{tasks}: 0 tasks" in proc.stderr


@pytest.mark.slow  # end to end through `anabranch` processes: over 8 s on a busy machine
def test_standard_input_is_an_input(tmp_path):
    text = '{"id": "a", "text": "Fine."}\n{"id": "b", "text": "Bad."}\n'
    for name in ("-", "/dev/stdin"):
        proc = subprocess.run(
            [sys.executable, "-m", "anabranch", "run", name, "--out", "-", "--no-journal"],
            input=text, capture_output=True, text=True, cwd=tmp_path,
        )  # fmt: skip
        assert proc.returncode == 0, proc.stderr
        # results come in completion order: two tasks may finish either way round
        ids = sorted(json.loads(line)["task_id"] for line in proc.stdout.splitlines())
        assert ids == ["a", "b"]
