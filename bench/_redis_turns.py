"""Redis clients measured side by side: each sends GETs from concurrent tasks, the clients taking turns
round after round (so the machine's drift falls on all alike); each client's best round is kept."""

from __future__ import annotations

import asyncio
import time

import redis.asyncio as aioredis

__all__ = ["best_rounds"]


async def best_rounds(
    clients: dict[str, aioredis.Redis], *, rounds: int, calls: int, concurrency: int
) -> dict[str, tuple[float, float]]:
    """Each client's best round as (CPU seconds, wall seconds) a GET; closes the clients."""
    best = {name: (float("inf"), float("inf")) for name in clients}
    try:
        for client in clients.values():
            await client.set("bench-turns", "1")
        for _ in range(rounds):
            for name, client in clients.items():

                async def worker(client: aioredis.Redis = client) -> None:
                    for _ in range(calls):
                        await client.get("bench-turns")

                cpu, wall = time.process_time(), time.perf_counter()
                await asyncio.gather(*(worker() for _ in range(concurrency)))
                n = calls * concurrency
                spent = ((time.process_time() - cpu) / n, (time.perf_counter() - wall) / n)
                best[name] = (min(best[name][0], spent[0]), min(best[name][1], spent[1]))
    finally:
        for client in clients.values():
            await client.aclose()
    return best
