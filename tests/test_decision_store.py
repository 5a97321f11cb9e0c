"""The recent-decisions store (GET /v1/reports/decisions): denials and alerting allows, per entity,
written off the decision path, bounded by size and age — on PostgreSQL+Redis and on SQLite."""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import random
import sqlite3
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import event, text
from sqlalchemy.engine.interfaces import CacheStats

from spendgate.alerts.events import AlertDraft
from spendgate.alerts.outbox import insert_core
from spendgate.counters import SqliteCounters
from spendgate.db import create_engine, execute_core, session_factory
from spendgate.decision_store import SqliteBatchWriter
from spendgate.decision_store.store import StoredRow, new_decision_id, write_rows
from spendgate.decision_store.writer import BackgroundWriter
from spendgate.ledgers import LedgerRef
from spendgate.migrate import upgrade
from spendgate.settings import Settings
from support.app import AppFactory, RunningApp
from support.scenario import authorize, create_key

pytestmark = pytest.mark.asyncio


async def _decisions(app: RunningApp, **params: Any) -> dict[str, Any]:
    await app.runtime.background.drain()  # type: ignore[union-attr]  # everything queued is written
    response = await app.admin.get("/v1/reports/decisions", params=params)
    assert response.status_code == 200, response.text
    return response.json()  # type: ignore[no-any-return]


async def _deny(app: RunningApp, secret: str, request_id: str) -> dict[str, Any]:
    body = await authorize(app.gateway, request_id=request_id, api_key=secret, estimated_cost="5")
    assert body["decision"] == "deny", body
    return body


async def test_a_refusal_is_kept_with_its_reasons_and_charges_and_found_by_its_key(any_app: RunningApp) -> None:
    secret = await create_key(any_app.admin, id="k1", budget={"max_budget": "1.00", "duration": "1d"})
    other = await create_key(any_app.admin, id="k2", budget={"max_budget": "1.00"})
    denied = await _deny(any_app, secret, "r-denied")
    await authorize(any_app.gateway, request_id="r-allowed", api_key=secret, estimated_cost="0.10")
    await _deny(any_app, other, "r-other")

    found = await _decisions(any_app, entity="key:k1")
    assert [item["request_id"] for item in found["items"]] == ["r-denied"]  # a plain allow is not kept
    item = found["items"][0]
    assert item["decision"] == "deny"
    assert item["reasons"] == denied["reasons"] and item["charges"] == denied["charges"]
    assert item["policy_revision"] == denied["policy_revision"]
    assert item["at"].endswith("Z") and item["decision_id"]
    assert found["next_cursor"] is None
    stored = json.dumps(await _decisions(any_app))
    for secret_text in (secret, other, hashlib.sha256(secret.encode()).hexdigest()):
        assert secret_text not in stored


async def test_an_allow_that_crossed_a_soft_budget_is_kept_and_the_decision_filter_tells_them_apart(
    any_app: RunningApp,
) -> None:
    secret = await create_key(any_app.admin, id="k1", budget={"max_budget": "1.00", "soft_budget": "0"})
    allowed = await authorize(any_app.gateway, request_id="r1", api_key=secret, estimated_cost="0.10")
    assert allowed["decision"] == "allow" and allowed["alerts"], allowed
    await _deny(any_app, secret, "r2")
    allows = await _decisions(any_app, entity="key:k1", decision="allow")
    denies = await _decisions(any_app, entity="key:k1", decision="deny")
    assert [i["request_id"] for i in allows["items"]] == ["r1"]
    assert allows["items"][0]["alerts"] == allowed["alerts"]
    assert [i["request_id"] for i in denies["items"]] == ["r2"]


async def test_decisions_page_newest_first_with_a_cursor(pg_app: RunningApp) -> None:
    secret = await create_key(pg_app.admin, id="k1", budget={"max_budget": "1.00"})
    for n in range(5):
        await _deny(pg_app, secret, f"r{n}")
    seen: list[str] = []
    cursor = None
    while True:
        page = await _decisions(pg_app, entity="key:k1", limit=2, **({"cursor": cursor} if cursor else {}))
        assert len(page["items"]) <= 2
        seen += [item["request_id"] for item in page["items"]]
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert sorted(seen) == [f"r{n}" for n in range(5)] and len(set(seen)) == 5
    ats = [item["at"] for item in (await _decisions(pg_app, entity="key:k1"))["items"]]
    assert ats == sorted(ats, reverse=True)


async def test_the_store_keeps_only_the_newest_rows_up_to_its_size_cap(
    app_factory: AppFactory, clean_pg: str, redis_url: str
) -> None:
    app = await app_factory(database_url=clean_pg, redis_url=redis_url, decision_store_max_rows=5)
    secret = await create_key(app.admin, id="k1", budget={"max_budget": "1.00"})
    for n in range(12):
        await _deny(app, secret, f"r{n:02d}")
        await app.runtime.background.drain()  # type: ignore[union-attr]  # one write (and prune) each
    kept = (await _decisions(app, limit=100))["items"]
    assert sorted(item["request_id"] for item in kept) == [f"r{n:02d}" for n in range(7, 12)]
    by_entity = (await _decisions(app, entity="key:k1", limit=100))["items"]
    assert len(by_entity) == 5  # the entity index was pruned with the rows


async def test_the_store_forgets_decisions_older_than_its_age_cap(
    app_factory: AppFactory, sqlite_url: str
) -> None:
    app = await app_factory(database_url=sqlite_url, decision_store_max_rows=10, decision_store_max_age_seconds=3600)
    secret = await create_key(app.admin, id="k1", budget={"max_budget": "1.00"})
    await _deny(app, secret, "old")
    start = app.runtime.clock()
    app.runtime.clock = lambda: start + timedelta(hours=2)
    await _deny(app, secret, "new")
    assert [item["request_id"] for item in (await _decisions(app))["items"]] == ["new"]


async def test_a_bad_entity_or_cursor_is_refused_naming_the_parameter(any_app: RunningApp) -> None:
    for params, field in (({"entity": "nokind"}, "entity"), ({"entity": "planet:x"}, "entity"),
                          ({"cursor": "not-a-cursor"}, "cursor")):
        response = await any_app.admin.get("/v1/reports/decisions", params=params)
        assert response.status_code == 422, response.text
        assert response.json()["error"]["message"].startswith(field), response.text
    assert (await any_app.gateway.get("/v1/reports/decisions")).status_code == 401


@pytest.fixture(params=["postgresql", "sqlite"])
def store_database(request: pytest.FixtureRequest) -> tuple[str, str]:
    """Which database and its URL (PostgreSQL migrated by its fixture, SQLite by the test)."""
    return request.param, request.getfixturevalue("clean_pg" if request.param == "postgresql" else "sqlite_url")


async def test_batches_of_any_size_are_written_by_statements_compiled_once(store_database: tuple[str, str]) -> None:
    """In a storm of refusals every denial is stored, in batches of whatever size has queued. Their
    INSERTs must come from SQLAlchemy's statement cache: compiling one per batch size took a fifth of a
    replica's event loop (bench/README.md, seventh round)."""
    database, url = store_database
    engine = create_engine(Settings(database_url=url))
    if database == "sqlite":
        await upgrade(engine)
    compiled: list[str] = []

    @event.listens_for(engine.sync_engine, "before_cursor_execute")
    def _seen(conn: Any, cursor: Any, statement: str, params: Any, context: Any, many: bool) -> None:
        if statement.lstrip().upper().startswith("INSERT") and context.cache_hit is not CacheStats.CACHE_HIT:
            compiled.append(statement.split("(", 1)[0].strip())

    sessions = session_factory(engine)
    at = datetime(2026, 1, 1, tzinfo=timezone.utc)
    charge = {"entity": {"type": "key", "id": "k1"}, "window": "1d"}
    try:
        written = 0
        for size in range(1, 9):  # batch sizes 1 to 8, as a queue under load hands them over
            rows = [
                StoredRow(f"d{written + i}", f"r{written + i}", at, "deny", [], [charge], [], "rev")
                for i in range(size)
            ]
            async with sessions() as session, session.begin():
                await write_rows(session, rows)
            written += size
    finally:
        await engine.dispose()
    # Each table's INSERT is compiled for one row (the first batch) and for several (the second); the
    # six batches after those reuse them. One statement per batch size compiled eight per table.
    tables = ("INSERT INTO decision_records", "INSERT INTO decision_record_entities")
    assert set(compiled) == set(tables) and all(compiled.count(t) <= 2 for t in tables), compiled


async def test_refusals_arriving_one_at_a_time_are_written_in_one_transaction(
    store_database: tuple[str, str],
) -> None:
    """A gateway sending one refused request after another: the background writer lingers after a
    batch's first row for the rows right behind it, rather than committing a transaction per denial
    (on the embedded default that was the single SQLite writer's time, and half the denial rate)."""
    database, url = store_database
    engine = create_engine(Settings(database_url=url))
    if database == "sqlite":
        await upgrade(engine)
    commits: list[int] = []
    event.listen(engine.sync_engine, "commit", lambda conn: commits.append(1))
    at = datetime(2026, 1, 1, tzinfo=timezone.utc)
    charge = {"entity": {"type": "key", "id": "k1"}, "window": "1d"}
    writer = BackgroundWriter(
        session_factory(engine), max_rows=10_000, max_age_seconds=86_400, clock=lambda: at, linger_seconds=0.5,
    )
    task = asyncio.create_task(writer.run())
    try:
        for i in range(5):  # each offered after the writer has already taken the ones before it
            writer.offer(StoredRow(f"d{i}", f"r{i}", at, "deny", [], [charge], [], "rev"))
            await asyncio.sleep(0.01)
        await writer.drain()
        assert len(commits) == 1, f"{len(commits)} transactions for 5 refusals"
        async with session_factory(engine)() as session:
            stored = (await execute_core(session, text("SELECT count(*) FROM decision_records"), {})).scalar_one()
        assert stored == 5
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        await engine.dispose()


async def test_on_the_embedded_default_the_store_is_written_by_the_counters_own_thread(
    app_factory: AppFactory, sqlite_url: str
) -> None:
    """SQLite has one write lock, which the counters' thread takes for every decision. The store's rows
    and events go through that thread as well, never through the engine's connection: taking the lock
    there too made the counters' writes wait for it in a storm of refusals (bench/README.md, seventeenth
    round)."""
    app = await app_factory(database_url=sqlite_url, decision_store_max_rows=1)  # a prune after every batch
    assert app.runtime.sqlite_writer is not None
    on_engine: list[str] = []

    @event.listens_for(app.runtime.engine.sync_engine, "before_cursor_execute")
    def _seen(conn: Any, cursor: Any, statement: str, params: Any, context: Any, many: bool) -> None:
        if statement.lstrip().upper().startswith(("INSERT", "DELETE")):
            on_engine.append(statement.split("(", 1)[0].strip())

    secret = await create_key(app.admin, id="k1", budget={"max_budget": "1.00", "duration": "1d"})
    on_engine.clear()  # the admin change's own inserts
    await _deny(app, secret, "r-pruned")
    await app.runtime.background.drain()  # type: ignore[union-attr]  # written (and pruned) alone
    denied = await _deny(app, secret, "r-denied")
    found = (await _decisions(app, entity="key:k1"))["items"]
    assert [item["request_id"] for item in found] == ["r-denied"]  # the cap of one row pruned the other
    assert found[0]["reasons"] == denied["reasons"] and found[0]["charges"] == denied["charges"]
    events = await app.admin.get("/v1/admin/alerts")
    assert events.status_code == 200, events.text
    assert [e["event"] for e in events.json()["items"]] == ["budget_exceeded"]
    assert on_engine == [], on_engine


async def test_rows_written_by_the_counters_thread_are_the_rows_the_session_writes(tmp_path: Path) -> None:
    """The embedded default writes the store through raw SQLite with SQLAlchemy's compiled statements
    and bind processors: what lands in the file is what the session path writes, byte for byte."""
    at = datetime(2026, 1, 2, 3, 4, 5, 6, tzinfo=timezone.utc)
    ref = LedgerRef("key", "k1", "1d", datetime(2026, 1, 2, tzinfo=timezone.utc),
                    datetime(2026, 1, 3, tzinfo=timezone.utc))
    rows = [StoredRow("d1", "r1", at, "deny",
                      [{"code": "budget_exceeded", "entity": {"type": "key", "id": "k1"}, "spent": "1.000000"}],
                      [{"entity": {"type": "key", "id": "k1"}, "window": "1d", "spent": 10**19}], [], "rev"),
            StoredRow("d2", "r2", at + timedelta(seconds=1), "allow", [], [],
                      [{"code": "soft_budget_crossed", "entity": {"type": "tag", "id": "t é"}}], None)]
    drafts = [AlertDraft("budget_exceeded", ref, 10**9, 10**9, None, None, at, {"message": "spent — all"})]
    contents = []
    for way in ("session", "counters' thread"):
        url = f"sqlite+aiosqlite:///{tmp_path / way}.db"
        engine = create_engine(Settings(database_url=url))
        await upgrade(engine)
        counters = SqliteCounters.for_url(url)
        try:
            if way == "session":
                async with session_factory(engine)() as session, session.begin():
                    await write_rows(session, rows)
                    await insert_core(session, drafts)
            else:
                await SqliteBatchWriter(counters.worker).write(rows, drafts)
        finally:
            await counters.close()
            await engine.dispose()
        with sqlite3.connect(tmp_path / f"{way}.db") as db:
            contents.append([
                db.execute("SELECT * FROM decision_records ORDER BY decision_id").fetchall(),
                db.execute("SELECT * FROM decision_record_entities ORDER BY decision_id, entity_type").fetchall(),
                # every column but `id` (a fresh random id per insert)
                db.execute("SELECT * FROM alert_events").fetchall()[0][1:],
            ])
    assert contents[0][0] and contents[0][1] and contents[0][2]
    assert contents[0] == contents[1]


async def test_decision_ids_differ_whatever_seeds_the_global_generator_and_in_a_forked_child() -> None:
    random.seed(7)
    first = new_decision_id()
    random.seed(7)
    assert new_decision_id() != first
    assert len(first) == 32 and int(first, 16) >= 0
    read, write = os.pipe()
    child = os.fork()
    if child == 0:  # the child: one id, then gone
        os.write(write, new_decision_id().encode())
        os._exit(0)
    os.close(write)
    os.waitpid(child, 0)
    child_id = os.read(read, 64).decode()
    os.close(read)
    assert len(child_id) == 32 and child_id != new_decision_id()
