"""The one redactor: every secret this process knows is removed before text becomes data.

Servers echo credentials back ("Incorrect API key provided: sk-..."), exceptions quote URLs with
passwords in them, and a message copied into an error record travels on into results, reports,
chat replies and checkpoints. So text is scrubbed where an error becomes data (the `SubtaskError`
model, the chat server's error replies, the CLI's messages), by this one function.

What it removes:
- every secret registered with `register_secret` (endpoints register their API keys, the chat
  server its token), wherever it appears;
- credentials in URLs (`scheme://user:password@host`);
- strings shaped like common API keys (`sk-...`, `Bearer ...`), for a key this process never saw
  (a server quoting another key of the same account, say).

The registry is the one process-wide state of the package, on purpose: a secret known to any
object must be scrubbed from every message, including messages built far from that object.
"""

from __future__ import annotations

import re
import threading
from urllib.parse import urlsplit, urlunsplit

MASK = "[REDACTED]"
"""What a removed secret reads as."""

_MIN_SECRET = 4
"""Shorter values (`""`, `"x"`) are not worth scrubbing: they would mangle every message."""

_PATTERNS = (
    # scheme://user:password@host  ->  scheme://[REDACTED]@host
    re.compile(r"(?<=://)[^/\s@]+@"),
    # OpenAI-style keys: sk-..., sk-proj-..., and the like.
    re.compile(r"\bsk-[A-Za-z0-9_\-]{6,}"),
    # Bearer tokens, as they appear in echoed headers.
    re.compile(r"(?i)(?<=bearer )[^\s\"',;]+"),
)

_secrets: set[str] = set()
_lock = threading.Lock()


def register_secret(value: str | None) -> None:
    """Remember `value` as a secret, so that `redact` removes it from every later message."""
    if value and len(value.strip()) >= _MIN_SECRET and value not in _secrets:
        with _lock:
            _secrets.add(value)


def redact(text: str) -> str:
    """`text` without any secret this process knows, URL credentials or key-shaped strings."""
    # Longest first, so that a secret containing another is removed whole.
    for secret in sorted(_secrets, key=len, reverse=True):
        if secret in text:
            text = text.replace(secret, MASK)
    for pattern in _PATTERNS:
        text = pattern.sub(lambda m: MASK + ("@" if m.group(0).endswith("@") else ""), text)
    return text


def public_url(url: str) -> str:
    """`url` safe to print: without `user:password@`; its password is registered as a secret."""
    parts = urlsplit(url)
    # `https://KEY@host` carries the key as the user name; `user:KEY@` as the password.
    register_secret(parts.password or parts.username)
    if "@" not in parts.netloc:
        return url
    host = parts.netloc.rsplit("@", 1)[1]
    return urlunsplit(parts._replace(netloc=host))
