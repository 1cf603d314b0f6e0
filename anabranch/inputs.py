"""Reading tasks from JSONL: every line becomes a Task or an InputError that names its line.

A bad line never stops the file: the error travels on as a rejected result, so the output has one
record per input line and nothing is silently dropped.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

from pydantic import ValidationError

from anabranch.errors import InputError, describe
from anabranch.types import Task


def read_tasks(path: str | Path) -> Iterator[Task | InputError]:
    """Yield one Task or InputError per non-blank line; ids default to `line-N`."""
    path = Path(path)
    with path.open(encoding="utf-8", errors="replace") as lines:
        for number, line in enumerate(lines, start=1):
            if line.strip():
                yield parse_task_line(line, source=f"{path}:{number}", default_id=f"line-{number}")


def parse_task_line(line: str, *, source: str, default_id: str) -> Task | InputError:
    try:
        data = json.loads(line)
    except json.JSONDecodeError as exc:
        return InputError(f"{source}: not valid JSON ({exc.msg})", task_id=default_id)
    if not isinstance(data, dict):
        return InputError(
            f"{source}: expected a JSON object, got {type(data).__name__}", task_id=default_id
        )
    task_id = str(data.get("id") or default_id)
    if not isinstance(data.get("text"), str):
        found = "missing" if "text" not in data else f"a {type(data['text']).__name__}"
        return InputError(f"{source}: task needs a string 'text' ({found})", task_id=task_id)
    try:
        return Task.model_validate({**data, "id": task_id})
    except ValidationError as exc:
        return InputError(f"{source}: {describe(exc)}", task_id=task_id)
