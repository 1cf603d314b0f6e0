"""The fault server's HTTP/1.1: one connection at a time through h11, with keep-alive, and the
replies h11 would not send played out by hand (a reset, a drip, a body cut half-way). A request
whose client leaves is cancelled and counted, as a real server frees the slot."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable
from http import HTTPStatus
from typing import TYPE_CHECKING

import h11

from anabranch.testing.fault_bodies import Act

if TYPE_CHECKING:
    from anabranch.testing.fault_server import FaultApp


async def serve_connection(
    app: FaultApp, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
) -> None:
    conn = h11.Connection(h11.SERVER)
    try:
        while True:
            request, body = None, bytearray()
            while True:
                event = conn.next_event()
                if event is h11.NEED_DATA:
                    conn.receive_data(await reader.read(65536))
                elif isinstance(event, h11.Request):
                    request = event
                elif isinstance(event, h11.Data):
                    body += event.data
                elif isinstance(event, h11.EndOfMessage):
                    break
                elif isinstance(event, h11.ConnectionClosed):
                    return
            assert request is not None  # h11 gives the request before its end of message
            auth = dict(request.headers).get(b"authorization", b"").decode("latin-1")
            key = auth.partition(" ")[2]
            work = app.handle(request.method.decode(), request.target.decode(), bytes(body), key)
            answer = await _unless_client_leaves(app, conn, reader, work)
            if answer is None:  # the client hung up first: its request was cancelled
                return
            if isinstance(answer, str):  # "reset": drop the connection without a word
                writer.transport.abort()
                return
            if isinstance(answer, Act):
                await _play(answer, reader, writer)
                return
            status, headers, payload = answer
            sent = [*headers.items(), ("content-length", str(len(payload)))]
            writer.write(conn.send(h11.Response(status_code=status, headers=sent)))
            writer.write(conn.send(h11.Data(data=payload)))
            writer.write(conn.send(h11.EndOfMessage()))
            await writer.drain()
            if conn.our_state is h11.MUST_CLOSE:
                return
            conn.start_next_cycle()
    except (ConnectionError, h11.RemoteProtocolError, asyncio.IncompleteReadError):
        return
    finally:
        writer.close()


async def _play(act: Act, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    """Send an `Act` by hand: its head, then its body as it says (dripped, cut, huge), then
    close; a client that leaves ends it."""
    headers = {**act.headers, "connection": "close"}
    if act.length is not None:
        headers["content-length"] = str(act.size() if act.length < 0 else act.length)
    head = f"HTTP/1.1 {act.status} {HTTPStatus(act.status).phrase}\r\n"
    head += "".join(f"{k}: {v}\r\n" for k, v in headers.items()) + "\r\n"
    writer.write(head.encode("latin-1"))
    sent = 0
    for chunk in act.chunks():
        if act.cut_at is not None:
            chunk = chunk[: act.cut_at - sent]
        step = max(1, int(act.rate / 10)) if act.rate else len(chunk) or 1
        for i in range(0, len(chunk), step):
            if writer.is_closing() or reader.at_eof():
                return
            writer.write(chunk[i : i + step])
            await writer.drain()
            if act.rate:
                await asyncio.sleep(step / act.rate)
        sent += len(chunk)
        if act.cut_at is not None and sent >= act.cut_at:
            writer.transport.abort()  # cut: the rest never comes
            return


async def _unless_client_leaves(
    app: FaultApp,
    conn: h11.Connection,
    reader: asyncio.StreamReader,
    work: Awaitable[tuple[int, dict[str, str], bytes] | str | Act],
) -> tuple[int, dict[str, str], bytes] | str | Act | None:
    """Run the handler, but cancel it if the client closes the connection meanwhile (as a
    cancelled LLM call does), so that in-flight counts show cancellation for real."""
    handler = asyncio.ensure_future(work)
    while True:
        watcher = asyncio.ensure_future(reader.read(65536))
        done, _ = await asyncio.wait({handler, watcher}, return_when=asyncio.FIRST_COMPLETED)
        if handler in done:
            watcher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await watcher  # the stream allows one reader at a time: let this one finish
            return handler.result()
        data = watcher.result()
        if data:  # the client's next request, early: keep it for the next cycle
            conn.receive_data(data)
            continue
        handler.cancel()
        app.stats.cancelled += 1
        return None
