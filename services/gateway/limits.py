"""Bounds on what a client may make the gateway hold: a body size per route, enforced while
the body is read (before anything parses it), and time limits for headers and bodies that
trickle in.

uvicorn bounds neither: a 300 MB JSON body was read whole and parsed (the process grew by
~500 MB and listeners heard a gap), and a connection that sends its headers a byte at a time
was never timed out. Each of those held a file descriptor and memory for as long as the
client liked. Here:

- ``BodyLimit`` (ASGI middleware) refuses a declared ``Content-Length`` over the route's limit
  at once, counts the bytes of a body that declares none (chunked) as they arrive, and
  refuses the request with 413 the moment it passes; a body that stops arriving for
  ``body_timeout_s`` gets 408. Either way the connection is closed, so the rest of the body
  is never read.
- ``timed_http`` is uvicorn's httptools protocol with a deadline for each request's headers:
  a client that has not finished them within ``header_timeout_s`` of connecting (or of the
  first byte of its next request) is disconnected."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable

from starlette.exceptions import HTTPException
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from gateway.cuts import remember_server_side

KIB = 1024


class _Refused(HTTPException):
    """Raised from ``receive``: FastAPI passes an HTTPException on (any other error while it
    reads a body becomes its own 400), and the closing header ends the connection."""

    def __init__(self, status: int, detail: str) -> None:
        super().__init__(status, detail, headers={"Connection": "close"})


class BodyLimit:
    """At most ``limit_for(method, path)`` bytes per request body, with a phrase naming that
    limit for the 413; see the module."""

    def __init__(self, app, limit_for: Callable[[str, str], tuple[int, str]],
                 body_timeout_s: float) -> None:
        self.app, self.limit_for, self.timeout = app, limit_for, body_timeout_s

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        remember_server_side(scope, receive)
        limit, named = self.limit_for(scope["method"], scope["path"])
        declared = dict(scope["headers"]).get(b"content-length")
        if declared is not None and (not declared.isdigit() or int(declared) > limit):
            await _refuse(send, 413, _too_large(named, declared))
            return
        state = {"received": 0, "done": False, "started": False}

        async def bounded() -> dict:
            if state["done"]:  # the body is in: what follows is a disconnect, however late
                return await receive()
            try:
                message = await asyncio.wait_for(receive(), self.timeout)
            except TimeoutError:
                raise _Refused(408, f"the request body stopped arriving for {self.timeout:g} "
                                    "s; send it whole") from None
            if message["type"] == "http.request":
                state["received"] += len(message.get("body", b""))
                state["done"] = not message.get("more_body", False)
                if state["received"] > limit:
                    raise _Refused(413, _too_large(named))
            return message

        async def sending(message) -> None:
            state["started"] = state["started"] or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, bounded, sending)
        except _Refused as refused:  # an app that let it through (FastAPI's routes do not)
            if not state["started"]:
                await _refuse(send, refused.status_code, refused.detail)


def _too_large(named: str, declared: bytes | None = None) -> str:
    said = f"{int(declared):,} bytes" if declared and declared.isdigit() else "over the limit"
    return f"request body too large ({said}); {named}"


async def _refuse(send, status: int, detail: str) -> None:
    """A JSON problem, and the connection closed after it: the rest of the body (which may
    be hundreds of megabytes) is never read."""
    body = json.dumps({"detail": detail}).encode()
    await send({"type": "http.response.start", "status": status, "headers": [
        (b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()),
        (b"connection", b"close")]})
    await send({"type": "http.response.body", "body": body, "more_body": False})


def timed_http(header_timeout_s: float) -> type[HttpToolsProtocol]:
    """uvicorn's httptools protocol, disconnecting a client whose request headers are not
    complete ``header_timeout_s`` after it connected (or began its next request)."""

    class TimedHttp(HttpToolsProtocol):
        _deadline: asyncio.TimerHandle | None = None

        def _arm(self) -> None:
            if self._deadline is None:
                self._deadline = self.loop.call_later(header_timeout_s, self._expire)

        def _disarm(self) -> None:
            if self._deadline is not None:
                self._deadline.cancel()
                self._deadline = None

        def _expire(self) -> None:
            self._deadline = None
            if not self.transport.is_closing():
                self.transport.abort()  # no goodbye: it may not be reading either

        def connection_made(self, transport) -> None:  # type: ignore[override]
            super().connection_made(transport)
            self._arm()

        def on_message_begin(self) -> None:
            super().on_message_begin()
            self._arm()

        def on_headers_complete(self) -> None:
            self._disarm()
            super().on_headers_complete()

        def connection_lost(self, exc: Exception | None) -> None:
            self._disarm()
            super().connection_lost(exc)

    return TimedHttp
