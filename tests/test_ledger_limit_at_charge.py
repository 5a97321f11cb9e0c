"""`ledgers.limit_at_charge` (migration 0006): every record writes the hard limit its decision was
taken with — through the PostgreSQL group commit and the SQLite path alike — and the migration
fills it in for the current ledgers recorded before it."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Sequence
from datetime import datetime, timedelta, timezone
from typing import Any

import pytest
from alembic import command
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

from spendgate.db import create_engine, session_factory
from spendgate.ledger_store import LedgerStore
from spendgate.ledgers import LedgerRef, charges_json
from spendgate.migrate import alembic_config, upgrade
from spendgate.periods import EPOCH
from spendgate.settings import Settings
from spendgate.tables import SpendEvent
from support.app import RunningApp
from support.scenario import authorize, create, record
from support.services import create_database, drop_database

pytestmark = pytest.mark.asyncio

USD = 1_000_000_000  # nanos


async def _limits(engine: AsyncEngine) -> dict[str, int | None]:
    async with engine.connect() as conn:
        rows = (await conn.execute(text("SELECT ledger_id, limit_at_charge FROM ledgers"))).all()
    return {row[0]: row[1] for row in rows}


async def _by_entity(engine: AsyncEngine) -> dict[tuple[str, str], int | None]:
    """Per entity (each has one ledger here: a lifetime budget, or a day that has not ended)."""
    async with engine.connect() as conn:
        rows = (await conn.execute(text("SELECT entity_type, entity_id, limit_at_charge FROM ledgers"))).all()
    return {(row[0], row[1]): row[2] for row in rows}


async def test_a_record_stores_the_limit_each_ledger_was_charged_under(any_app: RunningApp) -> None:
    """Key and team with limits, an org without: after authorize + record, and after a record with
    no authorize (attributed by the policy), each ledger holds its limit of that moment."""
    await create(any_app.admin, "orgs", {"id": "acme", "name": "Acme"})
    await create(any_app.admin, "teams", {
        "id": "search", "name": "Search", "org_id": "acme", "budget": {"max_budget": "40"},
    })
    key = await create(any_app.admin, "keys", {
        "id": "k1", "team_id": "search", "budget": {"max_budget": "10", "duration": "1d", "reset": "calendar"},
    })
    await authorize(any_app.gateway, api_key=key["key"], request_id="r1", model="gpt-4o", estimated_cost="1")
    await record(any_app.gateway, request_id="r1", cost="1", outcome="success")

    assert await _by_entity(any_app.runtime.engine) == {
        ("key", "k1"): 10 * USD, ("team", "search"): 40 * USD, ("org", "acme"): None,
    }

    raised = await any_app.admin.patch("/v1/admin/teams/search", json={"budget": {"max_budget": "45"}})
    assert raised.status_code == 200, raised.text
    await record(any_app.gateway, request_id="r2", api_key=key["key"], model="gpt-4o", cost="1", outcome="success")

    assert (await _by_entity(any_app.runtime.engine))[("team", "search")] == 45 * USD


# --- the PostgreSQL group commit: per-record limits in one batch statement -----------------------


@pytest.fixture
async def engines(clean_pg: str) -> AsyncIterator[list[AsyncEngine]]:
    made = [create_engine(Settings(database_url=clean_pg)) for _ in range(2)]
    yield made
    for engine in made:
        await engine.dispose()


async def _waiting_writes(engine: AsyncEngine) -> int:
    async with engine.connect() as conn:
        return int((await conn.execute(text(
            "SELECT count(*) FROM pg_locks l JOIN pg_class c ON c.oid = l.relation "
            "WHERE c.relname = 'spend_events' AND NOT l.granted "
            "AND l.database = (SELECT oid FROM pg_database WHERE datname = current_database())"
        ))).scalar_one())


async def _until_waiting(engine: AsyncEngine, count: int) -> None:
    for _ in range(1000):
        if await _waiting_writes(engine) >= count:
            return
        await asyncio.sleep(0.01)
    raise AssertionError(f"{count} writes never queued on the held lock")


async def test_records_batched_into_one_transaction_each_write_their_own_limits(engines: list[AsyncEngine]) -> None:
    """A burst queued behind a held write goes in one statement; each record's limits land on its
    ledgers, and a ledger two records share gets the later record's."""
    store = LedgerStore(session_factory(engines[0]))
    org = LedgerRef("org", "acme", None, EPOCH, None)
    keys = [LedgerRef("key", f"k{i}", None, EPOCH, None) for i in range(6)]

    def write(i: int, refs: Sequence[LedgerRef], limits: dict[str, int | None]) -> Any:
        event = SpendEvent(request_id=f"b{i}", cost=100, outcome="success", charges=charges_json(refs))
        return store.record(event=event, ledgers=refs, limits=limits)

    async with engines[1].begin() as holder:
        await holder.execute(text("LOCK TABLE spend_events IN EXCLUSIVE MODE"))
        first = asyncio.create_task(write(0, [keys[0]], {keys[0].id: 1}))
        await _until_waiting(engines[1], 1)
        burst = [
            asyncio.create_task(write(i, [org, keys[i]], {org.id: 7 if i < 5 else 9, keys[i].id: i * USD}))
            for i in range(1, 6)
        ]
        await _until_waiting(engines[1], 2)  # the burst: one batch, waiting behind the first
    await first
    await asyncio.gather(*burst)

    limits = await _limits(engines[0])
    assert [limits[ref.id] for ref in keys] == [1, 1 * USD, 2 * USD, 3 * USD, 4 * USD, 5 * USD]
    assert limits[org.id] == 9  # the burst's last record
    async with engines[0].connect() as conn:
        versions = dict((await conn.execute(text("SELECT ledger_id, version FROM ledgers"))).all())
    assert versions[org.id] == 1, "the whole burst was one transaction"


# --- the migration ------------------------------------------------------------------------------


@pytest.fixture
async def empty_pg() -> AsyncIterator[str]:
    url = await create_database("spendgate_migrate")
    yield url
    await drop_database(url)


@pytest.fixture(params=["postgres", "sqlite"])
def empty_database(request: pytest.FixtureRequest) -> str:
    return str(request.getfixturevalue("empty_pg" if request.param == "postgres" else "sqlite_url"))


async def _at_revision(engine: AsyncEngine, revision: str) -> None:
    if engine.dialect.name == "postgresql":  # alembic commits each revision (0005 builds CONCURRENTLY)
        async with engine.connect() as conn:
            await conn.run_sync(lambda sync: command.upgrade(alembic_config(sync), revision))
    else:
        async with engine.begin() as conn:
            await conn.run_sync(lambda sync: command.upgrade(alembic_config(sync), revision))


async def test_the_migration_fills_in_the_limits_of_current_ledgers_with_spend(empty_database: str) -> None:
    engine = create_async_engine(empty_database)
    now = datetime.now(timezone.utc).replace(microsecond=0)
    today = now.replace(hour=0, minute=0, second=0)
    rows = [  # ledger id, entity, window, start, end, spent
        ("current", "key", "k1", "1d", today, today + timedelta(days=1), 5),
        ("past", "key", "k1", "1d", today - timedelta(days=1), today, 5),
        ("idle", "key", "k2", "1d", today, today + timedelta(days=1), 0),
        ("lifetime", "team", "t1", None, datetime(1970, 1, 1, tzinfo=timezone.utc), None, 5),
        ("unbudgeted", "end_user", "c1", None, datetime(1970, 1, 1, tzinfo=timezone.utc), None, 5),
    ]
    budgets = [("key", "k1", 10, "1d"), ("key", "k1", 300, "1mo"), ("key", "k2", 10, "1d"), ("team", "t1", 40, None)]
    sqlite = engine.dialect.name == "sqlite"

    def stamp(value: datetime | None) -> Any:
        return value.replace(tzinfo=None).isoformat(sep=" ") if sqlite and value else value

    try:
        await _at_revision(engine, "0005_console_indexes")
        async with engine.begin() as conn:
            for entity_type, entity_id, limit, duration in budgets:
                await conn.execute(text(
                    "INSERT INTO budgets (entity_type, entity_id, max_budget, duration, reset, set_at) "
                    "VALUES (:t, :i, :m, :d, 'calendar', :at)"
                ), {"t": entity_type, "i": entity_id, "m": limit, "d": duration, "at": stamp(today)})
            for ledger_id, entity_type, entity_id, window, start, end, spent in rows:
                await conn.execute(text(
                    'INSERT INTO ledgers (ledger_id, entity_type, entity_id, "window", period_start, period_end, '
                    "spent, reserved, version, updated_at) VALUES (:l, :t, :i, :w, :s, :e, :spent, 0, 1, :at)"
                ), {"l": ledger_id, "t": entity_type, "i": entity_id, "w": window, "s": stamp(start),
                    "e": stamp(end), "spent": spent, "at": stamp(now)})
        await upgrade(engine)

        assert await _limits(engine) == {
            "current": 10, "lifetime": 40,  # the budget of the ledger's window
            "past": None, "idle": None, "unbudgeted": None,  # not ranked: over, no spend, no limit
        }
    finally:
        await engine.dispose()


async def test_the_console_indexes_are_built_valid_on_postgresql(empty_pg: str) -> None:
    """0005 and 0006 build their indexes CONCURRENTLY (outside the migration's transaction); a
    concurrent build that failed would leave an INVALID index behind."""
    engine = create_async_engine(empty_pg)
    try:
        await upgrade(engine)
        async with engine.connect() as conn:
            found = dict((await conn.execute(text(
                "SELECT c.relname, i.indisvalid FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid "
                "WHERE c.relname IN ('ix_ledgers_period_end', 'ix_spend_rollups_all_hour', "
                "'ix_ledgers_never_ending_limited')"
            ))).all())
    finally:
        await engine.dispose()
    assert found == {
        "ix_ledgers_period_end": True, "ix_spend_rollups_all_hour": True, "ix_ledgers_never_ending_limited": True,
    }


async def test_an_interrupted_concurrent_build_is_dropped_and_built_again(empty_pg: str) -> None:
    """A failed CREATE INDEX CONCURRENTLY leaves an INVALID index of its name and the revision
    unapplied: the next upgrade replaces it (here: a unique build that met duplicates)."""
    engine = create_async_engine(empty_pg)
    try:
        await _at_revision(engine, "0004_alerts")
        async with engine.connect() as conn:
            await conn.execute(text(
                'INSERT INTO ledgers (ledger_id, entity_type, entity_id, "window", period_start, spent, reserved, '
                "version, updated_at) VALUES ('a', 'key', 'k1', NULL, now(), 0, 0, 0, now()), "
                "('b', 'key', 'k2', NULL, now(), 0, 0, 0, now())"
            ))
            await conn.commit()
            autocommit = await conn.execution_options(isolation_level="AUTOCOMMIT")
            with pytest.raises(Exception, match="could not create unique index"):
                await autocommit.execute(text(
                    "CREATE UNIQUE INDEX CONCURRENTLY ix_ledgers_period_end ON ledgers (entity_type)"
                ))
        await upgrade(engine)
        async with engine.connect() as conn:
            valid, definition = (await conn.execute(text(
                "SELECT i.indisvalid, pg_get_indexdef(i.indexrelid) FROM pg_index i "
                "JOIN pg_class c ON c.oid = i.indexrelid WHERE c.relname = 'ix_ledgers_period_end'"
            ))).one()
    finally:
        await engine.dispose()
    assert valid is True
    assert definition.endswith("USING btree (period_end)"), definition
