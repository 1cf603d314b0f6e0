"""Where a run's results go: a JSONL file that is a view of the journal, or a stream.

A regular file is written as results complete and, with a journal, rewritten from it in input
order at the end (docs/architecture.md, rule 10): the rewrite goes to a temporary file renamed
over the output, so a reader never sees half a file. Anything that is not a regular file is a
stream, written in place and never renamed over: standard output (`-`), a device (`/dev/null`,
`/dev/full`), a FIFO. A symlink is followed: its target is the output, and the link stays.

Two rules keep a user's files safe:
- the output is never the input, under any name: hard links and symlinks are compared by device
  and inode;
- nothing is truncated before the run holds the output's lock (an `flock` on the file, carried
  over to the rewritten file before it is renamed into place), so a second run that targets a
  file another run is writing is refused and leaves it as it was.

A write that fails raises `OutputError` naming its cause ("disk full", "read-only file system",
"the reader closed the pipe").
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import os
import stat
import sys
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import IO

from anabranch.errors import OutputError
from anabranch.store import cause
from anabranch.types import TaskResult

STDOUT = "-"
"""The output name that means standard output."""

Line = Callable[[TaskResult], str]
"""How a result reads as one line of the output (an application may flatten it, as the analysis
does with `AnalysisRecord`)."""


def as_json(result: TaskResult) -> str:
    """A result as its own JSON: the default line."""
    return result.model_dump_json()


class ResultsFile:
    """One run's output: lock it, start it (emptied, or holding what the journal already has),
    write results as they come, rewrite it from the journal at the end, close it."""

    def __init__(
        self, target: str | Path, *, input: str | Path | None = None, line: Line = as_json
    ) -> None:
        self.name = str(target)
        """The output as the user named it, for messages."""
        self.path: Path | None = None if self.name in (STDOUT, "/dev/stdout") else Path(target)
        """The file, or None for standard output."""
        self.created = False
        """This run made the file (so a run that cannot start removes it again)."""
        self.started = False
        """`start` was called: the output's old content is gone."""
        self._line = line
        self._stream: IO[str] | None = None
        self._special = self.path is None
        if self.path is not None:
            self.path = Path(os.path.realpath(self.path))  # a symlink's target is the output
            with contextlib.suppress(OSError):  # not there yet: a file, made by lock()
                self._special = not stat.S_ISREG(self.path.stat().st_mode)
        if input is not None:
            self._refuse_the_input(Path(input))

    @property
    def streamed(self) -> bool:
        """Written in place as results come, never rewritten: stdout, a device or a FIFO."""
        return self._special

    def _refuse_the_input(self, input: Path) -> None:
        if self.path is None:
            return
        try:
            given, out = input.stat(), self.path.stat()
        except OSError:  # one of them does not exist yet: they are not the same file
            return
        if (given.st_dev, given.st_ino) == (out.st_dev, out.st_ino) and not self._special:
            raise OutputError(f"{self.name} is the input {input} (the same file, under another "
                              "name): writing results there would destroy the tasks")  # fmt: skip

    def lock(self) -> None:
        """Take the output for this run, touching nothing in it; OutputError if another run
        holds it. Streams need no lock."""
        if self._special or self._stream is not None:
            return
        assert self.path is not None
        self.created = not self.path.exists()
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)  # never truncated here
            stream = open(fd, "a", encoding="utf-8")  # noqa: SIM115 - held until close()
        except (FileExistsError, NotADirectoryError) as exc:
            raise OutputError(f"cannot write results to {self.name}: a part of its folder "
                              "is a file, not a folder") from exc  # fmt: skip
        except OSError as exc:
            raise self._error(exc) from exc
        try:
            fcntl.flock(stream, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            stream.close()
            raise OutputError(f"another run is writing {self.name} right now; wait for it to "
                              "end, or give this run another output") from None  # fmt: skip
        self._stream = stream

    def start(self, kept: Iterable[TaskResult] = ()) -> None:
        """Open the output for this run's results: a file holds `kept` (what the journal already
        delivered) and nothing else; a stream gets everything as it comes."""
        if self._special:
            try:
                self._stream = (
                    sys.stdout
                    if self.path is None
                    else open(  # noqa: SIM115
                        self.path, "w", encoding="utf-8"
                    )
                )
            except OSError as exc:
                raise self._error(exc) from exc
            return
        self.lock()
        self.rewrite(kept)

    def write(self, result: TaskResult) -> None:
        """One result, flushed: an interrupted run keeps what it finished."""
        assert self._stream is not None, "start() the output first"
        try:
            self._stream.write(self._line(result) + "\n")
            self._stream.flush()
        except OSError as exc:
            raise self._error(exc) from exc

    def rewrite(self, results: Iterable[TaskResult]) -> int:
        """Replace a file's content with `results` at once (never a partial line, never a task
        twice); the lock moves to the new file before it takes the name. A stream gets
        `results` written to it. Returns how many were written."""
        if self._special:
            if self._stream is None:
                self.start()
            count = 0
            for result in results:
                self.write(result)
                count += 1
            return count
        assert self.path is not None
        if self._stream is None:
            self.lock()
        partial = self.path.with_name(self.path.name + ".partial")
        try:
            stream = open(partial, "w", encoding="utf-8")  # noqa: SIM115 - held until close()
        except OSError as exc:
            raise self._error(exc) from exc
        count = 0
        try:
            fcntl.flock(stream, fcntl.LOCK_EX)
            for result in results:
                stream.write(self._line(result) + "\n")
                count += 1
            stream.flush()
            os.replace(partial, self.path)
        except OSError as exc:
            _close_quietly(stream)
            with contextlib.suppress(OSError):
                partial.unlink()
            raise self._error(exc) from exc
        if self._stream is not None:
            _close_quietly(self._stream)
        self._stream = stream
        return count

    def discard(self) -> None:
        """Undo a run that could not start: a file it created goes again."""
        self.close()
        if self.created and self.path is not None:
            with contextlib.suppress(OSError):
                self.path.unlink()

    def close(self) -> None:
        """Flush and close; a failing flush is an OutputError with its cause."""
        stream, self._stream = self._stream, None
        if stream is None or stream is sys.stdout:
            if stream is not None:
                try:
                    stream.flush()
                except OSError as exc:
                    raise self._error(exc) from exc
            return
        try:
            stream.close()
        except OSError as exc:
            raise self._error(exc) from exc

    def close_quietly(self) -> None:
        """Close after an error: a failing flush would only repeat it."""
        if self._stream is not None:
            _close_quietly(self._stream)
            self._stream = None

    def __enter__(self) -> ResultsFile:
        return self

    def __exit__(self, kind: object, *rest: object) -> None:
        if kind is None:
            self.close()
        else:  # already failing: keep that error, not a second one
            self.close_quietly()

    def _error(self, exc: OSError) -> OutputError:
        if exc.errno == errno.EPIPE and self.path is None:
            # Nothing more can reach the reader; let the interpreter's own final flush of
            # stdout find somewhere to go instead of printing a second error.
            devnull = os.open(os.devnull, os.O_WRONLY)
            os.dup2(devnull, sys.stdout.fileno())
        where = "standard output" if self.path is None else self.name
        return OutputError(f"cannot write results to {where}: {cause(exc)}")


def _close_quietly(stream: IO[str]) -> None:
    if stream is sys.stdout:
        return
    with contextlib.suppress(OSError):
        stream.close()  # a flush that fails here repeats an error already raised
