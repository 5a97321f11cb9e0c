"""A TCP proxy (in the test's event loop) in front of an HTTP server, to watch and break calls.

It forwards bytes unchanged, notes each request line it sees, and on request can cut chosen
connections the moment the server's response arrives — after the server has done the work
and committed, before a byte of the answer reaches the client: a connection lost at the worst
time, as a load balancer restart or a network blip does it.
"""

from __future__ import annotations

import asyncio
import re
from dataclasses import dataclass, field

from support.services import free_port

__all__ = ["HttpTcpProxy"]

_REQUEST_LINE = re.compile(rb"(GET|POST|PUT|PATCH|DELETE) (/\S*) HTTP/1\.[01]\r\n")


@dataclass
class _Connection:
    #: The request line whose response is to be cut, once it arrives.
    cut: str | None = None


@dataclass
class HttpTcpProxy:
    upstream_port: int
    port: int = field(default_factory=free_port)
    #: Every request line seen, in order ("POST /v1/record").
    requests: list[str] = field(default_factory=list)
    #: Request lines whose response was cut.
    cut: list[str] = field(default_factory=list)
    _cuts: dict[str, int] = field(default_factory=dict)
    _server: asyncio.AbstractServer | None = None
    _writers: set[asyncio.StreamWriter] = field(default_factory=set)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def seen(self, request_line: str) -> int:
        return self.requests.count(request_line)

    def cut_response(self, request_line: str, times: int = 1) -> None:
        """Cut the connection of the next `times` requests with this line (e.g. "POST /v1/record")
        when their response comes back."""
        self._cuts[request_line] = self._cuts.get(request_line, 0) + times

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._accept, "127.0.0.1", self.port)

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
            for writer in list(self._writers):
                writer.transport.abort()
            await self._server.wait_closed()
            self._server = None

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._writers.add(writer)
        upstream: asyncio.StreamWriter | None = None
        try:
            up_reader, upstream = await asyncio.open_connection("127.0.0.1", self.upstream_port)
            self._writers.add(upstream)
            connection = _Connection()
            await asyncio.gather(
                self._requests(reader, upstream, connection),
                self._responses(up_reader, writer, upstream, connection),
                return_exceptions=True,
            )
        except OSError:
            pass
        finally:
            for end in (writer, upstream):
                if end is not None:
                    self._writers.discard(end)
                    end.transport.abort()

    async def _requests(self, reader: asyncio.StreamReader, upstream: asyncio.StreamWriter,
                        connection: _Connection) -> None:
        while data := await reader.read(65536):
            for method, path in _REQUEST_LINE.findall(data):
                line = f"{method.decode()} {path.decode()}"
                self.requests.append(line)
                if self._cuts.get(line, 0) > 0:
                    self._cuts[line] -= 1
                    connection.cut = line
            upstream.write(data)
            await upstream.drain()
        upstream.close()

    async def _responses(self, up_reader: asyncio.StreamReader, writer: asyncio.StreamWriter,
                         upstream: asyncio.StreamWriter, connection: _Connection) -> None:
        while data := await up_reader.read(65536):
            if connection.cut is not None:
                # The server has answered, so it has committed; the client gets a reset instead.
                self.cut.append(connection.cut)
                writer.transport.abort()
                upstream.transport.abort()
                return
            writer.write(data)
            await writer.drain()
        writer.close()
