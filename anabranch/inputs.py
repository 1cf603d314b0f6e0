"""Reading tasks from JSONL: every line becomes a Task or an InputError that names its line.

A bad line never stops the file: the error travels on as a rejected result, so the output has one
record per input line and nothing is silently dropped. What counts as bad:
- a line that is not JSON, not an object, or has no string `text`;
- a line that is not valid UTF-8 (named, never silently repaired);
- an empty id, or an id a previous line already used: the second is rejected, the first runs,
  because results are keyed by id and two results with one id could not be told apart.
A UTF-8 byte-order mark at the start of the file is skipped. Ids may be strings or numbers
(`0` is the id "0"); a line without one gets `line-N`.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from importlib import resources
from pathlib import Path

from pydantic import ValidationError

from anabranch.errors import InputError, describe
from anabranch.types import Task

_BOM = b"\xef\xbb\xbf"


def example_tasks() -> Path:
    """The 100 example tasks shipped with the package (what `anabranch demo` runs)."""
    return Path(str(resources.files("anabranch") / "data" / "example_tasks.jsonl"))


def read_tasks(path: str | Path) -> Iterator[Task | InputError]:
    """Yield one Task or InputError per non-blank line, reading the file as it goes."""
    path = Path(path)
    seen: set[str] = set()
    with path.open("rb") as lines:
        for number, raw in enumerate(lines, start=1):
            if number == 1:
                raw = raw.removeprefix(_BOM)
            source, default_id = f"{path}:{number}", f"line-{number}"
            try:
                line = raw.decode("utf-8")
            except UnicodeDecodeError as exc:
                yield InputError(
                    f"{source}: not valid UTF-8 (byte {exc.start + 1} of the line)",
                    task_id=default_id,
                )
                continue
            if not line.strip():
                continue
            item = parse_task_line(line, source=source, default_id=default_id)
            if isinstance(item, Task):
                if item.id in seen:
                    item = InputError(
                        f"{source}: duplicate id {item.id!r} (an earlier line has it; this one "
                        "is not run)",
                        task_id=f"{item.id}@line-{number}",
                    )
                else:
                    seen.add(item.id)
            yield item


def count_task_lines(path: str | Path) -> int:
    """How many tasks `read_tasks` will yield (non-blank lines), without holding the file."""
    with Path(path).open("rb") as lines:
        return sum(1 for raw in lines if raw.strip() and raw.strip() != _BOM)


def parse_task_line(line: str, *, source: str, default_id: str) -> Task | InputError:
    """One line as a Task, or an InputError that starts with `source` and says what is wrong."""
    try:
        data = json.loads(line)
    except json.JSONDecodeError as exc:
        return InputError(
            f"{source}: not valid JSON: {exc.msg} at column {exc.colno}", task_id=default_id
        )
    if not isinstance(data, dict):
        return InputError(
            f"{source}: expected a JSON object, got {type(data).__name__}", task_id=default_id
        )
    raw_id = data.get("id")
    if raw_id is None:
        task_id = default_id
    elif isinstance(raw_id, str | int) and not isinstance(raw_id, bool) and str(raw_id).strip():
        task_id = str(raw_id)
    else:
        return InputError(
            f"{source}: 'id' must be a non-empty string or a number, got {raw_id!r}",
            task_id=default_id,
        )
    if not isinstance(data.get("text"), str):
        found = "missing" if "text" not in data else f"a {type(data['text']).__name__}"
        return InputError(f"{source}: task needs a string 'text' ({found})", task_id=task_id)
    try:
        return Task.model_validate({**data, "id": task_id})
    except ValidationError as exc:
        return InputError(f"{source}: {describe(exc)}", task_id=task_id)
