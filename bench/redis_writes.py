"""What a Redis command costs the service's connections, against redis-py's own, side by side in one run.

    python bench/redis_writes.py [--rounds 30] [--calls 200] [--concurrency 1,16]

With a socket timeout set (the service sets 2 s), redis-py bounds each write with `asyncio.wait_for`:
on Python 3.11 a task per command, and a cancellation lost when it lands as that task finishes
(tests/test_redis_cancellation.py). The service's connections (counters/redis_connection.py) bound
the write with `asyncio.timeout` and write on the loop's next turn. A third class, bounded the same
way but writing at once, shows why the turn is kept: under load the commands of callers resumed in
one turn then leave together. Starts its own redis-server; on uvloop, `--concurrency` tasks send
`--calls` GETs each through one client per connection class, the classes taking turns round after
round; prints each class's best round in CPU µs and wall µs a call, and its CPU ratio to redis-py's.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import tempfile
from pathlib import Path

import redis.asyncio as aioredis
import uvloop
from redis.asyncio.connection import AbstractConnection, Connection, ConnectionPool

from _common import machine_summary, services
from _redis_turns import best_rounds
from spendgate.counters import redis_connection


class _WritingAtOnce(redis_connection._BoundedWrites):
    """The service's bounded write without the turn it waits first (for comparison only)."""

    async def send_packed_command(self, command: object, check_health: bool = True) -> None:
        if not self.is_connected:
            await self.connect_check_health(check_health=False)
        writer = self._writer
        assert writer is not None
        writer.writelines([command] if isinstance(command, bytes) else command)  # type: ignore[arg-type]
        async with asyncio.timeout(self.socket_timeout or None):
            await writer.drain()


def _classes() -> dict[str, type[AbstractConnection]]:
    return {
        "redis-py Connection (wait_for)": Connection,
        "service connection": redis_connection._service_class(Connection),
        "bounded, written at once": type("AtOnce", (redis_connection._HiredisPacking, _WritingAtOnce, Connection), {}),
    }


async def measure(url: str, rounds: int, calls: int, concurrency: int) -> dict[str, tuple[float, float]]:
    clients = {}
    for name, connection_class in _classes().items():
        pool = ConnectionPool.from_url(url, max_connections=100, socket_timeout=2.0)
        pool.connection_class = connection_class
        clients[name] = aioredis.Redis.from_pool(pool)
    return await best_rounds(clients, rounds=rounds, calls=calls, concurrency=concurrency)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=30)
    parser.add_argument("--calls", type=int, default=200, help="GETs per task per round")
    parser.add_argument("--concurrency", default="1,16", help="comma-separated task counts")
    args = parser.parse_args(argv)
    redis = services.RedisServer(workdir=Path(tempfile.mkdtemp(prefix="spendgate-writes-")))
    redis.start()
    try:
        print(machine_summary())
        for concurrency in (int(c) for c in args.concurrency.split(",")):
            best = uvloop.run(measure(redis.url, args.rounds, args.calls, concurrency))
            floor = best["redis-py Connection (wait_for)"][0]
            print(f"\n{concurrency} task(s) × {args.calls} GETs a round, {args.rounds} rounds; best round")
            for name, (cpu, wall) in best.items():
                print(f"{name:<32} {cpu * 1e6:7.2f} µs CPU  {wall * 1e6:7.2f} µs wall a call   "
                      f"{cpu / floor:5.2f}× redis-py's CPU")
    finally:
        redis.kill()
    return 0


if __name__ == "__main__":
    sys.exit(main())
