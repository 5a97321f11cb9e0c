"""A lean HTTP/1.1 keep-alive client for the load generator: POST a JSON body, read status and body.

Why not httpx: on this 2-core box httpx cost the generator ~5 ms of CPU per authorize+record pair
(0.5 core at 95 pairs/s) and more as requests queued in its pool, starving the service it measures.
This client does only what the bench needs — pre-built request bytes, Content-Length bodies (what
uvicorn sends for these routes), a LIFO pool of idle connections — at a fraction of that.
"""

from __future__ import annotations

import asyncio
from urllib.parse import urlsplit

__all__ = ["RawClient", "RawHTTPError"]


class RawHTTPError(Exception):
    """The request failed below HTTP (connect, timeout, closed connection, unparseable answer)."""


class _Connection:
    __slots__ = ("reader", "writer")

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer


class RawClient:
    """POSTs to one base URL over at most `max_connections` keep-alive connections."""

    def __init__(self, base_url: str, headers: dict[str, str], *, max_connections: int, timeout: float) -> None:
        parts = urlsplit(base_url)
        self._host = parts.hostname or "127.0.0.1"
        self._port = parts.port or 80
        self._head = "".join(f"{name}: {value}\r\n" for name, value in headers.items())
        self._head += f"host: {self._host}:{self._port}\r\n"
        self._timeout = timeout
        self._idle: list[_Connection] = []
        self._slots = asyncio.Semaphore(max_connections)

    async def post(self, path: str, body: bytes) -> tuple[int, bytes]:
        request = f"POST {path} HTTP/1.1\r\n{self._head}content-length: {len(body)}\r\n\r\n".encode() + body
        async with self._slots:
            # A kept-alive connection the server has since closed (uvicorn drops idle ones after
            # 5 s) fails at once with nothing read: retry that once on a new connection, as
            # httpx does. The decision routes are idempotent per request_id, so a retry is safe.
            reused = bool(self._idle)
            for attempt in (1, 2):
                connection = self._idle.pop() if self._idle and attempt == 1 else None
                try:
                    if connection is None:
                        reader, writer = await asyncio.wait_for(
                            asyncio.open_connection(self._host, self._port), self._timeout
                        )
                        connection = _Connection(reader, writer)
                    status, answer, keep = await asyncio.wait_for(self._exchange(connection, request), self._timeout)
                except (asyncio.IncompleteReadError, ConnectionResetError, BrokenPipeError) as exc:
                    if connection is not None:
                        connection.writer.close()
                    if reused and attempt == 1 and (not isinstance(exc, asyncio.IncompleteReadError) or not exc.partial):
                        continue
                    raise RawHTTPError(type(exc).__name__) from exc
                except (OSError, asyncio.TimeoutError, ValueError) as exc:
                    if connection is not None:
                        connection.writer.close()
                    raise RawHTTPError(type(exc).__name__) from exc
                if keep:
                    self._idle.append(connection)
                else:
                    connection.writer.close()
                return status, answer
            raise AssertionError("unreachable")  # pragma: no cover

    @staticmethod
    async def _exchange(connection: _Connection, request: bytes) -> tuple[int, bytes, bool]:
        connection.writer.write(request)
        head = await connection.reader.readuntil(b"\r\n\r\n")
        lines = head.decode("latin-1").split("\r\n")
        status = int(lines[0].split(" ", 2)[1])
        length, keep = 0, True
        for line in lines[1:]:
            name, _, value = line.partition(":")
            name = name.strip().lower()
            if name == "content-length":
                length = int(value)
            elif name == "connection" and value.strip().lower() == "close":
                keep = False
        body = await connection.reader.readexactly(length) if length else b""
        return status, body, keep

    async def aclose(self) -> None:
        for connection in self._idle:
            connection.writer.close()
        self._idle.clear()
