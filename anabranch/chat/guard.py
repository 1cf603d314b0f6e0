"""What runs before any route: bearer-token auth and the request size limit."""

from __future__ import annotations

import hmac
from collections.abc import Mapping

from pydantic import SecretStr
from starlette.types import ASGIApp, Receive, Scope, Send
from starlette.types import Message as AsgiMessage

from anabranch.chat.wire import error_response


class Guard:
    """Bearer-token auth and the request size limit, before any route runs.

    A pure ASGI middleware: Starlette's BaseHTTPMiddleware would wrap `receive` and hide the
    client's disconnect from the routes, which must see it to cancel their runs.
    """

    def __init__(self, app: ASGIApp, *, token: SecretStr | None, max_body_bytes: int) -> None:
        self.app, self.token, self.max_body_bytes = app, token, max_body_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = {k.decode("latin-1"): v.decode("latin-1") for k, v in scope["headers"]}
        length = headers.get("content-length", "")
        too_large = error_response(
            413, f"request body over {self.max_body_bytes} bytes", "request_too_large"
        )
        if self.token is not None and not _authorized(headers, self.token):
            refusal = error_response(401, "missing or wrong bearer token", "authentication_error",
                             headers={"WWW-Authenticate": "Bearer"})  # fmt: skip
            await refusal(scope, receive, send)
            return
        if length.isdigit():
            if int(length) > self.max_body_bytes:
                await too_large(scope, receive, send)
                return
            await self.app(scope, receive, send)
            return
        # No length (a chunked body): read it here, never past the limit, then replay it.
        body, more = bytearray(), True
        while more:
            message = await receive()
            if message["type"] != "http.request":  # the client left
                await self.app(scope, _replay(b"", receive, message), send)
                return
            body += message.get("body", b"")
            more = message.get("more_body", False)
            if len(body) > self.max_body_bytes:
                await too_large(scope, receive, send)
                return
        await self.app(scope, _replay(bytes(body), receive), send)


def _replay(body: bytes, receive: Receive, first: AsgiMessage | None = None) -> Receive:
    """A `receive` that hands over `body` (or `first`) once, then the client's own messages, so
    that a route still hears the client disconnect."""
    pending = [first or {"type": "http.request", "body": body, "more_body": False}]

    async def replayed() -> AsgiMessage:
        return pending.pop() if pending else await receive()

    return replayed


def _authorized(headers: Mapping[str, str], token: SecretStr) -> bool:
    """The request's bearer token is the server's; compared in constant time. An empty bearer is
    never a token, whatever the server holds."""
    scheme, _, given = headers.get("authorization", "").partition(" ")
    given = given.strip()
    expected = token.get_secret_value().encode()
    return (
        scheme.lower() == "bearer" and bool(given) and hmac.compare_digest(given.encode(), expected)
    )
