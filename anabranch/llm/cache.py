"""The cache layer: an answer already given to the same request is given again, at no cost.

Opt-in (`Endpoint(..., cache=ResponseCache(path))`, `--cache PATH`). The key is the whole request
(server, model, messages, response format, sampling settings), and only deterministic requests
(temperature 0) are cached unless `any_temperature` says otherwise: a sampled answer is one draw,
not the answer. A hit sends no request and takes no slot; it is counted as cached in the usage.
Streams are not cached (their text is shown as it comes). Token probabilities asked for with the
answer are kept with it.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
from collections import OrderedDict
from pathlib import Path
from typing import Any

from anabranch.errors import StoreError
from anabranch.llm.transport import Answer, Tokens
from anabranch.store import Writer, connect

_SCHEMA = """
CREATE TABLE IF NOT EXISTS answers (
    key TEXT PRIMARY KEY, text TEXT NOT NULL, prompt_tokens INTEGER NOT NULL,
    completion_tokens INTEGER NOT NULL, finish_reason TEXT, alternatives TEXT
)
"""
_COLUMNS = "key, text, prompt_tokens, completion_tokens, finish_reason, alternatives"


_RECENT = 4096
"""Answers kept in memory after a put: more than the writer can have pending."""


class ResponseCache:
    """A SQLite file of answers keyed by request. Share one between endpoints if you like."""

    def __init__(self, path: str | Path, *, any_temperature: bool = False) -> None:
        self.path = Path(path)
        self.any_temperature = any_temperature
        """Cache sampled answers too (temperature above 0): a re-run then repeats one draw."""
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._db = connect(self.path)
            with self._db:
                self._db.execute(_SCHEMA)
                columns = {row[1] for row in self._db.execute("PRAGMA table_info(answers)")}
                if "alternatives" not in columns:  # a cache written before probabilities were kept
                    self._db.execute("ALTER TABLE answers ADD COLUMN alternatives TEXT")
        except OSError as exc:
            raise StoreError(f"cannot open a cache at {self.path}: {exc.strerror}") from exc
        except Exception as exc:
            raise StoreError(f"{self.path} is not a response cache ({exc})") from exc
        self._writer = Writer(self.path)
        self._recent: OrderedDict[str, Answer | None] = OrderedDict()
        """The latest puts and discards, which the writer may not have committed yet."""

    def key(self, server: str, params: dict[str, Any]) -> str | None:
        """The request's key, or None when it is not to be cached."""
        if params.get("stream"):
            return None  # shown as it came
        if params.get("temperature") and not self.any_temperature:
            return None
        payload = json.dumps([server, params], sort_keys=True, default=str)
        return hashlib.sha256(payload.encode()).hexdigest()

    async def get(self, key: str) -> Answer | None:
        """The answer stored under `key`, looked up off the event loop."""
        if key in self._recent:
            return self._recent[key]
        row = await asyncio.to_thread(self._lookup, key)
        if row is None:
            return None
        text, prompt, completion, finish, alternatives = row
        kept = tuple((str(t), float(p)) for t, p in json.loads(alternatives or "[]"))
        return Answer(text, Tokens(prompt, completion), finish, kept)

    def _lookup(self, key: str) -> tuple[str, int, int, str | None, str | None] | None:
        found: tuple[str, int, int, str | None, str | None] | None = self._db.execute(
            "SELECT text, prompt_tokens, completion_tokens, finish_reason, alternatives "
            "FROM answers WHERE key = ?",
            (key,),
        ).fetchone()
        return found

    def put(self, key: str, answer: Answer) -> None:
        """Store an answer (written by the cache's own thread)."""
        self._remember(key, answer)
        tokens = answer.tokens or Tokens(0, 0)
        self._writer.put(
            (
                f"INSERT OR REPLACE INTO answers ({_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?)",
                (
                    key,
                    answer.text,
                    tokens.prompt,
                    tokens.completion,
                    answer.finish_reason,
                    json.dumps(answer.alternatives) if answer.alternatives else None,
                ),
            )
        )

    def discard(self, key: str) -> None:
        """Forget an answer that turned out unusable, so that a retry asks the model again."""
        self._remember(key, None)
        self._writer.put(("DELETE FROM answers WHERE key = ?", (key,)))

    def _remember(self, key: str, answer: Answer | None) -> None:
        self._recent[key] = answer
        self._recent.move_to_end(key)
        if len(self._recent) > _RECENT:
            self._recent.popitem(last=False)

    def close(self) -> None:
        """Write what is pending and close the file."""
        self._writer.close()
        self._db.close()

    def __enter__(self) -> ResponseCache:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
