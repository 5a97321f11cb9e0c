"""SQLite counters adapter: the embedded default's reservations, on its own connection and thread.

The same tables and semantics as `SqlCounters` (reservations on the ledger rows themselves, a
`reservations` row per decision, first writer wins, each release exactly once, settled decisions
forgotten after 24 h), so `SqlReconciler`, the admin views and `SqlCounters` read the rows it
writes: JSON columns as the engine's `JSON` type writes them (`exact_json.dumps_text`), timestamps as its
SQLite `DATETIME` does (naive UTC text with microseconds), booleans as 0/1.

What differs is how it gets there: every port call is ONE hop to a dedicated `sqlite3`
connection's thread (`SqliteWorker`), running plain prepared statements synchronously; writes
that queue while a transaction runs commit together in the next one. Admission is checked in
Python on the rows read inside the `BEGIN IMMEDIATE` transaction: SQLite has one writer per
file, so nothing can change them before the commit (other processes included), and the
comparison is on exact Python integers.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Mapping, Sequence
from datetime import datetime, timedelta, timezone
from functools import partial

from .. import exact_json
from ..db import sqlite_file
from ..ledgers import LedgerRef, LedgerSnapshot
from .base import DECISION_KEEP_SECONDS, CommitOutcome, Figures, Hold, StoredDecision
from .holds import decision_json, has_room, refuse_invalid_commit, stored_decision, unique_holds
from .sqlite_worker import SqliteWorker, connect_sqlite

__all__ = ["SqliteCounters"]

_INT64_MAX = 2**63 - 1

_PRIOR = "SELECT amount, decision FROM reservations WHERE request_id = ?"
_INSERT_RESERVATION = (
    "INSERT INTO reservations (request_id, amount, charges, decision, expires_at, released, created_at)"
    " VALUES (?, ?, ?, ?, ?, ?, ?)"
)
_INSERT_LEDGER = (
    "INSERT INTO ledgers (ledger_id, entity_type, entity_id, window, period_start, period_end,"
    " spent, reserved, version, updated_at) VALUES (?, ?, ?, ?, ?, ?, 0, 0, 0, ?)"
    " ON CONFLICT (ledger_id) DO NOTHING"
)
_RESERVE = "UPDATE ledgers SET reserved = reserved + ? WHERE ledger_id IN ({marks})"
_RELEASE = "UPDATE reservations SET released = 1 WHERE request_id = ? AND released = 0 RETURNING amount, charges"
# `+released`: not an index term, so the rows are looked up by request id. With `released = 0` SQLite's
# planner walked every open reservation through ix_reservations_open_expiry on each sweep (~28 ms a second
# at 40,000 open, holding the one writer: the embedded default's p99 under load, bench/README.md).
_RELEASE_DUE = (
    "UPDATE reservations SET released = 1 WHERE +released = 0 AND request_id IN"
    " (SELECT request_id FROM reservations WHERE released = 0 AND expires_at <= ? ORDER BY expires_at LIMIT ?)"
    " RETURNING amount, charges"
)
_UNRESERVE = "UPDATE ledgers SET reserved = CASE WHEN reserved > ? THEN reserved - ? ELSE 0 END WHERE ledger_id = ?"
# By `expires_at`, not `created_at`: a range of ix_reservations_open_expiry. No index leads with
# `created_at`, so SQLite walked every kept decision (a day's worth) on each sweep. A hold expires at or
# after its decision was made, so each decision is still kept at least the idempotency window.
_FORGET = (
    "DELETE FROM reservations WHERE request_id IN"
    " (SELECT request_id FROM reservations WHERE released = 1 AND expires_at < ? LIMIT ?)"
)


def _stamp(moment: datetime) -> str:
    """A UTC instant as SQLAlchemy stores `UtcDateTime` in SQLite: '2026-01-02 03:04:05.000006'."""
    if moment.tzinfo is None:
        raise ValueError("naive datetime given to a UTC column")
    m = moment.astimezone(timezone.utc)
    return f"{m.year:04d}-{m.month:02d}-{m.day:02d} {m.hour:02d}:{m.minute:02d}:{m.second:02d}.{m.microsecond:06d}"


def _marks(count: int) -> str:
    return ", ".join("?" * count)


def _rows(db: sqlite3.Connection, ids: Sequence[str]) -> dict[str, Figures]:
    """The figures of those ledgers that have a row."""
    query = f"SELECT ledger_id, spent, reserved FROM ledgers WHERE ledger_id IN ({_marks(len(ids))})"
    return {row[0]: Figures(row[1], row[2]) for row in db.execute(query, ids)}


def _zero_filled(found: dict[str, Figures], ids: Sequence[str]) -> dict[str, Figures]:
    """Every ledger's figures: those `found`, zero for a ledger with no row yet."""
    return {ledger_id: found.get(ledger_id, Figures(0, 0)) for ledger_id in ids}


def _figures(db: sqlite3.Connection, ids: Sequence[str]) -> dict[str, Figures]:
    return _zero_filled(_rows(db, ids), ids)


def _prior(db: sqlite3.Connection, request_id: str) -> StoredDecision | None:
    row = db.execute(_PRIOR, (request_id,)).fetchone()
    return None if row is None else stored_decision(request_id, row[0], exact_json.loads(row[1]))


def _prior_and_rows(
    db: sqlite3.Connection, request_id: str, ids: Sequence[str]
) -> tuple[StoredDecision | None, dict[str, Figures]]:
    """The decision stored for `request_id` and the figures of those ledgers that have a row, in one
    statement (each statement is a wait for the GIL: sqlite_worker.py)."""
    query = (
        "SELECT NULL, amount, decision FROM reservations WHERE request_id = ?"
        f" UNION ALL SELECT ledger_id, spent, reserved FROM ledgers WHERE ledger_id IN ({_marks(len(ids))})"
    )
    prior: StoredDecision | None = None
    found: dict[str, Figures] = {}
    for ledger_id, first, second in db.execute(query, (request_id, *ids)):
        if ledger_id is None:
            prior = stored_decision(request_id, first, exact_json.loads(second))
        else:
            found[ledger_id] = Figures(first, second)
    return prior, found


def _prior_and_read(
    db: sqlite3.Connection, request_id: str, ids: Sequence[str]
) -> tuple[StoredDecision | None, dict[str, Figures]]:
    """The port's `prior_and_read`: a replay's stored decision alone, else every ledger's figures."""
    prior, found = _prior_and_rows(db, request_id, ids)
    return (prior, {}) if prior is not None else (None, _zero_filled(found, ids))


def _unreserve(db: sqlite3.Connection, totals: dict[str, int]) -> None:
    """Take each ledger's total off its reserved figure, never below zero."""
    db.executemany(_UNRESERVE, [(totals[key], totals[key], key) for key in sorted(totals)])


def _released(rows: Sequence[tuple[int, str]]) -> dict[str, int]:
    totals: dict[str, int] = {}
    for amount, charges in rows:
        for ledger_id in set(exact_json.loads(charges)):
            totals[ledger_id] = totals.get(ledger_id, 0) + int(amount)
    return totals


class _Commit:
    """One `commit_decision`, prepared on the event loop (JSON, timestamps), run on the thread."""

    def __init__(
        self, decision: StoredDecision, holds: list[Hold], expires_at: datetime,
        unless_changed: Mapping[str, Figures] | None = None,
    ) -> None:
        self.decision = decision
        self.holds = holds
        self.ids = [hold.ledger.id for hold in holds]
        self.unless_changed = dict(unless_changed) if unless_changed is not None else None
        self.charges = exact_json.dumps_text(self.ids)
        self.body = exact_json.dumps_text(decision_json(decision))
        self.expires_at = _stamp(expires_at)

    def __call__(self, db: sqlite3.Connection) -> CommitOutcome:
        decision, amount = self.decision, self.decision.amount
        watched = list(self.unless_changed) if self.unless_changed is not None else self.ids
        prior, found = _prior_and_rows(db, decision.request_id, watched)
        if prior is not None:
            return CommitOutcome("duplicate", prior)
        if self.unless_changed is not None:
            current = _zero_filled(found, watched)
            if current != self.unless_changed:
                return CommitOutcome("changed", None, figures=current)
        now = _stamp(datetime.now(timezone.utc))
        after: dict[str, Figures] = {}
        if self.holds:
            seen = {ledger_id: found.get(ledger_id, Figures(0, 0)) for ledger_id in self.ids}
            full = tuple(
                hold.ledger.id
                for hold in self.holds
                if hold.limit is not None
                and not has_room(
                    spent=seen[hold.ledger.id].spent, reserved=seen[hold.ledger.id].reserved,
                    limit=hold.limit, amount=amount,
                )
            )
            if full:
                return CommitOutcome("no_room", None, full, figures=seen)
            after = {key: Figures(spent, reserved + amount) for key, (spent, reserved) in seen.items()}
            if any(figures.reserved > _INT64_MAX for figures in after.values()):
                # Checked here: SQLite's `+` would turn the overflowing sum into an inexact float.
                raise ValueError("a ledger's reserved figure would pass the 64-bit limit")
            missing = [hold.ledger for hold in self.holds if hold.ledger.id not in found]
            if missing:
                db.executemany(_INSERT_LEDGER, [_ledger_row(ref, now) for ref in missing])
            db.execute(_RESERVE.format(marks=_marks(len(self.ids))), (amount, *self.ids))
        db.execute(
            _INSERT_RESERVATION,
            (decision.request_id, amount, self.charges, self.body, self.expires_at, 0 if self.holds else 1, now),
        )
        return CommitOutcome("committed", decision, figures=after)


def _ledger_row(ref: LedgerRef, now: str) -> tuple[object, ...]:
    end = _stamp(ref.period_end) if ref.period_end is not None else None
    return (ref.id, ref.entity_type, ref.entity_id, ref.window, _stamp(ref.period_start), end, now)


def _settle(db: sqlite3.Connection, request_id: str, ids: Sequence[str]) -> dict[str, Figures]:
    # `spent` was written by the ledger store into these very rows: only the hold is left.
    _unreserve(db, _released(db.execute(_RELEASE, (request_id,)).fetchall()))
    return _figures(db, ids) if ids else {}


def _expire(db: sqlite3.Connection, now: datetime, limit: int) -> int:
    released = db.execute(_RELEASE_DUE, (_stamp(now), limit)).fetchall()
    _unreserve(db, _released(released))
    # Settled decisions are forgotten once their idempotency window (24 h) is over, a batch at a time.
    db.execute(_FORGET, (_stamp(now - timedelta(seconds=DECISION_KEEP_SECONDS)), limit))
    return len(released)


class SqliteCounters:
    """The counters port on the embedded SQLite file, through its own connection and thread."""

    def __init__(self, name: str, *, uri: bool = False, max_batch: int = 64) -> None:
        self._worker = SqliteWorker(partial(connect_sqlite, name, uri=uri), max_batch=max_batch)

    @classmethod
    def for_url(cls, url: str, *, max_batch: int = 64) -> SqliteCounters:
        """For a `sqlite+aiosqlite:///…` database URL (the file the engine migrated)."""
        name, uri = sqlite_file(url)
        return cls(name, uri=uri, max_batch=max_batch)

    @property
    def worker(self) -> SqliteWorker:
        return self._worker

    async def read(self, ledgers: Sequence[LedgerRef], *, max_age: float = 0.0) -> dict[str, Figures]:
        ids = sorted({ref.id for ref in ledgers})
        return await self._worker.read(partial(_figures, ids=ids)) if ids else {}

    async def prior_decision(self, request_id: str) -> StoredDecision | None:
        return await self._worker.read(partial(_prior, request_id=request_id))

    async def prior_and_read(
        self, request_id: str, ledgers: Sequence[LedgerRef], *, max_age: float = 0.0
    ) -> tuple[StoredDecision | None, dict[str, Figures]]:
        ids = sorted({ref.id for ref in ledgers})
        return await self._worker.read(partial(_prior_and_read, request_id=request_id, ids=ids))

    async def commit_decision(
        self, *, decision: StoredDecision, holds: Sequence[Hold], ttl_seconds: int, now: datetime,
        unless_changed: Mapping[str, Figures] | None = None,
    ) -> CommitOutcome:
        refuse_invalid_commit(decision, holds, unless_changed)
        job = _Commit(decision, unique_holds(holds), now + timedelta(seconds=ttl_seconds), unless_changed)
        return await self._worker.write(job)

    async def settle(self, *, request_id: str, snapshots: Sequence[LedgerSnapshot]) -> dict[str, Figures]:
        ids = sorted({snapshot.ledger_id for snapshot in snapshots})
        return await self._worker.write(partial(_settle, request_id=request_id, ids=ids))

    async def expire(self, *, now: datetime, limit: int = 500) -> int:
        return await self._worker.write(partial(_expire, now=now, limit=limit))

    async def ping(self) -> None:
        await self._worker.read(lambda db: db.execute("SELECT 1").fetchone())

    async def close(self) -> None:
        await self._worker.close()
