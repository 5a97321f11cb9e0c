"""Commands packed by hiredis (counters/redis_connection.py) are the very bytes redis-py's own packer
writes, and the service's Redis client sends them: redis-py's asyncio connections pack in Python,
~10× the cost, on every counters call of the decision path."""

from __future__ import annotations

from typing import Any

import pytest
import redis.asyncio as aioredis
from redis.asyncio.connection import Connection

from spendgate.counters.redis_connection import service_connections
from support.app import AppFactory

#: Commands shaped as the service's: a commit's EVALSHA (sha, key count, keys, a decision's JSON with
#: non-ASCII text, amounts past 64 bits), pipelined HMGETs, and what redis-py sends on its own.
COMMANDS: list[tuple[Any, ...]] = [
    ("EVALSHA", "a" * 40, 3, "sg:d:r1", "sg:h:r1", "sg:l:key:k1:1d:1795910400",
     '{"body":{"reasons":["café € 😀"]},"amount":20000000}', "86400", str(2**70), "", "x" * 70_000),
    ("HMGET", "sg:l:key:k1:1d:1795910400", "spent", "reserved"),
    (b"GET", b"sg:d:\x00\xff"),
    ("SET", "k", -5, "EX", 10),
    ("PING",),
]


class _Python(Connection):
    """redis-py's own asyncio packer, for comparison."""


@pytest.mark.parametrize("command", COMMANDS, ids=lambda c: str(c[0]))
def test_a_command_is_packed_into_the_same_bytes_as_redis_py_packs_it(command: tuple[Any, ...]) -> None:
    client = service_connections(aioredis.Redis())
    packed = client.connection_pool.connection_class().pack_command(*command)
    assert len(packed) == 1, "hiredis writes one buffer"
    assert packed[0] == b"".join(_Python().pack_command(*command))


@pytest.mark.parametrize("command", [("SET", "k", 0.1), ("CONFIG GET", "maxmemory"), ("SET", "k", memoryview(b"v"))])
def test_what_hiredis_would_write_otherwise_keeps_redis_py_packer(command: tuple[Any, ...]) -> None:
    client = service_connections(aioredis.Redis())
    packed = client.connection_pool.connection_class().pack_command(*command)
    assert packed == _Python().pack_command(*command)


def test_tls_and_unix_socket_connections_keep_their_class() -> None:
    for url, kind in (("rediss://localhost:6380", "SSLConnection"), ("unix:///tmp/redis.sock", "UnixDomainSocketConnection")):
        connection_class = service_connections(aioredis.from_url(url)).connection_pool.connection_class
        assert kind in [base.__name__ for base in connection_class.__mro__], url


async def test_the_service_sends_its_counters_commands_packed_by_hiredis(
    app_factory: AppFactory, clean_pg: str, redis_url: str
) -> None:
    app = await app_factory(database_url=clean_pg, redis_url=redis_url)
    pool = app.runtime.redis.connection_pool  # type: ignore[union-attr]
    assert pool.connection_class.__name__ == "ServiceConnection"
    await app.runtime.counters.ping()  # a real round trip through such a connection
