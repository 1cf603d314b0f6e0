"""Reading tasks from JSONL: every line becomes a Task or an InputError that names its line.

A bad line never stops the file: the error travels on as a rejected result, so the output has one
record per input line and nothing is silently dropped. What counts as bad:
- a line that is not JSON, not an object, or has no string `text`;
- a line that is not valid UTF-8 (named, never silently repaired);
- an empty id, or an id a previous line already used: the second is rejected, the first runs,
  because results are keyed by id and two results with one id could not be told apart;
- a line `json` cannot read at all: nested deeper than `MAX_DEPTH`, or a number with more digits
  than Python converts (4,300): one such line must not sink the batch;
- a line longer than `max_line_bytes` (`MAX_LINE_BYTES` by default): it is skipped as it is
  read, never held whole, so a runaway line costs neither memory nor hours of chunking.
A UTF-8 byte-order mark at the start of the file is skipped. Ids may be strings or numbers
(`0` is the id "0"); a line without one gets `line-N`. `-` is standard input.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Iterator
from importlib import resources
from pathlib import Path
from typing import IO

from pydantic import ValidationError

from anabranch.errors import InputError, describe
from anabranch.types import Task

_BOM = b"\xef\xbb\xbf"

MAX_LINE_BYTES = 1024 * 1024
"""The longest task line read, in bytes (1 MiB: some 250,000 tokens, about 1,000 chunks; such a
line took 50 s with the local analysers here, 256 KiB 11 s). Longer lines are rejected by
number; `--max-line-bytes` changes it."""

MAX_DEPTH = 64
"""How deep a line's JSON may nest. Tasks are shallow; a deeper line is rejected before it can
exhaust the recursion of the code that walks it (pydantic, hashing, the journal)."""

_READ = 1024 * 1024
"""How much of an overlong line is read at a time while it is skipped."""


def input_path(name: str | Path) -> Path:
    """The file a task input names: `-` is standard input."""
    return Path("/dev/stdin") if str(name) == "-" else Path(name)


def _lines(f: IO[bytes], limit: int) -> Iterator[bytes | None]:
    """The file's lines, or None for each line over `limit` bytes (skipped, never held)."""
    while True:
        raw = f.readline(limit + 1)
        if not raw:
            return
        if len(raw) <= limit or (raw.endswith(b"\n") and len(raw) == limit + 1):
            yield raw
            continue
        while raw and not raw.endswith(b"\n"):  # the rest of the overlong line
            raw = f.readline(_READ)
        yield None


def example_tasks() -> Path:
    """The 100 example tasks shipped with the package (what `anabranch demo` runs)."""
    return Path(str(resources.files("anabranch") / "data" / "example_tasks.jsonl"))


def read_tasks(
    path: str | Path, *, max_line_bytes: int = MAX_LINE_BYTES
) -> Iterator[Task | InputError]:
    """Yield one Task or InputError per non-blank line, reading the file as it goes."""
    path = input_path(path)
    seen: set[str] = set()
    with path.open("rb") as f:
        for number, raw in enumerate(_lines(f, max_line_bytes), start=1):
            source, default_id = f"{path}:{number}", f"line-{number}"
            if raw is None:
                yield InputError(
                    f"{source}: the line is over {max_line_bytes} bytes, the limit for one task "
                    "(skipped; the limit is max_line_bytes)",
                    task_id=default_id,
                )
                continue
            if number == 1:
                raw = raw.removeprefix(_BOM)
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


def count_task_lines(path: str | Path, *, max_line_bytes: int = MAX_LINE_BYTES) -> int:
    """How many tasks `read_tasks` will yield (non-blank lines), without holding the file."""
    with Path(path).open("rb") as f:
        return sum(1 for raw in _lines(f, max_line_bytes)
                   if raw is None or (raw.strip() and raw.strip() != _BOM))  # fmt: skip


def parse_task_line(line: str, *, source: str, default_id: str) -> Task | InputError:
    """One line as a Task, or an InputError that starts with `source` and says what is wrong."""
    try:
        data = json.loads(line)
    except json.JSONDecodeError as exc:
        return InputError(
            f"{source}: not valid JSON: {exc.msg} at column {exc.colno}", task_id=default_id
        )
    except RecursionError:
        return InputError(f"{source}: nested too deeply (over {MAX_DEPTH} levels)",
                          task_id=default_id)  # fmt: skip
    except ValueError:  # a number past Python's digit limit for int()
        digits = sys.get_int_max_str_digits()
        return InputError(f"{source}: number too long to read (over {digits} digits)",
                          task_id=default_id)  # fmt: skip
    if line.count("[") + line.count("{") > MAX_DEPTH and _depth(data) > MAX_DEPTH:
        return InputError(f"{source}: nested too deeply (over {MAX_DEPTH} levels)",
                          task_id=default_id)  # fmt: skip
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


def _depth(data: object) -> int:
    """How deep `data` nests, walked without recursion."""
    deepest, stack = 0, [(data, 1)]
    while stack:
        item, level = stack.pop()
        deepest = max(deepest, level)
        if isinstance(item, dict):
            stack.extend((v, level + 1) for v in item.values())
        elif isinstance(item, list):
            stack.extend((v, level + 1) for v in item)
    return deepest
