"""The service's Redis client: a bounded pool whose callers wait for a free connection.

redis-py's asyncio `ConnectionPool` raises `MaxConnectionsError` the moment all its connections
(100 by default) are in use. Authorizes are shed before that (`max_authorize_in_flight`), but
records are never shed, so a burst of them would have been answered 503 by a healthy Redis.
`BlockingConnectionPool` waits instead, but every call then takes a lock and arms a timer
(~8 µs a call; bench/redis_pool.py): `WaitingConnectionPool` waits only when the pool is full (or
others already wait: first come, first served), up to `wait_seconds`, and then raises
`MaxConnectionsError` (a redis `ConnectionError`: the counters answer it as 503 `unavailable`,
naming Redis).
"""

from __future__ import annotations

import asyncio
from collections import deque
from contextlib import suppress
from typing import Any

import redis.asyncio as aioredis
from redis.asyncio.connection import AbstractConnection, ConnectionPool
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import MaxConnectionsError

from .redis_connection import service_connections

__all__ = ["WaitingConnectionPool", "redis_client"]

#: Seconds to connect, to wait for a reply, and to wait for a free connection of a full pool.
TIMEOUT_SECONDS = 2.0


class WaitingConnectionPool(ConnectionPool):
    """A `ConnectionPool` whose `get_connection` waits (up to `wait_seconds`) while all
    `max_connections` are in use, rather than raising at once.

    Waiters are served in order: a released connection is promised to the first waiter, and while
    anyone waits or a promised connection is not yet taken, a new caller queues behind them instead
    of taking it (else a busy caller releasing and asking again would keep the connection to itself)."""

    def __init__(self, *, wait_seconds: float = TIMEOUT_SECONDS, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.wait_seconds = wait_seconds
        self._waiters: deque[asyncio.Future[None]] = deque()
        #: Released connections promised to woken waiters that have not taken them yet.
        self._promised = 0

    async def get_connection(self, *args: Any, **kwargs: Any) -> AbstractConnection:
        if not self._waiters and not self._promised:
            try:
                return await super().get_connection()
            except MaxConnectionsError:
                pass
        deadline = asyncio.get_running_loop().time() + self.wait_seconds
        first_in_line = False  # a waiter whose promised connection was taken waits at the front again
        while True:
            try:
                await self._released(deadline, first_in_line)
            except TimeoutError:
                raise MaxConnectionsError(
                    f"all {self.max_connections} Redis connections stayed in use for {self.wait_seconds:g} s"
                ) from None
            self._promised -= 1  # this caller's turn: the promise is taken here, used or not
            try:
                return await super().get_connection()
            except MaxConnectionsError:
                first_in_line = True
            except BaseException:
                self._wake_next()  # not taking it (cancelled, or the connection failed): the next waiter's turn
                raise

    async def _released(self, deadline: float, first_in_line: bool) -> None:
        """Until a released connection is promised to this caller (its turn in the queue), or the deadline."""
        freed: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        if first_in_line:
            self._waiters.appendleft(freed)
        else:
            self._waiters.append(freed)
        try:
            async with asyncio.timeout_at(deadline):
                await freed
        except BaseException:  # timed out, or the caller was cancelled
            if freed.done() and not freed.cancelled():
                self._promised -= 1
                self._wake_next()  # woken but not taking it: the next waiter's turn
            else:
                freed.cancel()
                with suppress(ValueError):
                    self._waiters.remove(freed)
            raise

    def _wake_next(self) -> None:
        while self._waiters:
            waiter = self._waiters.popleft()
            if not waiter.done():
                self._promised += 1
                waiter.set_result(None)
                return

    async def release(self, connection: AbstractConnection) -> None:
        await super().release(connection)
        if self._waiters:
            self._wake_next()


def redis_client(url: str, *, max_connections: int) -> aioredis.Redis:
    """The client for `url`: at most `max_connections` connections, callers queueing for them,
    commands packed by hiredis and writes that keep a caller's cancellation (redis_connection.py)."""
    pool = WaitingConnectionPool.from_url(
        url,
        max_connections=max_connections,
        socket_timeout=TIMEOUT_SECONDS,
        socket_connect_timeout=TIMEOUT_SECONDS,
        health_check_interval=10,
        # Pooled connections die with a restarted Redis; without a retry each one fails its
        # next command (a skipped counter update after a record). One immediate retry on a
        # fresh connection is safe: every script is idempotent per request id / version.
        retry=Retry(NoBackoff(), 1, supported_errors=(RedisConnectionError,)),
    )
    return service_connections(aioredis.Redis.from_pool(pool))  # closing the client closes its pool
