"""What the service's Redis pool costs a call, against redis-py's own pools, side by side in one run.

    python bench/redis_pool.py [--rounds 30] [--calls 200] [--concurrency 16]

Starts its own redis-server (tests/support/services.py) and, on uvloop, runs `--concurrency` tasks each
sending `--calls` GETs through one client per pool, the pools taking turns round after round; prints
each pool's best round in µs a call and its ratio to redis-py's `ConnectionPool` (the floor: it never
waits, and raises `MaxConnectionsError` when all its connections are in use). `WaitingConnectionPool`
(counters/redis_pool.py) waits only when full; redis-py's `BlockingConnectionPool` waits too, but takes
a lock and arms a timer on every call. The pool is never full here: this is the common path's cost.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

import redis.asyncio as aioredis
import uvloop
from redis.asyncio.connection import BlockingConnectionPool, ConnectionPool

from _common import machine_summary, services
from _redis_turns import best_rounds
from spendgate.counters.redis_pool import WaitingConnectionPool

POOLS: dict[str, type[ConnectionPool]] = {
    "redis-py ConnectionPool (floor)": ConnectionPool,
    "WaitingConnectionPool (service)": WaitingConnectionPool,
    "redis-py BlockingConnectionPool": BlockingConnectionPool,
}


async def measure(url: str, rounds: int, calls: int, concurrency: int) -> dict[str, float]:
    """Each pool's best round, in wall seconds a call."""
    clients = {name: aioredis.Redis.from_pool(pool.from_url(url, max_connections=100)) for name, pool in POOLS.items()}
    best = await best_rounds(clients, rounds=rounds, calls=calls, concurrency=concurrency)
    return {name: wall for name, (_cpu, wall) in best.items()}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=30)
    parser.add_argument("--calls", type=int, default=200, help="GETs per task per round")
    parser.add_argument("--concurrency", type=int, default=16)
    args = parser.parse_args(argv)
    redis = services.RedisServer(workdir=Path(tempfile.mkdtemp(prefix="spendgate-pool-")))
    redis.start()
    try:
        best = uvloop.run(measure(redis.url, args.rounds, args.calls, args.concurrency))
    finally:
        redis.kill()
    print(machine_summary())
    print(f"{args.concurrency} tasks × {args.calls} GETs a round, {args.rounds} rounds, pools taking turns; best round")
    floor = best["redis-py ConnectionPool (floor)"]
    for name, seconds in best.items():
        print(f"{name:<34} {seconds * 1e6:6.2f} µs a call   {seconds / floor:5.2f}× the floor   "
              f"{(seconds - floor) * 1e6:+5.2f} µs")
    return 0


if __name__ == "__main__":
    sys.exit(main())
