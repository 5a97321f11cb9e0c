"""The embedded default's one writer: everything the service writes to its SQLite file — the
counters' decisions, records, recent decisions, alert events — goes through the counters' own
connection and thread, group-committed, with SQLAlchemy's statements (spendgate/sqlite_statements.py)."""

from __future__ import annotations

import asyncio
import sqlite3
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import event

from spendgate.alerts import outbox
from spendgate.db import create_engine, execute_core, session_factory
from spendgate.decision_store import sqlite_writes
from spendgate import ledger_store
from spendgate.counters import SqliteCounters
from spendgate.ledger_store import LedgerStore, RecordedSpend
from spendgate.ledgers import LedgerRef, charges_json
from spendgate.migrate import upgrade
from spendgate.periods import EPOCH
from spendgate.record_batch import WrittenBatch
from spendgate.tables import SpendEvent
from spendgate.reports import rollups
from spendgate.settings import Settings
from spendgate.sqlite_statements import SqliteStatement
from support.app import AppFactory
from support.scenario import authorize, create_key, ledger, record

pytestmark = pytest.mark.asyncio

AT = datetime(2026, 1, 2, 3, 4, 5, 6, tzinfo=timezone.utc)
DAY = datetime(2026, 1, 2, tzinfo=timezone.utc)
NEXT = datetime(2026, 1, 3, tzinfo=timezone.utc)
ORG = LedgerRef("org", "o1", None, EPOCH, None)

#: Every statement the one writer runs, with two rows each (the second, where it can, a conflict).
CASES: list[tuple[str, SqliteStatement, list[dict[str, Any]]]] = [
    ("spend event", ledger_store._SQLITE_INSERT_EVENT, [
        {"request_id": "r1", "cost": 2**63 - 1, "outcome": "success", "key_id": "k1", "model": "gpt-4o",
         "charges": [{"ledger_id": "key:k1:1d:1", "entity_type": "key", "entity_id": "k1", "note": "café ✓"}],
         "policy_revision": "rev", "created_at": AT},
        {"request_id": "r1", "cost": 1, "outcome": "failure", "key_id": None, "model": None, "charges": [],
         "policy_revision": None, "created_at": AT},
    ]),
    ("ledger upsert", ledger_store._SQLITE_ADD_SPEND, [
        {"ledger_id": "key:k1:1d:1", "entity_type": "key", "entity_id": "k1", "window": "1d", "period_start": DAY,
         "period_end": NEXT, "spent": 7, "reserved": 0, "version": 1, "updated_at": AT, "limit_at_charge": 100,
         "headroom_tier": 11},
        {"ledger_id": "key:k1:1d:1", "entity_type": "key", "entity_id": "k1", "window": "1d", "period_start": DAY,
         "period_end": NEXT, "spent": 5, "reserved": 0, "version": 1, "updated_at": NEXT, "limit_at_charge": 50,
         "headroom_tier": None},
    ]),
    ("rollup upsert", rollups._SQLITE_ADD_ROLLUP, [
        {"entity_type": "tag", "entity_id": "t é", "hour": DAY, "model": "m", "key_id": "k1", "outcome": "success",
         "spend": 3, "requests": 1, "failures": 0},
        {"entity_type": "tag", "entity_id": "t é", "hour": DAY, "model": "m", "key_id": "k1", "outcome": "success",
         "spend": 4, "requests": 1, "failures": 1},
    ]),
    ("decision row", sqlite_writes._RECORDS, [
        {"decision_id": "d1", "request_id": "r1", "at": AT, "decision": "deny",
         "reasons": [{"code": "budget_exceeded", "spent": "1.000000"}], "charges": [{"spent": 10**19}], "alerts": [],
         "policy_revision": None},
    ]),
    ("alert event", outbox._SQLITE_INSERT, [
        {"id": "e1", "dedupe_key": "budget_exceeded:-:key:k1:1d:1", "event": "budget_exceeded", "entity_type": "key",
         "entity_id": "k1", "ledger_id": "key:k1:1d:1", "window": "1d", "spent": 10, "limit": 10,
         "soft_budget": None, "threshold": None, "resets_at": NEXT, "details": {"message": "spent — all"},
         "status": "pending", "attempts": 0, "last_error": None, "next_attempt_at": AT, "locked_until": None,
         "claim": None, "delivered_to": [], "delivered_at": None, "created_at": AT},
        {"id": "e2", "dedupe_key": "budget_exceeded:-:key:k1:1d:1", "event": "budget_exceeded", "entity_type": "key",
         "entity_id": "k1", "ledger_id": "key:k1:1d:1", "window": "1d", "spent": 11, "limit": 10,
         "soft_budget": None, "threshold": None, "resets_at": NEXT, "details": {}, "status": "pending",
         "attempts": 0, "last_error": None, "next_attempt_at": AT, "locked_until": None, "claim": None,
         "delivered_to": [], "delivered_at": None, "created_at": AT},
    ]),
]


@pytest.mark.parametrize("name, statement, rows", CASES, ids=[case[0] for case in CASES])
async def test_each_statement_writes_and_returns_what_a_session_does(
    tmp_path: Path, name: str, statement: SqliteStatement, rows: list[dict[str, Any]]
) -> None:
    """Compiled once, bound by their column types: the file holds, byte for byte, what the engine's own
    session writes with the same statement and rows, and RETURNING answers the same."""
    table = statement.statement.table.name  # type: ignore[attr-defined]
    contents, answers = [], []
    for way in ("session", "one writer"):
        path = tmp_path / f"{way}.db"
        engine = create_engine(Settings(database_url=f"sqlite+aiosqlite:///{path}"))
        await upgrade(engine)
        returned: list[Any] = []
        try:
            if way == "session":
                async with session_factory(engine)() as session, session.begin():
                    for row in rows:
                        result = await execute_core(session, statement.statement, row)
                        returned.append([tuple(r) for r in result.all()] if result.returns_rows else None)
            else:
                with sqlite3.connect(path, isolation_level=None) as db:
                    for row in rows:
                        cursor = db.execute(statement.sql, statement.parameters(row))
                        returned.append(cursor.fetchall() if cursor.description else None)
        finally:
            await engine.dispose()
        with sqlite3.connect(path) as db:
            contents.append(db.execute(f"SELECT * FROM {table} ORDER BY 1").fetchall())
        answers.append(returned)
    assert contents[0], f"{name}: nothing written"
    assert contents[1] == contents[0]
    assert answers[1] == answers[0]


async def test_records_on_the_embedded_default_go_through_the_counters_thread_and_share_its_commits(
    app_factory: AppFactory, sqlite_url: str
) -> None:
    """Records write their event, ledgers and rollups on the counters' thread, group-committed: the
    engine's connection writes none of them, and records that arrive together commit together (on
    the engine's connection each was a transaction of its own, built statement by statement: ~70
    pairs a second, p99 past 2 s at 16 connections — bench/README.md, seventeenth round)."""
    app = await app_factory(database_url=sqlite_url)
    writer = app.runtime.sqlite_writer
    assert writer is not None
    secret = await create_key(app.admin, id="k1", budget={"max_budget": "100", "duration": "1d"})
    on_engine: list[str] = []

    @event.listens_for(app.runtime.engine.sync_engine, "before_cursor_execute")
    def _seen(conn: Any, cursor: Any, statement: str, params: Any, context: Any, many: bool) -> None:
        if not statement.lstrip().upper().startswith("SELECT"):
            on_engine.append(statement.split("(", 1)[0].strip())

    count = 24
    for n in range(count):
        await authorize(app.gateway, request_id=f"r{n}", api_key=secret, estimated_cost="0.10")
    commits = writer.commits
    answers = await asyncio.gather(*(
        record(app.gateway, request_id=f"r{n}", cost="0.25", outcome="success") for n in range(count)
    ))
    assert all(a["recorded"] and not a["duplicate"] for a in answers), answers
    assert writer.commits - commits < count  # some records shared a transaction
    assert (await ledger(app.admin, "keys/k1", "1d"))["spent"] == "6.000000"
    report = await app.admin.get("/v1/reports/spend", params={"group_by": "key"})
    assert report.status_code == 200, report.text
    assert report.json()["rows"] == [{"key": "k1", "spend": "6.000000", "requests": count, "failures": 0}]
    assert on_engine == [], on_engine


class _Refuses:
    """An in-transaction writer that raises for one request: as a constraint the database enforces would."""

    def __init__(self, request_id: str) -> None:
        self.request_id = request_id

    async def postgres(self, connection: Any, batch: WrittenBatch) -> None:  # pragma: no cover - SQLite only
        raise AssertionError("not on PostgreSQL")

    def sqlite(self, db: sqlite3.Connection, batch: WrittenBatch) -> None:
        if any(e.request_id == self.request_id for e in batch.events):
            raise sqlite3.IntegrityError(f"refused {self.request_id}")


async def _sqlite_store(path: Path) -> tuple[LedgerStore, SqliteCounters, Any]:
    url = f"sqlite+aiosqlite:///{path}"
    engine = create_engine(Settings(database_url=url))
    await upgrade(engine)
    counters = SqliteCounters.for_url(url)
    store = LedgerStore(session_factory(engine))
    store.write_through(counters.worker)
    return store, counters, engine


def _event(request_id: str, cost: int) -> SpendEvent:
    return SpendEvent(request_id=request_id, cost=cost, outcome="success", charges=charges_json([ORG]))


async def test_a_record_that_fails_in_its_transaction_leaves_nothing_and_its_neighbours_commit(tmp_path: Path) -> None:
    """A record is its event, its ledgers and its rollups, all or nothing — also when it shares the one
    writer's transaction with others: the one that fails is rolled back alone, its caller hears why."""
    store, counters, engine = await _sqlite_store(tmp_path / "s.db")
    store.in_transaction.append(_Refuses("bad"))
    try:
        results = await asyncio.gather(
            *(store.record(event=_event(rid, cost), ledgers=[ORG]) for rid, cost in (("good-1", 10), ("bad", 20),
                                                                                     ("good-2", 30))),
            return_exceptions=True,
        )
    finally:
        await counters.close()
        await engine.dispose()
    assert isinstance(results[1], sqlite3.IntegrityError), results
    assert [r.duplicate for r in results if isinstance(r, RecordedSpend)] == [False, False]
    with sqlite3.connect(tmp_path / "s.db") as db:
        assert dict(db.execute("SELECT request_id, cost FROM spend_events")) == {"good-1": 10, "good-2": 30}
        assert db.execute("SELECT spent, version FROM ledgers").fetchall() == [(40, 2)]
        assert db.execute("SELECT sum(spend), sum(requests) FROM spend_rollups WHERE entity_type = '*'").fetchone() \
            == (40, 2)


async def test_the_same_request_id_twice_at_once_is_recorded_once(tmp_path: Path) -> None:
    store, counters, engine = await _sqlite_store(tmp_path / "s.db")
    try:
        results = await asyncio.gather(*(
            store.record(event=_event(rid, cost), ledgers=[ORG]) for rid, cost in (("twice", 500), ("other", 7),
                                                                                  ("twice", 500))
        ))
    finally:
        await counters.close()
        await engine.dispose()
    twice = [r for r in results if r.event.request_id == "twice"]
    assert sorted(r.duplicate for r in twice) == [False, True]
    assert {s.spent for r in twice for s in r.snapshots} <= {500, 507}  # committed figures, its cost in them
    with sqlite3.connect(tmp_path / "s.db") as db:
        assert db.execute("SELECT spent FROM ledgers").fetchall() == [(507,)]
        assert dict(db.execute("SELECT request_id, cost FROM spend_events")) == {"twice": 500, "other": 7}
