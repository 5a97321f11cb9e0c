"""The counters port: hot `spent`/`reserved` figures per ledger and the reservations on them.

Two adapters implement it and pass one contract suite (tests/test_counters_contract.py):
`RedisCounters` (atomic Lua, for several replicas) and `SqlCounters` (conditional updates on
the ledger table itself, for the embedded default and Postgres-only deployments).

The authoritative `spent` lives in the ledger store; a counter's `spent` is a cache of it,
replaced only by a newer snapshot (higher version), so a counter can be rebuilt at any time
and can never count a cost twice. `reserved` exists only here.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Literal, NamedTuple, Protocol

from ..ledgers import LedgerRef, LedgerSnapshot

__all__ = [
    "DECISION_KEEP_SECONDS",
    "Counters",
    "Figures",
    "SeenFigures",
    "Hold",
    "CommitOutcome",
    "StoredDecision",
    "SnapshotLoader",
]

#: Decisions are kept at least this long, so a repeated authorize returns the first decision.
DECISION_KEEP_SECONDS = 24 * 3600

#: Loads the authoritative spent/version of ledgers (missing ones are absent from the result).
SnapshotLoader = Callable[[Sequence[str]], Awaitable[dict[str, LedgerSnapshot]]]


class Figures(NamedTuple):
    spent: int
    reserved: int


class SeenFigures(dict[str, Figures]):
    """Figures answered from what the replica saw earlier (`max_age` > 0), not read just now."""


class Hold(NamedTuple):
    """Reserve `amount` on `ledger` only if it has room under `limit` (None: no limit)."""

    ledger: LedgerRef
    limit: int | None


class StoredDecision(NamedTuple):
    """The first decision taken for a request id, as authorize returned it."""

    request_id: str
    body: dict[str, Any]
    #: Ledgers the request charges (empty for a denial).
    ledgers: tuple[LedgerRef, ...]
    amount: int


@dataclass(frozen=True, slots=True)
class CommitOutcome:
    status: Literal["committed", "duplicate", "no_room", "changed"]
    #: For "duplicate": the decision stored first. For "committed": the one just stored.
    stored: StoredDecision | None
    #: For "no_room": the ids of the ledgers without room.
    full: tuple[str, ...] = ()
    #: What the commit saw of the held ledgers, atomically: after the reservation ("committed"),
    #: as they stand ("no_room"); for "changed", the current figures of the ledgers it was to find
    #: unchanged (a ledger the counters no longer hold is left out). Empty when the adapter does not
    #: report them (not compared: what an outcome says is its status and decision).
    figures: Mapping[str, Figures] = field(default_factory=dict, compare=False)
    #: The stored decision as `holds.encode_decision` wrote it, when the adapter had to (Redis does):
    #: ReplicaMemory keeps these bytes rather than encoding the decision again. Empty otherwise.
    encoded: bytes = field(default=b"", compare=False)


class Counters(Protocol):
    async def read(self, ledgers: Sequence[LedgerRef], *, max_age: float = 0.0) -> dict[str, Figures]:
        """Figures of every given ledger, keyed by ledger id (a ledger never charged reads 0/0).

        `max_age` > 0 allows figures seen up to that many seconds ago (counters/replica_memory.py);
        an adapter reading its store always answers with current ones."""
        ...

    async def prior_decision(self, request_id: str) -> StoredDecision | None:
        """The decision stored for this request id by an earlier authorize, if any."""
        ...

    async def prior_and_read(
        self, request_id: str, ledgers: Sequence[LedgerRef], *, max_age: float = 0.0
    ) -> tuple[StoredDecision | None, dict[str, Figures]]:
        """`prior_decision` and `read` together (one round trip where the store allows); with
        a prior decision the figures may be empty — the caller returns that decision. With
        `max_age` > 0 the prior decision may be left to `commit_decision` to find (it returns a
        stored decision as "duplicate") when the figures are answered without a round trip."""
        ...

    async def commit_decision(
        self,
        *,
        decision: StoredDecision,
        holds: Sequence[Hold],
        ttl_seconds: int,
        now: datetime,
        unless_changed: Mapping[str, Figures] | None = None,
    ) -> CommitOutcome:
        """Store the decision for its request id — first writer wins — and reserve atomically.

        With holds (an allow), either every held ledger has room for the amount (`spent +
        reserved + amount <= limit`; with amount 0, `spent + reserved < limit`) and all are
        reserved until `now + ttl_seconds`, or nothing is written and the outcome is
        "no_room". Without holds (a denial) the decision is only stored.

        `unless_changed` (a denial only: ledger id -> the figures it was decided on): the denial is
        stored only if every one of those ledgers still has those figures; otherwise nothing is
        written and the outcome is "changed" with the figures found — so a refusal decided on
        remembered figures is checked against current ones in the same round trip as its commit.
        """
        ...

    async def settle(self, *, request_id: str, snapshots: Sequence[LedgerSnapshot]) -> dict[str, Figures]:
        """After a record committed: release the request's reservation (if still held) and
        bring each ledger's `spent` up to the committed snapshot. Idempotent. Returns the
        snapshot ledgers' figures after it, where the adapter reports them (else empty)."""
        ...

    async def expire(self, *, now: datetime, limit: int = 500) -> int:
        """Release reservations whose time ran out, each exactly once; returns how many."""
        ...

    async def ping(self) -> None:
        """Raise `Unavailable` when the backing store cannot be reached."""
        ...

    async def close(self) -> None: ...
