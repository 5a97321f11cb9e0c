"""The recent-decisions store: denials and alerting allows, queryable per entity, bounded.

Rows come from authorize answers (never from the request: no key secret or hash can reach
them). The store keeps at most SPENDGATE_DECISION_STORE_MAX_ROWS rows, none older than
SPENDGATE_DECISION_STORE_MAX_AGE_SECONDS: `prune` removes the rest (the writer runs it once
a tenth of the cap has been written since the last time, so the table may briefly hold 10% more).
"""

from __future__ import annotations

import os
import random
from collections.abc import Mapping, Sequence
from datetime import datetime, timedelta
from typing import Any, NamedTuple

from sqlalchemy import Table, and_, delete, or_, select
from sqlalchemy.sql.dml import UpdateBase
from sqlmodel.ext.asyncio.session import AsyncSession

from ..alerts.payload import iso
from ..db import execute_core, execute_many
from ..tables import DecisionRecord, DecisionRecordEntity
from .cursor import decode_cursor, encode_cursor

__all__ = [
    "StoredRow", "new_decision_id", "row_from_answer", "write_rows", "entity_rows", "pruning", "prune", "recent",
    "RECORDS", "ENTITIES",
]

RECORDS: Table = DecisionRecord.__table__  # type: ignore[attr-defined]
ENTITIES: Table = DecisionRecordEntity.__table__  # type: ignore[attr-defined]


class StoredRow(NamedTuple):
    decision_id: str
    request_id: str
    at: datetime
    decision: str
    reasons: list[dict[str, Any]]
    charges: list[dict[str, Any]]
    alerts: list[dict[str, Any]]
    policy_revision: str | None

    def entities(self) -> list[tuple[str, str]]:
        """Every entity the decision names (charges, reasons, alerts), once each."""
        found: dict[tuple[str, str], None] = {}
        for item in (*self.charges, *self.reasons, *self.alerts):
            entity = item.get("entity")
            if isinstance(entity, Mapping) and entity.get("type") and entity.get("id") is not None:
                found[(str(entity["type"]), str(entity["id"]))] = None
        return list(found)


#: The decision ids' own generator: seeded from the OS, again in a forked child, and untouched by a
#: `random.seed()` anywhere else in the process.
_IDS = random.Random()
os.register_at_fork(after_in_child=_IDS.seed)


def new_decision_id() -> str:
    """An opaque decision id, the same in the store and the decision log: 128 random bits as hex.

    Unique, not secret, so no system call per decision: `uuid.uuid4()` and `secrets` each read the OS's
    randomness, 2 % of a replica's authorize time (py-spy, bench/README.md, twelfth round)."""
    return f"{_IDS.getrandbits(128):032x}"


def row_from_answer(body: Mapping[str, Any], *, at: datetime, decision_id: str | None = None) -> StoredRow | None:
    """What an authorize answer leaves in the store: a denial, or an allow that carried alerts."""
    if body.get("decision") != "deny" and not body.get("alerts"):
        return None
    return StoredRow(
        decision_id or new_decision_id(), str(body["request_id"]), at, str(body["decision"]),
        list(body.get("reasons") or ()), list(body.get("charges") or ()), list(body.get("alerts") or ()),
        body.get("policy_revision"),
    )


async def write_rows(session: AsyncSession, rows: Sequence[StoredRow]) -> None:
    """Insert rows and their entity index entries in the session's transaction.

    Each table's rows go as one executemany (`db.execute_many`). An `insert().values([...])` of the
    batch was a new statement for every batch size: in a storm of denials, compiling them took a fifth
    of the replica's event loop (bench/README.md, seventh round)."""
    if not rows:
        return
    await execute_many(session, RECORDS.insert(), [row._asdict() for row in rows])
    await execute_many(session, ENTITIES.insert(), entity_rows(rows))


def entity_rows(rows: Sequence[StoredRow]) -> list[dict[str, Any]]:
    """The per-entity index entries of `rows` (one per entity each names)."""
    return [
        {"decision_id": row.decision_id, "entity_type": kind, "entity_id": ident, "at": row.at}
        for row in rows
        for kind, ident in row.entities()
    ]


def pruning(*, max_rows: int, max_age_seconds: float, now: datetime) -> UpdateBase:
    """Deletes the rows older than the age cap and beyond the newest `max_rows`, returning their ids."""
    oldest = now - timedelta(seconds=max_age_seconds)
    beyond = (
        select(RECORDS.c.decision_id)
        .order_by(RECORDS.c.at.desc(), RECORDS.c.decision_id.desc())
        .offset(max_rows)
    )
    return (
        delete(RECORDS)
        .where(or_(RECORDS.c.at < oldest, RECORDS.c.decision_id.in_(beyond.scalar_subquery())))
        .returning(RECORDS.c.decision_id)
    )


async def prune(session: AsyncSession, *, max_rows: int, max_age_seconds: float, now: datetime) -> int:
    """Drop rows older than the age cap and beyond the newest `max_rows` (and their index entries);
    returns how many went."""
    statement = pruning(max_rows=max_rows, max_age_seconds=max_age_seconds, now=now)
    gone = [row[0] for row in (await execute_core(session, statement)).all()]
    for start in range(0, len(gone), 500):
        await execute_core(session, delete(ENTITIES).where(ENTITIES.c.decision_id.in_(gone[start:start + 500])))
    return len(gone)


def _public(row: Mapping[str, Any]) -> dict[str, Any]:
    return {
        "decision_id": row["decision_id"],
        "request_id": row["request_id"],
        "at": iso(row["at"]),
        "decision": row["decision"],
        "reasons": row["reasons"],
        "charges": row["charges"],
        "alerts": row["alerts"],
        "policy_revision": row["policy_revision"],
    }


async def recent(
    session: AsyncSession, *, entity: tuple[str, str] | None, decision: str | None, limit: int, cursor: str | None
) -> dict[str, Any]:
    """Newest first: `{"items": [...], "next_cursor"}` (API.md "Recent decisions")."""
    r = RECORDS.c
    query = select(RECORDS)
    if entity is not None:
        e = ENTITIES.c
        query = query.join(ENTITIES, e.decision_id == r.decision_id).where(
            e.entity_type == entity[0], e.entity_id == entity[1]
        )
    if decision is not None:
        query = query.where(r.decision == decision)
    if cursor is not None:
        at, last = decode_cursor(cursor)
        query = query.where(or_(r.at < at, and_(r.at == at, r.decision_id < last)))
    rows = [
        dict(row._mapping)
        for row in (await execute_core(session, query.order_by(r.at.desc(), r.decision_id.desc()).limit(limit + 1))).all()
    ]
    more = len(rows) > limit
    rows = rows[:limit]
    return {
        "items": [_public(row) for row in rows],
        "next_cursor": encode_cursor(rows[-1]["at"], rows[-1]["decision_id"]) if more and rows else None,
    }
