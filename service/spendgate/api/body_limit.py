"""A pure ASGI middleware that refuses request bodies over SPENDGATE_MAX_BODY_BYTES with 413.

With a Content-Length header (every gateway request) the cost is one header lookup: a larger
length is answered at once, without reading the body, and a smaller one is trusted — the
HTTP server never hands the app more bytes than the header announced. Without one (a chunked
body) the bytes are counted as the app receives them, and the first chunk past the limit
stops the read: a 30 MB upload costs at most the limit plus one chunk of memory.

When the limit trips mid-read the app sees `PayloadTooLarge` raised from `receive()`, and
whatever answer it then tries to send (FastAPI turns a failed body read into a 400) is
replaced by the 413, so the client always gets the one error shape with that status.
"""

from __future__ import annotations

from starlette.responses import JSONResponse
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from ..errors import PayloadTooLarge

__all__ = ["BodyLimit"]


class BodyLimit:
    """`app.add_middleware(BodyLimit, max_bytes=…)`."""

    def __init__(self, app: ASGIApp, *, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        for name, value in scope["headers"]:
            if name == b"content-length" and value.isdigit():
                if int(value) > self.max_bytes:
                    await _refuse(self.max_bytes, scope, receive, send)
                else:
                    await self.app(scope, receive, send)
                return
        await _Counting(self.app, self.max_bytes)(scope, receive, send)


async def _refuse(limit: int, scope: Scope, receive: Receive, send: Send) -> None:
    error = PayloadTooLarge(limit=limit)
    await JSONResponse(error.body(), status_code=error.status)(scope, receive, send)


class _Counting:
    """One request without Content-Length: count its body while the app reads it."""

    __slots__ = ("app", "limit", "received", "tripped", "answered", "started")

    def __init__(self, app: ASGIApp, limit: int) -> None:
        self.app = app
        self.limit = limit
        self.received = 0
        self.tripped = False  # the body went past the limit
        self.answered = False  # the 413 has been sent in place of the app's answer
        self.started = False  # the app's own answer had started before that

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        async def counting_receive() -> Message:
            if self.tripped:
                raise PayloadTooLarge(limit=self.limit)
            message = await receive()
            if message["type"] == "http.request":
                self.received += len(message.get("body", b""))
                if self.received > self.limit:
                    self.tripped = True
                    raise PayloadTooLarge(limit=self.limit)
            return message

        async def replacing_send(message: Message) -> None:
            if self.answered:
                return  # the app's answer to a body it could not read; the client has the 413
            if self.tripped and not self.started and message["type"] == "http.response.start":
                self.answered = True
                await _refuse(self.limit, scope, receive, send)
                return
            if message["type"] == "http.response.start":
                self.started = True
            await send(message)

        try:
            await self.app(scope, counting_receive, replacing_send)
        except Exception:
            if not self.tripped or self.started:
                raise
            if not self.answered:
                self.answered = True
                await _refuse(self.limit, scope, receive, send)
