"""The floor apps of bench/floor.py: the least a service doing Spendgate's I/O could do, on the same stack.

* `hello`     — one POST route answering a constant (the HTTP floor: FastAPI + uvicorn alone).
* `authorize` — POST /v1/authorize: parse the JSON body, one EVALSHA of the service's own check-and-reserve
  script (`commit.lua` through `RedisCounters.commit_decision`) holding 6 ledgers, answer.
* `pair`      — `authorize` plus POST /v1/record: the spend event and its 6 ledger upserts written
  group-committed (the service's `RecordBatcher` and its two statements from `ledger_store.py`, on a plain
  asyncpg pool), answered only after the commit, then one EVALSHA of `settle.lua`.

No facts, no policy, no validation models, no metrics: whatever Spendgate spends beyond these is its own.
Same garbage-collector settings as `spendgate serve` (`spendgate.heap.settle_after_startup`).
Configured by FLOOR_REDIS_URL and FLOOR_DATABASE_URL (bench code, not the service: no settings class).
Run by floor.py as `uvicorn floor_apps:<name>` with the same uvicorn settings as `spendgate serve`.
"""

from __future__ import annotations

import json
import os
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from datetime import datetime, timezone
from typing import Any

import asyncpg
from fastapi import FastAPI, Request, Response

from _fixtures import decision_inputs
from spendgate.counters import Hold, RedisCounters, StoredDecision
from spendgate.counters.redis_pool import redis_client
from spendgate.heap import settle_after_startup
from spendgate.ledger_store import _PG_ADD_SPEND, _PG_INSERT_EVENTS
from spendgate.ledgers import LedgerRef, LedgerSnapshot
from spendgate.record_batch import BatchItem, RecordBatcher
from spendgate.settings import Settings
from spendgate.tables import SpendEvent

#: The service's default pool size (SPENDGATE_REDIS_MAX_CONNECTIONS).
_REDIS_MAX_CONNECTIONS: int = Settings.model_fields["redis_max_connections"].default

__all__ = ["LEDGERS", "hello", "authorize", "pair"]


def _one_ledger_each(*entity_types: str) -> tuple[LedgerRef, ...]:
    first: dict[str, LedgerRef] = {}
    for candidate in decision_inputs()[1]:
        first.setdefault(candidate.ref.entity_type, candidate.ref)
    return tuple(sorted((first[kind] for kind in entity_types), key=lambda ref: ref.id))


#: The 6 ledgers every floor request holds and charges — the kinds floor.py seeds Spendgate with: a
#: team key's day budget, its team's and membership's, the key's gpt-4o budget, an end user's, a tag's.
LEDGERS = _one_ledger_each("key", "team", "team_member", "key_model", "end_user", "tag")
_LIMIT = 10**18  # far above anything a run reserves: the floor measures admission, not refusals
_AMOUNT = 2_000_000  # $0.002 in nanodollars, the estimate floor.py sends Spendgate
_JSON = "application/json"


async def _no_snapshots(_ids: Any) -> dict[str, LedgerSnapshot]:
    return {}  # ledgers seed at 0 on first use (the service loads them from the database)


def _decision(request_id: str) -> StoredDecision:
    body = {"request_id": request_id, "decision": "allow", "reasons": [],
            "charges": [ref.to_json() for ref in LEDGERS], "reservation": {"amount": "0.002"}}
    return StoredDecision(request_id, body, LEDGERS, _AMOUNT)


@asynccontextmanager
async def _settled(_app: FastAPI) -> AsyncIterator[None]:
    settle_after_startup()  # the collector settings `spendgate serve` runs with (heap.py)
    yield


def _hello_app() -> FastAPI:
    app = FastAPI(lifespan=_settled)

    @app.post("/v1/authorize")
    async def hello_route() -> Response:
        return Response(b'{"decision":"allow"}', media_type=_JSON)

    return app


async def _authorize(counters: RedisCounters, request: Request) -> Response:
    request_id = json.loads(await request.body())["request_id"]
    outcome = await counters.commit_decision(
        decision=_decision(request_id), holds=[Hold(ref, _LIMIT) for ref in LEDGERS], ttl_seconds=600,
        now=datetime.now(timezone.utc),
    )
    if outcome.status not in ("committed", "duplicate"):
        return Response(json.dumps({"error": outcome.status}), status_code=500, media_type=_JSON)
    return Response(json.dumps({"request_id": request_id, "decision": "allow"}), media_type=_JSON)


def _counters_lifespan(app: FastAPI, *, with_database: bool) -> Any:
    @asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        # The service's own client (runtime.py): its pool (callers wait when it is full), 2 s timeouts,
        # commands packed by hiredis.
        client = redis_client(os.environ["FLOOR_REDIS_URL"], max_connections=_REDIS_MAX_CONNECTIONS)
        app.state.counters = RedisCounters(client, _no_snapshots, key_prefix="floor")
        pool = None
        if with_database:
            url = os.environ["FLOOR_DATABASE_URL"].replace("postgresql+asyncpg://", "postgresql://", 1)
            pool = await asyncpg.create_pool(url, min_size=2, max_size=10)
            app.state.batcher = RecordBatcher(_batch_writer(pool))
        settle_after_startup()  # the collector settings `spendgate serve` runs with (heap.py)
        try:
            yield
        finally:
            if pool is not None:
                await pool.close()
            await client.aclose()

    return lifespan


def _batch_writer(pool: asyncpg.Pool) -> Any:
    """Spendgate's PostgreSQL record transaction (`LedgerStore._write_batch`) without rollup writers."""

    async def write(items: Sequence[BatchItem]) -> dict[str, tuple[LedgerSnapshot, ...] | None]:
        events = sorted((item.event for item in items), key=lambda event: event.request_id)
        async with pool.acquire() as connection, connection.transaction():
            rows = await connection.fetch(
                _PG_INSERT_EVENTS, [e.request_id for e in events], [e.cost for e in events],
                [e.outcome for e in events], [e.key_id for e in events], [e.model for e in events],
                [json.dumps(e.charges) for e in events], [e.policy_revision for e in events],
                [e.created_at for e in events],
            )
            inserted = {row[0] for row in rows}
            cost = sum(item.event.cost for item in items if item.event.request_id in inserted)
            updated = await connection.fetch(
                _PG_ADD_SPEND, [r.id for r in LEDGERS], [r.entity_type for r in LEDGERS],
                [r.entity_id for r in LEDGERS], [r.window for r in LEDGERS], [r.period_start for r in LEDGERS],
                [r.period_end for r in LEDGERS], [cost] * len(LEDGERS), [None] * len(LEDGERS),
                datetime.now(timezone.utc),
            ) if inserted else []
        snaps = {row[0]: LedgerSnapshot(row[0], int(row[1]), int(row[2])) for row in updated}
        return {item.event.request_id: tuple(snaps[ref.id] for ref in LEDGERS)
                if item.event.request_id in inserted else None for item in items}

    return write


def _authorize_app(*, with_record: bool) -> FastAPI:
    app = FastAPI()
    app.router.lifespan_context = _counters_lifespan(app, with_database=with_record)

    @app.post("/v1/authorize")
    async def authorize_route(request: Request) -> Response:
        return await _authorize(app.state.counters, request)

    if with_record:
        charges = [{**ref.to_json(), "ledger_id": ref.id} for ref in LEDGERS]

        @app.post("/v1/record")
        async def record_route(request: Request) -> Response:
            body = json.loads(await request.body())
            event = SpendEvent(request_id=body["request_id"], cost=int(body.get("cost_nanos", 1_000_000)),
                               outcome="success", key_id="key-floor", model="gpt-4o", charges=charges,
                               policy_revision="floor", created_at=datetime.now(timezone.utc))
            snapshots = await app.state.batcher.submit(event, LEDGERS)
            if snapshots:
                await app.state.counters.settle(request_id=event.request_id, snapshots=snapshots)
            return Response(json.dumps({"request_id": event.request_id, "recorded": True}), media_type=_JSON)

    return app


hello = _hello_app()
authorize = _authorize_app(with_record=False)
pair = _authorize_app(with_record=True)
