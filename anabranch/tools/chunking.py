"""Chunking: cut a text into pieces that fit a model's context window.

A text longer than the budget is cut at sentence boundaries (or, for a single overlong sentence,
at token boundaries) so that each chunk fits. Tokens are counted with tiktoken, which is close
enough for budgeting any model.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import tiktoken

from anabranch.errors import ConfigError
from anabranch.tools.tokenizer import DEFAULT_ENCODING, get_encoding

# A sentence ends at . ! ? followed by space, or at a blank line.
_SENTENCE_END = re.compile(r"(?<=[.!?])\s+|\n\s*\n")


@dataclass(frozen=True, slots=True)
class Chunk:
    text: str
    tokens: int


def split_into_chunks(text: str, budget: int, encoding: str = DEFAULT_ENCODING) -> list[Chunk]:
    """Cut `text` into chunks of at most `budget` tokens, keeping sentences whole where possible.

    Chunks are exact slices of the text: joined in order they give the text back, so nothing is
    dropped and per-chunk tokens concatenate to the whole text's tokens.
    """
    if budget < 1:
        raise ConfigError(f"chunk budget must be at least 1 token, got {budget}")
    enc = get_encoding(encoding)
    total = len(enc.encode_ordinary(text))
    if total <= budget:
        return [Chunk(text, total)]

    chunks: list[Chunk] = []
    start = end = 0  # the chunk being built is text[start:end]
    pending = 0  # its size, summed per sentence: close to the exact count, checked on close

    def close(upto: int) -> None:
        piece = text[start:upto]
        chunks.append(Chunk(piece, len(enc.encode_ordinary(piece))))

    for sentence_end in [m.end() for m in _SENTENCE_END.finditer(text)] + [len(text)]:
        if sentence_end <= end:
            continue
        n = len(enc.encode_ordinary(text[end:sentence_end]))
        if end > start and pending + n > budget:
            close(end)
            start, pending = end, 0
        if n > budget:  # one sentence longer than the budget: cut it at token boundaries
            start = _cut_by_tokens(text, start, sentence_end, budget, enc, chunks)
            end, pending = sentence_end, len(enc.encode_ordinary(text[start:sentence_end]))
            continue
        end, pending = sentence_end, pending + n
    if end > start:
        close(end)
    return chunks


def _cut_by_tokens(
    text: str, start: int, stop: int, budget: int, enc: tiktoken.Encoding, chunks: list[Chunk]
) -> int:
    """Append full-budget chunks of text[start:stop] to `chunks`; return where the rest begins.

    A cut falls on a token's first character; re-encoding a slice can merge tokens differently
    at its edges, so each cut is checked and moved back until the slice fits.
    """
    ids = enc.encode_ordinary(text[start:stop])
    _, offsets = enc.decode_with_offsets(ids)
    first = 0
    while len(ids) - first > budget:
        last = first + budget
        while True:
            piece = text[start + offsets[first] : start + offsets[last]]
            count = len(enc.encode_ordinary(piece))
            if count <= budget or last - first <= 1:
                break
            last -= 1
        chunks.append(Chunk(piece, count))
        first = last
    return start + offsets[first]
