"""What a server's address means: the base URL every endpoint of this package is built on."""

from __future__ import annotations

from urllib.parse import urlsplit

from anabranch.errors import ConfigError
from anabranch.redact import public_url


def normalize_base_url(url: str) -> str:
    """`http://host:11434` means the server's OpenAI API, which lives under /v1.

    A URL with a path of its own is taken as given (some gateways mount the API elsewhere).
    Anything but an http(s) URL with a host is a configuration mistake, refused here rather than
    failing once per request.
    """
    parts = urlsplit(url.strip())
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ConfigError(
            f"not an http(s) URL with a host: {public_url(url)!r} "
            "(expected, e.g., http://localhost:11434 or https://api.openai.com/v1)"
        )
    url = url.strip().rstrip("/")
    return url + "/v1" if parts.path in ("", "/") else url
