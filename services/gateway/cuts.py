"""Reaching listeners' connections under ASGI: cutting off those who stop reading, promptly
and for real, and writing a stream straight onto the socket (``DirectStream``).

A graceful close waits for buffers that a client which never reads will never empty: its
socket, its kernel memory and its listener slot would stay forever. So a stalled send is given
a time limit, and then the connection's transport is aborted. ASGI has no call for that; the
transport is reached through the ASGI server's own receive callable (uvicorn's, for HTTP and
WebSocket alike), and where it cannot be found the connection is left to the server."""

from __future__ import annotations

import asyncio
import contextlib
import socket
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import TYPE_CHECKING

from fastapi import Request, WebSocket
from fastapi.responses import Response, StreamingResponse

if TYPE_CHECKING:
    from gateway.hub import ChannelHub, Listener

SEND_BUFFER = 64 * 1024  # bytes the kernel may hold for one listener (~0.7 s of PCM)


SERVER_SIDE = "playbach.server_side"  # a scope key: see remember_server_side


def remember_server_side(scope: dict, receive: object) -> None:
    """For middleware that wraps ``receive``: note uvicorn's object behind it first, or the
    connection could no longer be reached (a stalled listener would never be cut)."""
    scope.setdefault(SERVER_SIDE, getattr(receive, "__self__", None))


def _server_side(conn: Request | WebSocket) -> object:
    """uvicorn's object behind the connection: its receive callable is a bound method."""
    return conn.scope.get(SERVER_SIDE) or getattr(getattr(conn, "_receive", None), "__self__",
                                                  None)


def transport(conn: Request | WebSocket) -> asyncio.Transport | None:
    """The connection's transport (asyncio's or uvloop's: they share the interface)."""
    found = getattr(_server_side(conn), "transport", None)
    return found if callable(getattr(found, "abort", None)) else None


def http_chunk(item: bytes | str) -> bytes:
    """A piece of a chunked HTTP body (RFC 9112, 7.1). Events (str) are not in the body."""
    if isinstance(item, str) or not item:
        return b""
    return b"%x\r\n" % len(item) + item + b"\r\n"


def raw_body(item: bytes | str) -> bytes:
    """A piece of a body sent as it is (a response without chunked encoding)."""
    return b"" if isinstance(item, str) else item


class DirectStream(Response):
    """An endless stream that the channel's hub writes straight onto the connection, framed
    once for all its listeners, as it does for WebSockets (hub.fan_out): no task, queue or
    ASGI message per listener and piece. Only where the transport is reachable (uvicorn):
    see ``transport``. The response ends when the client goes or is cut."""

    def __init__(self, request: Request, listener: Listener,
                 join: Callable[[Listener], Awaitable[ChannelHub]], **kwargs) -> None:
        super().__init__(**kwargs)
        self.request, self.listener, self.join = request, listener, join
        # no length: an endless body (the server then sends it chunked)
        self.raw_headers = [(k, v) for k, v in self.raw_headers if k != b"content-length"]

    async def __call__(self, scope, receive, send) -> None:
        await send({"type": "http.response.start", "status": self.status_code,
                    "headers": self.raw_headers})  # uvicorn writes the headers now
        chunked = getattr(_server_side(self.request), "chunked_encoding", True)
        self.listener.framing = http_chunk if chunked else raw_body
        self.listener.transport = transport(self.request)
        hub = await self.join(self.listener)
        try:
            while (await receive())["type"] != "http.disconnect":
                pass
        finally:
            self.listener.close()
            await hub.leave(self.listener)


def cut(conn: Request | WebSocket) -> None:
    """Drop the connection now: no closing handshake, buffers freed, socket closed."""
    found = transport(conn)
    if found is not None:
        found.abort()


def limit_send_buffer(conn: Request | WebSocket, size: int = SEND_BUFFER) -> None:
    """A small kernel send buffer: a listener that stops reading is noticed in about a second
    of audio instead of the megabytes the kernel would otherwise queue for it."""
    found = transport(conn)
    sock = found.get_extra_info("socket") if found is not None else None
    if sock is not None:
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, size)


class LiveResponse(StreamingResponse):
    """An endless stream whose listener must take each piece within ``timeout`` seconds."""

    def __init__(self, content: AsyncIterator[bytes], request: Request, timeout: float,
                 **kwargs) -> None:
        super().__init__(content, **kwargs)
        self.request, self.timeout = request, timeout

    async def stream_response(self, send) -> None:
        await send({"type": "http.response.start", "status": self.status_code,
                    "headers": self.raw_headers})
        try:
            async for chunk in self.body_iterator:
                await asyncio.wait_for(send({"type": "http.response.body", "body": chunk,
                                             "more_body": True}), self.timeout)
        except TimeoutError:
            from gateway import metrics

            metrics.SLOW_CLIENTS_CUT.inc()
            cut(self.request)
            return
        finally:
            with contextlib.suppress(Exception):
                await self.body_iterator.aclose()  # leave the hub now, not at garbage time
        await send({"type": "http.response.body", "body": b"", "more_body": False})
