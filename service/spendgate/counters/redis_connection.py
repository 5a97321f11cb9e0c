"""The service's Redis connections: redis-py's, with two of its asyncio costs taken out.

**Packing.** redis-py's asyncio connections pack every command in Python even when hiredis is
installed (redis/redis-py#4176; the fix, PR #4191, is not released): for a commit — its script's sha,
~10 keys, ~25 arguments and the decision's JSON — that was ~45 µs of the event loop per authorize,
against ~4 µs through `hiredis.pack_command`, which writes the same bytes. Commands holding a value
hiredis would write differently, or that redis-py treats specially, keep redis-py's own packer:
floats (written with `repr` by redis-py), memoryviews (sent unjoined) and anything not str, bytes or
int (bool: redis-py's DataError).

**Writing.** With a socket timeout set, redis-py bounds each write with `asyncio.wait_for`, which on
Python 3.11 runs the write as a task of its own and, when the caller is cancelled just as that task
finishes, returns normally: the cancellation is lost (about one cancelled command in three, measured
in tests/test_redis_cancellation.py). A stopping service then waited for ever on its reservation
sweeper, which had carried on. Here the write is bounded by `asyncio.timeout`, which keeps the
cancellation, and costs a timer rather than a task (bench/redis_writes.py measures both).

`service_connections(client)` makes the client's pool open connections of a subclass of whatever
class it chose (plain, TLS or unix socket) with both.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable
from typing import Any

import hiredis  # a dependency (redis[hiredis]): redis-py parses replies with it too
import redis.asyncio as aioredis
from redis.asyncio.connection import AbstractConnection
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

__all__ = ["service_connections"]

#: Argument types hiredis writes exactly as redis-py does (bool is excluded: `type(True) is bool`).
_SAME_BYTES = frozenset((str, bytes, int))


class _HiredisPacking(AbstractConnection):
    def pack_command(self, *args: Any) -> list[bytes]:
        # The argument types gathered in C (a commit has ~40 arguments: a generator was 3 µs of it).
        if _SAME_BYTES.issuperset(map(type, args)) and not _names_two_words(args[0]):
            return [hiredis.pack_command(args)]
        return super().pack_command(*args)  # floats, memoryviews, a command name such as 'CONFIG GET'


def _names_two_words(name: Any) -> bool:
    """redis-py splits a command name with a space ('CONFIG GET') into two arguments."""
    return (b" " if isinstance(name, bytes) else " ") in name


class _BoundedWrites(AbstractConnection):
    async def send_packed_command(self, command: bytes | str | Iterable[bytes], check_health: bool = True) -> None:
        """redis-py's, with the write bounded by `asyncio.timeout` instead of `asyncio.wait_for`."""
        if not self.is_connected:
            await self.connect_check_health(check_health=False)
        if check_health:
            await self.check_health()
        if isinstance(command, str):
            command = command.encode()
        if isinstance(command, bytes):
            command = [command]
        # Written on the loop's next turn, as redis-py's task did: the commands of the callers resumed in
        # one turn leave together, which costs less per command under load (bench/redis_writes.py).
        # Cancelled here, nothing was sent: the connection stays clean.
        await asyncio.sleep(0)
        try:
            writer = self._writer
            if writer is None:  # disconnected meanwhile (the client closing): as redis-py would find it
                raise RedisConnectionError("Connection closed by client.")
            writer.writelines(command)
            async with asyncio.timeout(self.socket_timeout or None):
                await writer.drain()
        except TimeoutError:  # before OSError: the builtin TimeoutError is one
            await self.disconnect(nowait=True)
            raise RedisTimeoutError("Timeout writing to socket") from None
        except OSError as exc:
            await self.disconnect(nowait=True)
            raise RedisConnectionError(f"Error while writing to socket: {exc}.") from exc
        except BaseException:  # cancelled mid-write: the rest of the command is never sent
            await self.disconnect(nowait=True)
            raise


#: One service subclass per connection class.
_SERVICE: dict[type[AbstractConnection], type[AbstractConnection]] = {}


def _service_class(connection_class: type[AbstractConnection]) -> type[AbstractConnection]:
    if issubclass(connection_class, _HiredisPacking):
        return connection_class
    made = _SERVICE.get(connection_class)
    if made is None:
        made = _SERVICE[connection_class] = type(
            f"Service{connection_class.__name__}", (_HiredisPacking, _BoundedWrites, connection_class), {}
        )
    return made


def service_connections(client: aioredis.Redis) -> aioredis.Redis:
    """`client`, its connections (opened from now on) packing with hiredis and bounding writes with
    `asyncio.timeout`; returns it."""
    pool = client.connection_pool
    pool.connection_class = _service_class(pool.connection_class)
    return client
