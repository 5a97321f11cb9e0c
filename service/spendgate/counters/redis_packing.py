"""Commands to Redis packed by hiredis (C), as redis-py's synchronous client already does.

redis-py's asyncio connections pack every command in Python even when hiredis is installed
(redis/redis-py#4176; the fix, PR #4191, is not released): for a commit — its script's sha, ~10 keys,
~25 arguments and the decision's JSON — that was ~45 µs of the event loop per authorize, against ~4 µs
through `hiredis.pack_command`, which writes the same bytes.

`pack_with_hiredis(client)` makes the client's pool open connections of a subclass of whatever class
it chose (plain, TLS or unix socket) that packs with hiredis. Commands holding a value hiredis would
write differently, or that redis-py treats specially, keep redis-py's own packer: floats (written with
`repr` by redis-py), memoryviews (sent unjoined) and anything not str, bytes or int (bool: redis-py's
DataError).
"""

from __future__ import annotations

from typing import Any

import hiredis  # a dependency (redis[hiredis]): redis-py parses replies with it too
import redis.asyncio as aioredis
from redis.asyncio.connection import AbstractConnection

__all__ = ["pack_with_hiredis"]

#: Argument types hiredis writes exactly as redis-py does (bool is excluded: `type(True) is bool`).
_SAME_BYTES = (str, bytes, int)


class _HiredisPacking(AbstractConnection):
    def pack_command(self, *args: Any) -> list[bytes]:
        if all(type(arg) in _SAME_BYTES for arg in args) and not _names_two_words(args[0]):
            return [hiredis.pack_command(args)]
        return super().pack_command(*args)  # floats, memoryviews, a command name such as 'CONFIG GET'


def _names_two_words(name: Any) -> bool:
    """redis-py splits a command name with a space ('CONFIG GET') into two arguments."""
    return (b" " if isinstance(name, bytes) else " ") in name


#: One packing subclass per connection class.
_PACKING: dict[type[AbstractConnection], type[AbstractConnection]] = {}


def _packing(connection_class: type[AbstractConnection]) -> type[AbstractConnection]:
    if issubclass(connection_class, _HiredisPacking):
        return connection_class
    made = _PACKING.get(connection_class)
    if made is None:
        made = _PACKING[connection_class] = type(
            f"HiredisPacked{connection_class.__name__}", (_HiredisPacking, connection_class), {}
        )
    return made


def pack_with_hiredis(client: aioredis.Redis) -> aioredis.Redis:
    """`client`, its connections (opened from now on) packing commands with hiredis; returns it."""
    pool = client.connection_pool
    pool.connection_class = _packing(pool.connection_class)
    return client
