"""Schema migrations: apply to an empty database, are idempotent, match the models, tolerate racing starters."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import inspect, text
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine
from sqlmodel import SQLModel

from spendgate import tables  # noqa: F401  (registers the models)
from spendgate.migrate import alembic_config, upgrade
from support.services import create_database, drop_database

pytestmark = pytest.mark.asyncio

EXPECTED_TABLES = {
    "orgs", "teams", "users", "team_members", "keys", "end_users", "tags", "budgets", "ledgers", "spend_events",
    "reservations", "alembic_version",
    "alert_events", "decision_records", "decision_record_entities",
    "spend_rollups",
    "audit_events",
}


@pytest.fixture
async def empty_pg() -> AsyncIterator[str]:
    url = await create_database("spendgate_migrate")
    yield url
    await drop_database(url)


async def _tables(engine: AsyncEngine) -> set[str]:
    async with engine.connect() as conn:
        return set(await conn.run_sync(lambda sync: inspect(sync).get_table_names()))


#: The newest revision of the scripts (one head: the revision chain has no branches).
_HEADS = list(ScriptDirectory.from_config(alembic_config()).get_heads())


async def _head(engine: AsyncEngine) -> list[str]:
    async with engine.connect() as conn:
        return [row[0] for row in (await conn.execute(text("SELECT version_num FROM alembic_version"))).all()]


def _schema_drift(connection: Any) -> list[Any]:
    context = MigrationContext.configure(connection, opts={"compare_type": True})
    return list(compare_metadata(context, SQLModel.metadata))


@pytest.fixture(params=["postgres", "sqlite"])
def empty_database(request: pytest.FixtureRequest) -> str:
    return str(request.getfixturevalue("empty_pg" if request.param == "postgres" else "sqlite_url"))


async def test_migrations_build_the_whole_schema_on_an_empty_database_and_are_idempotent(empty_database: str) -> None:
    engine = create_async_engine(empty_database)
    try:
        await upgrade(engine)
        first = await _head(engine)
        await upgrade(engine)

        assert await _tables(engine) == EXPECTED_TABLES
        assert await _head(engine) == first == _HEADS
    finally:
        await engine.dispose()


async def test_migrated_schema_matches_the_models_exactly(empty_pg: str) -> None:
    engine = create_async_engine(empty_pg)
    try:
        await upgrade(engine)
        async with engine.connect() as conn:
            drift = await conn.run_sync(_schema_drift)
    finally:
        await engine.dispose()
    assert drift == []


async def test_several_replicas_migrating_the_same_empty_database_at_once_all_succeed(empty_pg: str) -> None:
    engines = [create_async_engine(empty_pg) for _ in range(4)]
    try:
        await asyncio.gather(*(upgrade(engine) for engine in engines))
        assert await _tables(engines[0]) == EXPECTED_TABLES
        assert await _head(engines[0]) == _HEADS
    finally:
        for engine in engines:
            await engine.dispose()


async def test_two_service_instances_starting_at_the_same_moment_share_one_database(
    app_factory: Any, empty_pg: str
) -> None:
    first, second = await asyncio.gather(app_factory(database_url=empty_pg), app_factory(database_url=empty_pg))

    created = await first.admin.post("/v1/admin/orgs", json={"id": "acme", "name": "Acme"})
    seen = await second.admin.get("/v1/admin/orgs/acme")

    assert created.status_code == 201 and seen.status_code == 200
