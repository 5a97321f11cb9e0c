"""The SQL counters' expiry sweep reads what is due, not everything the table keeps.

`SqlCounters.expire` runs every second on every replica (PostgreSQL without Redis; SQLite when it
serves as the tests' reference writer). The table holds every open reservation and a day of settled
decisions (the idempotency window), so a statement that walks either costs more every second as
traffic grows. Each test puts 20,000 of both beside 50 due holds and reads the work each of the
sweep's statements does from the database itself: PostgreSQL's `EXPLAIN ANALYZE` row counts and
SQLite's VM step counter — with the database's own planner, on the statements `expire` sends.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Iterator
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

from sqlalchemy import text
from sqlalchemy.dialects import sqlite
from sqlalchemy.ext.asyncio import create_async_engine

from spendgate.counters.sql_counters import _forget, _release_due
from spendgate.migrate import upgrade

DUE, OPEN, KEPT = 50, 20_000, 20_000
NOW = datetime(2026, 1, 1, 12, tzinfo=timezone.utc)
#: Decisions settled an hour ago: inside the day they are kept, so the sweep forgets none of them.
CUTOFF = NOW - timedelta(days=1)


def _rows(kind: str, count: int) -> list[dict[str, Any]]:
    expires, released = {
        "due": (NOW - timedelta(minutes=1), False),
        "open": (NOW + timedelta(hours=12), False),
        "kept": (NOW - timedelta(hours=1), True),
    }[kind]
    return [
        {"id": f"{kind}-{i}", "expires": expires, "released": released, "created": NOW - timedelta(hours=2)}
        for i in range(count)
    ]


_INSERT = (
    "INSERT INTO reservations (request_id, amount, charges, decision, expires_at, released, created_at)"
    " VALUES (:id, 5, '[\"key:k1\"]', '{}', :expires, :released, :created)"
)


def _plan_rows(node: dict[str, Any]) -> Iterator[int]:
    """Rows each node of a PostgreSQL plan produced or threw away, over all its loops."""
    loops = node.get("Actual Loops", 1)
    yield (node.get("Actual Rows", 0) + node.get("Rows Removed by Filter", 0)) * loops
    for child in node.get("Plans", []):
        yield from _plan_rows(child)


async def test_the_sweep_reads_only_due_rows_on_postgresql(clean_pg: str) -> None:
    engine = create_async_engine(clean_pg)
    try:
        async with engine.begin() as conn:
            await conn.execute(text(_INSERT), _rows("open", OPEN) + _rows("kept", KEPT) + _rows("due", DUE))
            await conn.execute(text("ANALYZE reservations"))  # as autovacuum would have, in service
        async with engine.connect() as conn:
            transaction = await conn.begin()
            read: dict[str, int] = {}

            driver = (await conn.get_raw_connection()).driver_connection  # asyncpg, inside our transaction

            async def explain(name: str, statement: Any) -> None:
                compiled = statement.compile(dialect=conn.dialect, compile_kwargs={"render_postcompile": True})
                params = [compiled.params[name] for name in compiled.positiontup]
                document = await driver.fetchval(f"EXPLAIN (ANALYZE, FORMAT JSON) {compiled}", *params)
                document = json.loads(document) if isinstance(document, str) else document  # codec or text
                read[name] = sum(_plan_rows(document[0]["Plan"]))

            count = "SELECT count(*) FROM reservations WHERE released"
            await explain("release", _release_due(NOW, 500, "postgresql"))  # EXPLAIN ANALYZE runs it
            assert await driver.fetchval(count) == KEPT + DUE  # it released the due holds, and only those
            await explain("forget", _forget(CUTOFF, 500, "postgresql"))
            assert await driver.fetchval(count) == KEPT + DUE  # none was old enough to forget
            await transaction.rollback()
        # The old shapes read every open reservation (a hash join) or every kept decision (a scan).
        assert all(rows <= 10 * DUE for rows in read.values()), read
    finally:
        await engine.dispose()


def _sqlite_steps(path: Path, *, open_reservations: int, kept_decisions: int) -> dict[str, int]:
    """SQLite VM instructions (in thousands) of each sweep statement, beside DUE due holds."""
    with sqlite3.connect(path) as db:
        db.execute("DELETE FROM reservations")
        rows = _rows("open", open_reservations) + _rows("kept", kept_decisions) + _rows("due", DUE)
        stamp = "%Y-%m-%d %H:%M:%S.%f"  # how SQLAlchemy stores a DateTime in SQLite
        db.executemany(
            _INSERT.replace(":id", "?").replace(":expires", "?").replace(":released", "?").replace(":created", "?"),
            [(r["id"], r["expires"].strftime(stamp), int(r["released"]), r["created"].strftime(stamp)) for r in rows],
        )
        db.commit()
        steps = {"now": 0}

        def count() -> int:
            steps["now"] += 1
            return 0

        def run(statement: Any) -> list[Any]:
            sql = str(statement.compile(dialect=sqlite.dialect(), compile_kwargs={"literal_binds": True}))
            db.set_progress_handler(count, 1000)
            steps["now"] = 0
            try:
                return db.execute(sql).fetchall()
            finally:
                db.set_progress_handler(None, 0)

        read = {}
        assert len(run(_release_due(NOW, 500, "sqlite"))) == DUE
        read["release"] = steps["now"]
        run(_forget(CUTOFF, 500, "sqlite"))
        read["forget"] = steps["now"]
        assert db.execute("SELECT count(*) FROM reservations").fetchone()[0] == len(rows)  # none was old enough
        db.rollback()
        return read


async def test_the_sweep_reads_only_due_rows_on_sqlite(tmp_path: Path) -> None:
    path = tmp_path / "sweep.db"
    engine = create_async_engine(f"sqlite+aiosqlite:///{path}")
    await upgrade(engine)
    await engine.dispose()
    few = _sqlite_steps(path, open_reservations=200, kept_decisions=200)
    many = _sqlite_steps(path, open_reservations=OPEN, kept_decisions=KEPT)
    assert all(many[name] <= few[name] + 2 for name in few), f"{many} thousand VM steps at 20,000 against {few} at 200"
