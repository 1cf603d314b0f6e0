"""The one redactor: every secret this process knows is removed before text becomes data.

Servers echo credentials back ("Incorrect API key provided: sk-..."), exceptions quote URLs with
passwords in them, and a message copied into an error record travels on into results, reports,
chat replies and checkpoints. So text is scrubbed where an error becomes data (the `SubtaskError`
model, the chat server's error replies, the CLI's messages), by this one function.

What it removes:
- every secret registered with `register_secret` (endpoints register their API keys, the chat
  server its token), wherever it appears, in every encoding it takes on the wire: plain,
  URL-encoded, base64, and HTTP Basic's base64 of `user:secret` when the user is known (a key
  given inside a URL);
- credentials in URLs (`scheme://user:password@host`);
- strings shaped like common API keys (`sk-...`, `Bearer ...`, `Basic ...`), for a key this
  process never saw (a server quoting another key of the same account, say).

The registry is the one process-wide state of the package, on purpose: a secret known to any
object must be scrubbed from every message, including messages built far from that object.
"""

from __future__ import annotations

import base64
import re
import threading
from urllib.parse import quote, unquote, urlsplit, urlunsplit

MASK = "[REDACTED]"
"""What a removed secret reads as."""

_MIN_SECRET = 4
"""Shorter values (`""`, `"x"`) are not worth scrubbing: they would mangle every message."""

_PATTERNS = (
    # scheme://user:password@host  ->  scheme://[REDACTED]@host
    re.compile(r"(?<=://)[^/\s@]+@"),
    # OpenAI-style keys: sk-..., sk-proj-..., and the like.
    re.compile(r"\bsk-[A-Za-z0-9_\-]{6,}"),
    # Bearer tokens and Basic credentials, as they appear in echoed headers.
    re.compile(r"(?i)(?<=bearer )[^\s\"',;]+"),
    re.compile(r"(?i)(?<=basic )[A-Za-z0-9+/=]{8,}"),
)

_secrets: set[str] = set()
_lock = threading.Lock()


def register_secret(value: str | None, *, user: str | None = None) -> None:
    """Remember `value` as a secret, so that `redact` removes it from every later message, in
    every encoding: plain, URL-encoded, base64, and (given the `user` it goes with) HTTP Basic's
    base64 of `user:value`."""
    if not value or len(value.strip()) < _MIN_SECRET:
        return
    forms = {value, quote(value, safe=""), _b64(value)}
    if user is not None:
        forms.add(_b64(f"{user}:{value}"))
    if not forms <= _secrets:
        with _lock:
            _secrets.update(forms)


def _b64(text: str) -> str:
    return base64.b64encode(text.encode()).decode()


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
    return split_credentials(url)[0]


def split_credentials(url: str) -> tuple[str, str | None]:
    """`url` without `user:password@`, and the key it carried (registered as a secret).

    `https://KEY@host` carries the key as the user name, `user:KEY@` as the password. Left in
    the URL, httpx would send it as `Authorization: Basic base64(user:KEY)`, which replaces the
    bearer token an OpenAI-compatible server expects: so the key is taken out, to be sent as
    the bearer token.
    """
    parts = urlsplit(url)
    if "@" not in parts.netloc:
        return url, None
    user = unquote(parts.username) if parts.username else None
    key = unquote(parts.password) if parts.password is not None else user
    # The key as written in the URL, too (a user name beside a password is no secret).
    register_secret(parts.password if parts.password is not None else parts.username)
    register_secret(key, user=user if parts.password is not None else None)
    host = parts.netloc.rsplit("@", 1)[1]
    return urlunsplit(parts._replace(netloc=host)), key or None
