"""The Redis floor of a decision: the service's own reservation Lua in a tight loop from one process.

Starts its own redis-server, then drives `spendgate.counters.RedisCounters` — the adapter the
service uses, with its registered scripts — for the 10 ledgers a realistic team-key request charges
(bench/_fixtures.py), with a realistic stored decision body:

  lua: commit + settle     commit_decision (reserve on every ledger, store the decision) then settle
                           (release the hold, apply the committed snapshot): the two scripts of a pair
  all Redis of a pair      what one authorize + record sends to Redis: GET prior decision, pipelined
                           HMGET of the candidate ledgers, commit script; GET prior decision, settle script

each at concurrency 1 (sequential) and at --concurrency (asyncio tasks sharing the client's pool).
Prints pairs/s and per-pair p50/p99 in ms, the CPU the bench process and redis-server used, and the
server-side time per script call from INFO commandstats — so the service's figure can be given as a
ratio to this floor.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import sys
import time
from collections.abc import Awaitable, Callable
from datetime import datetime, timezone
from typing import Any

import redis.asyncio as aioredis

from _common import cpu_seconds, fmt_ms, machine_summary, pct, services
from _fixtures import decision_inputs
from spendgate.counters import Hold, RedisCounters, StoredDecision
from spendgate.decisions.authorize import charge_view
from spendgate.decisions.policy_input import ledger_static
from spendgate.ledgers import LedgerSnapshot


async def _no_snapshots(ids: Any) -> dict[str, LedgerSnapshot]:
    return {}  # every ledger seeds at 0 (the first commit rebuilds it; afterwards it exists)


class Floor:
    def __init__(self, counters: RedisCounters) -> None:
        self.counters = counters
        facts, candidates, figures, _doc = decision_inputs()
        # The shipped policy charges all but the user's own ledger for a team key.
        self.charged = [c for c in candidates if c.ref.entity_type != "user"]
        self.refs = [c.ref for c in candidates]
        self.body = {
            "request_id": "", "decision": "allow", "reasons": [],
            "charges": [charge_view(c, figures[c.ref.id], ledger_static(facts, c)) for c in self.charged],
            "alerts": [],
            "reservation": {"amount": "0.020000", "expires_at": "2026-11-23T03:10:00Z"},
            "policy_revision": "sha256:0123456789abcdef", "key_id": "key-7", "model": "gpt-4o",
        }
        self.ids = itertools.count()
        self.versions = itertools.count(1)

    async def _commit(self, request_id: str) -> None:
        decision = StoredDecision(request_id, {**self.body, "request_id": request_id},
                                  tuple(c.ref for c in self.charged), 20_000_000)
        outcome = await self.counters.commit_decision(
            decision=decision, holds=[Hold(c.ref, c.limit) for c in self.charged], ttl_seconds=600,
            now=datetime.now(timezone.utc),
        )
        if outcome.status != "committed":
            raise RuntimeError(f"commit: {outcome.status}")

    async def _settle(self, request_id: str) -> None:
        version = next(self.versions)
        snapshots = [LedgerSnapshot(c.ref.id, version * 7_000_000, version) for c in self.charged]
        await self.counters.settle(request_id=request_id, snapshots=snapshots)

    async def lua_pair(self) -> None:
        request_id = f"floor-{next(self.ids)}"
        await self._commit(request_id)
        await self._settle(request_id)

    async def redis_pair(self) -> None:
        request_id = f"floor-{next(self.ids)}"
        await self.counters.prior_decision(request_id)
        await self.counters.read(self.refs)
        await self._commit(request_id)
        await self.counters.prior_decision(request_id)
        await self._settle(request_id)


async def run(op: Callable[[], Awaitable[None]], *, pairs: int, concurrency: int) -> tuple[list[float], float]:
    latencies: list[float] = []
    remaining = iter(range(pairs))

    async def worker() -> None:
        for _ in remaining:
            t0 = time.perf_counter()
            await op()
            latencies.append(time.perf_counter() - t0)

    started = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    wall = time.perf_counter() - started
    latencies.sort()
    return latencies, wall


async def commandstats(client: aioredis.Redis) -> dict[str, dict[str, float]]:
    info = await client.info("commandstats")
    return {name.removeprefix("cmdstat_"): stats for name, stats in info.items() if isinstance(stats, dict)}


async def amain(args: argparse.Namespace) -> None:
    server = services.RedisServer()
    server.start()
    try:
        client = aioredis.from_url(server.url, max_connections=max(args.concurrency, 1) * 2)
        counters = RedisCounters(client, _no_snapshots)
        floor = Floor(counters)
        print(machine_summary())
        print(f"redis-server {server.port} (own process); {len(floor.charged)} charged ledgers, "
              f"{len(floor.refs)} candidates; {args.pairs} pairs per row")
        print(f"{'what':<24} {'conc':>4} {'pairs/s':>8} {'p50 ms':>7} {'p99 ms':>7}   "
              f"{'CPU ms/pair: bench':>18} {'redis':>6}")
        for name, op in (("lua: commit + settle", floor.lua_pair), ("all Redis of a pair", floor.redis_pair)):
            for concurrency in sorted({1, args.concurrency}):
                await run(op, pairs=args.warmup, concurrency=concurrency)
                await client.config_resetstat()
                cpu0 = (time.process_time(), cpu_seconds([server.process.pid]))
                latencies, wall = await run(op, pairs=args.pairs, concurrency=concurrency)
                cpu1 = (time.process_time(), cpu_seconds([server.process.pid]))
                stats = await commandstats(client)
                print(f"{name:<24} {concurrency:>4} {args.pairs / wall:>8.0f} {fmt_ms(pct(latencies, 50)):>7} "
                      f"{fmt_ms(pct(latencies, 99)):>7}   {1000 * (cpu1[0] - cpu0[0]) / args.pairs:>18.3f} "
                      f"{1000 * (cpu1[1] - cpu0[1]) / args.pairs:>6.3f}")
        print("server-side time per call (INFO commandstats, last row):")
        for command, values in sorted(stats.items()):
            if command in ("config|resetstat", "info"):
                continue
            print(f"  {command:<10} {int(values['calls']):>7} calls  {values['usec_per_call']:>7.1f} µs/call")
        await client.aclose()
    finally:
        server.stop()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--pairs", type=int, default=5000)
    parser.add_argument("--warmup", type=int, default=500)
    parser.add_argument("--concurrency", type=int, default=16)
    args = parser.parse_args(argv)
    asyncio.run(amain(args))
    return 0


if __name__ == "__main__":
    sys.exit(main())
