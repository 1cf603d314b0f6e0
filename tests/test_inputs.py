"""Reading task files: every line is a task or a rejection that names its line, nothing else."""

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
