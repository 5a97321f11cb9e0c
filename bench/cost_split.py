"""Where the CPU of one authorize and one record goes, measured in-process, one request at a time.

Starts the app in this process (lifespan entered, as the tests do) on a fresh PostgreSQL database and
its own redis-server, seeds a team key through the admin API, then sends authorize+record pairs one at
a time over httpx.ASGITransport (no sockets, no HTTP parsing). With nothing else running on the event
loop, the process CPU time (time.process_time) spent inside an awaited call is that call's own cost,
its database or Redis I/O handling included; the wrappers below add it up per component:

  facts            FactsCache.load (a cache miss is the key-chain query and the end-user/tag query)
  candidates+input candidate_ledgers + build_input
  policy           EmbeddedEngine.decide (JSON encode, regorus, decode)
  redis: …         RedisCounters.prior_decision / read / prior_and_read / commit_decision / settle
  db: …            LedgerStore.find_event / record (the spend event + ledger upserts transaction)
  route other      the rest of authorize()/record() (response bodies, money formatting, …)
  framework        everything inside the ASGI app outside the route function (routing, dependencies,
                   request validation, response serialisation)

`--end-users 1` makes every authorize a facts-cache hit; the default (a new end user per request)
makes every one a miss. `--no-pre-ping` turns off SQLAlchemy's pool_pre_ping in this process only, to
show what that costs. Prints CPU µs per request for each component (median of per-request sums is not
meaningful, so these are means over --pairs pairs after --warmup) and the wall-clock p50.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import time
from collections import defaultdict
from collections.abc import Awaitable, Callable
from typing import Any

import httpx
from pydantic import SecretStr

from _common import fmt_ms, machine_summary, pct, services
import importlib

import spendgate.db
from spendgate.api import create_app
from spendgate.settings import Settings

ADMIN = "bench-admin-token-0123456789"
GATEWAY = "bench-gateway-token-0123456789"

#: Component name → CPU seconds accumulated, for the request being measured.
spent: defaultdict[str, float] = defaultdict(float)


def _timed_async(name: str, fn: Callable[..., Awaitable[Any]]) -> Callable[..., Awaitable[Any]]:
    """Wrap `fn`: its CPU time (minus nested timed calls) is charged to `name`."""

    async def wrapper(*args: Any, **kwargs: Any) -> Any:
        nested_before = spent["__nested"]
        started = time.process_time()
        try:
            return await fn(*args, **kwargs)
        finally:
            elapsed = time.process_time() - started
            nested = spent["__nested"] - nested_before
            spent[name] += elapsed - nested
            spent["__nested"] = nested_before + elapsed

    return wrapper


def _timed_sync(name: str, fn: Callable[..., Any]) -> Callable[..., Any]:
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        nested_before = spent["__nested"]
        started = time.process_time()
        try:
            return fn(*args, **kwargs)
        finally:
            elapsed = time.process_time() - started
            spent[name] += elapsed - (spent["__nested"] - nested_before)
            spent["__nested"] = nested_before + elapsed

    return wrapper


def instrument(app: Any) -> Callable[..., Awaitable[None]]:
    runtime = app.state.runtime
    runtime.facts.load = _timed_async("facts", runtime.facts.load)
    runtime.policy.decide = _timed_async("policy", runtime.policy.decide)
    counters = runtime.counters
    for method, name in (("prior_decision", "redis: prior_decision"), ("read", "redis: read"),
                         ("prior_and_read", "redis: prior_decision + read"),
                         ("commit_decision", "redis: commit (Lua)"), ("settle", "redis: settle (Lua)")):
        setattr(counters, method, _timed_async(name, getattr(counters, method)))
    runtime.ledgers.find_event = _timed_async("db: find_event", runtime.ledgers.find_event)
    runtime.ledgers.record = _timed_async("db: record transaction", runtime.ledgers.record)
    # sys.modules: `spendgate.decisions.authorize` the attribute is the function, not the module.
    for module in (importlib.import_module("spendgate.decisions.authorize"),
                   importlib.import_module("spendgate.decisions.record")):
        for name in ("candidate_ledgers", "build_input"):
            setattr(module, name, _timed_sync("candidates+input", getattr(module, name)))
    # The route functions call authorize/record through whichever module imported them by name
    # (the routes, or the observing wrapper that adds metrics and the decision log).
    for module_name in ("spendgate.api.routes_decisions", "spendgate.decisions.observed"):
        try:
            module = importlib.import_module(module_name)
        except ImportError:
            continue
        for name in ("authorize", "record"):
            if callable(getattr(module, name, None)):
                setattr(module, name, _timed_async("route other", getattr(module, name)))
    return _timed_async("framework", app)


async def seed(admin: httpx.AsyncClient) -> str:
    day = {"max_budget": "100000", "soft_budget": "90000", "duration": "1d", "reset": "calendar"}
    month = {"max_budget": "1000000", "duration": "1mo"}
    for path, body in (
        ("/v1/admin/orgs", {"id": "org", "name": "Org", "budget": [month, {"max_budget": "5000000"}]}),
        ("/v1/admin/teams", {"id": "team", "name": "Team", "org_id": "org", "budget": day}),
        ("/v1/admin/users", {"id": "user", "org_id": "org", "budget": day}),
        ("/v1/admin/teams/team/members", {"user_id": "user", "budget": day}),
        ("/v1/admin/tags", {"id": "tag-1", "budget": {"max_budget": "100000", "duration": "1mo"}}),
        ("/v1/admin/end-users", {"id": "cust-0", "budget": {"max_budget": "1000", "duration": "1d"}}),
    ):
        response = await admin.post(path, json=body)
        assert response.status_code == 201, response.text
    response = await admin.post("/v1/admin/keys", json={
        "id": "key", "team_id": "team", "user_id": "user", "budget": [day, month],
        "model_budgets": {"gpt-4o": {"max_budget": "20000", "duration": "1d"}},
    })
    assert response.status_code == 201, response.text
    return str(response.json()["key"])


async def amain(args: argparse.Namespace) -> None:
    if args.no_pre_ping:
        original = spendgate.db.create_async_engine

        def no_pre_ping(*a: Any, **kw: Any) -> Any:
            kw["pool_pre_ping"] = False
            return original(*a, **kw)

        spendgate.db.create_async_engine = no_pre_ping
    database_url = await services.create_database("spendgate_bench")
    redis = services.RedisServer()
    redis.start()
    try:
        settings = Settings(database_url=database_url, redis_url=redis.url, admin_token=SecretStr(ADMIN),
                            gateway_token=SecretStr(GATEWAY))
        app = create_app(settings)
        async with app.router.lifespan_context(app):
            plain = httpx.ASGITransport(app=app)
            async with httpx.AsyncClient(transport=plain, base_url="http://bench",
                                         headers={"authorization": f"Bearer {ADMIN}"}) as admin:
                secret = await seed(admin)
            measured_app = instrument(app)
            transport = httpx.ASGITransport(app=measured_app)
            totals: dict[str, defaultdict[str, float]] = {"authorize": defaultdict(float), "record": defaultdict(float)}
            walls: dict[str, list[float]] = {"authorize": [], "record": []}
            async with httpx.AsyncClient(transport=transport, base_url="http://bench",
                                         headers={"authorization": f"Bearer {GATEWAY}"}) as gateway:
                for i in range(args.warmup + args.pairs):
                    request_id = f"split-{i}"
                    end_user = f"cust-{i % args.end_users}" if args.end_users else f"new-{i}"
                    bodies = {
                        "authorize": {"request_id": request_id, "api_key": secret, "model": "gpt-4o",
                                      "end_user": end_user, "tags": ["tag-1", "tag-2"], "estimated_cost": "0.02"},
                        "record": {"request_id": request_id, "cost": "0.0123", "outcome": "success"},
                    }
                    for route in ("authorize", "record"):
                        spent.clear()
                        cpu0, wall0 = time.process_time(), time.perf_counter()
                        response = await gateway.post(f"/v1/{route}", json=bodies[route])
                        cpu, wall = time.process_time() - cpu0, time.perf_counter() - wall0
                        assert response.status_code == 200, response.text
                        if i >= args.warmup:
                            for name, seconds in spent.items():
                                if name != "__nested":
                                    totals[route][name] += seconds
                            totals[route]["httpx client (bench side)"] += cpu - spent["__nested"]
                            totals[route]["total CPU"] += cpu
                            walls[route].append(wall)
        print(machine_summary())
        print(f"in-process, sequential; {args.pairs} pairs after {args.warmup} warm-up; "
              f"end users: {'a new one per request (facts-cache miss)' if not args.end_users or args.end_users > args.pairs else args.end_users}; "
              f"pool_pre_ping {'off' if args.no_pre_ping else 'on (as shipped)'}")
        print(f"{'CPU µs per request':<30} {'authorize':>10} {'record':>10}")
        names = sorted({n for route in totals.values() for n in route} - {"total CPU"},
                       key=lambda n: -(totals["authorize"][n] + totals["record"][n]))
        for name in [*names, "total CPU"]:
            print(f"{name:<30} {1e6 * totals['authorize'][name] / args.pairs:>10.0f} "
                  f"{1e6 * totals['record'][name] / args.pairs:>10.0f}")
        for route in ("authorize", "record"):
            walls[route].sort()
        print(f"{'wall p50 / p99 ms':<30} {fmt_ms(pct(walls['authorize'], 50)):>5}/{fmt_ms(pct(walls['authorize'], 99)):<4} "
              f"{fmt_ms(pct(walls['record'], 50)):>5}/{fmt_ms(pct(walls['record'], 99))}")
    finally:
        redis.stop()
        await services.drop_database(database_url)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--pairs", type=int, default=500)
    parser.add_argument("--warmup", type=int, default=100)
    parser.add_argument("--end-users", type=int, default=0,
                        help="pool of end users (0: a new one per request, so every authorize misses the facts cache)")
    parser.add_argument("--no-pre-ping", action="store_true")
    args = parser.parse_args(argv)
    asyncio.run(amain(args))
    return 0


if __name__ == "__main__":
    sys.exit(main())
