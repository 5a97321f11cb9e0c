"""What a replica remembers of the counters, so that the common path makes one round trip a call.

**Decisions it stored.** A record it receives for one of them needs no read of the counters: the
record's one counters round trip is its settle. A stored decision never changes (first writer
wins, and the counters keep it at least a day), so a remembered copy is the stored one — also after
the counters lost it (flushed, restarted), when it is what the record needs all the more. A record
that reaches another replica reads the counters as before. Bounded in count and age: a record
normally follows its authorize within seconds. Each is kept as JSON bytes beside its ledger ids,
not as the body's tree of dicts: thousands of those trees, each living a few seconds, made the
collector's full passes (every second or so under load) take ~80 ms each, the decision path's
tail latency; bytes and strings are not traced by it.

**Figures its scripts saw.** Every commit and settle answers with the spent and reserved of the
ledgers it touched, read atomically by the script; they are remembered with the time they arrived.
A refusal committed on condition that its figures were unchanged (`unless_changed`) confirms them.
A read's figures are remembered only for the ledgers the request then does not hold (candidates
the policy does not charge: nothing of this replica's changes them). `read(..., max_age=s)`
answers from memory when every ledger was seen within `s` seconds — authorize then decides on
those figures and commits in one round trip. (The ledgers a request holds are remembered from
commits only: a burst of requests on ledgers this replica has not committed on lately all read,
and race in the commit, which is where the race is decided.) That is safe for money because the commit re-checks room atomically on the
current figures (a ledger is never over-reserved) and answers "no_room" with them, and authorize
decides every refusal on current figures; the price is that an allow's `charges` may show figures
up to `s` seconds old (other replicas' reservations since). A reply without figures forgets
what was remembered of its ledgers, so a stale figure is never kept past a change this replica made.

Figures remembered from a read (the candidates a request does not hold) are read again late in their
life (`REREAD_AFTER` of `s`) by one request, while the others keep deciding on them. Without that they
all expired at once, and every request in flight at that moment read the counters (bench/README.md,
thirteenth round): ~4 % of authorizes at 16 connections, one round trip each.
"""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Callable, Iterable, Mapping, Sequence
from datetime import datetime

from ..ledgers import LedgerRef, LedgerSnapshot
from .base import CommitOutcome, Counters, Figures, Hold, SeenFigures, StoredDecision
from .holds import decode_decision, encode_decision

__all__ = ["ReplicaMemory", "MAX_REMEMBERED", "MAX_FIGURES"]

#: Decisions remembered per replica (a decision body is a few kB: tens of MB at most).
MAX_REMEMBERED = 8192
#: Ledgers whose figures are remembered per replica (past it, the old ones are forgotten).
MAX_FIGURES = 65536
#: The part of `max_age` after which one request reads remembered figures again (the others use them).
REREAD_AFTER = 0.8


class ReplicaMemory:
    """The counters port, answering from what this replica saw: its recent decisions, and figures."""

    def __init__(
        self, counters: Counters, *, keep_seconds: float, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self._counters = counters
        self._keep = keep_seconds
        #: Seconds from an arbitrary start (tests hold it still).
        self.clock = clock
        #: request id -> (remembered at, amount, ledger ids, `encode_decision`'s bytes), oldest first:
        #: atomic values only, so the garbage collector stops tracing these entries.
        self._recent: OrderedDict[str, tuple[float, int, tuple[str, ...], bytes]] = OrderedDict()
        #: ledger id -> (seen at, figures).
        self._seen: dict[str, tuple[float, Figures]] = {}
        #: request id -> (read at, figures) of an authorize's read, until its commit.
        self._read_for: dict[str, tuple[float, dict[str, Figures]]] = {}
        #: ledger id -> when a request began reading it again, its remembered figures late in their life.
        self._rereading: dict[str, float] = {}

    def _remember(self, decision: StoredDecision, encoded: bytes = b"") -> None:
        """Keep `decision`; `encoded` is its `encode_decision` bytes when the counters already made them."""
        self._recent[decision.request_id] = (
            self.clock(), decision.amount, tuple(ref.id for ref in decision.ledgers),
            encoded or encode_decision(decision),
        )
        self._recent.move_to_end(decision.request_id)
        while len(self._recent) > MAX_REMEMBERED:
            self._recent.popitem(last=False)

    def _recalled(self, request_id: str) -> tuple[float, int, tuple[str, ...], bytes] | None:
        found = self._recent.get(request_id)
        if found is None:
            return None
        if self.clock() - found[0] > self._keep:
            del self._recent[request_id]
            return None
        return found

    def _recall(self, request_id: str) -> StoredDecision | None:
        found = self._recalled(request_id)
        return None if found is None else decode_decision(found[3])

    def _saw(self, figures: Mapping[str, Figures], at: float | None = None) -> None:
        if len(self._seen) + len(figures) > MAX_FIGURES:
            self._seen.clear()
            self._rereading.clear()
        at = self.clock() if at is None else at
        for ledger_id, seen in figures.items():
            self._seen[ledger_id] = (at, seen)

    def _forget(self, ledger_ids: Iterable[str]) -> None:
        for ledger_id in ledger_ids:
            self._seen.pop(ledger_id, None)

    def _remembered(self, ledgers: Sequence[LedgerRef], max_age: float, *, reread: bool = False) -> SeenFigures | None:
        """Every ledger's figures if all were seen within `max_age` seconds, else None.

        With `reread`, also None — once — when one was seen `REREAD_AFTER` of `max_age` ago and no other
        request has begun reading it again since: the caller reads, and the others use these figures."""
        if max_age <= 0 or not ledgers:
            return None
        now = self.clock()
        oldest, late = now - max_age, now - max_age * REREAD_AFTER
        found = SeenFigures()
        stale: list[str] = []
        for ref in ledgers:
            seen = self._seen.get(ref.id)
            if seen is None or seen[0] < oldest:
                return None
            if reread and seen[0] < late and self._rereading.get(ref.id, oldest) <= seen[0]:
                stale.append(ref.id)
            found[ref.id] = seen[1]
        if stale:
            if len(self._rereading) > MAX_FIGURES:
                self._rereading.clear()  # marks of ledgers long forgotten; at worst a figure is read twice
            self._rereading.update(dict.fromkeys(stale, now))
            return None
        return found

    async def read(self, ledgers: Sequence[LedgerRef], *, max_age: float = 0.0) -> dict[str, Figures]:
        seen = self._remembered(ledgers, max_age)
        return seen if seen is not None else await self._counters.read(ledgers)

    async def prior_decision(self, request_id: str) -> StoredDecision | None:
        return self._recall(request_id) or await self._counters.prior_decision(request_id)

    async def prior_and_read(
        self, request_id: str, ledgers: Sequence[LedgerRef], *, max_age: float = 0.0
    ) -> tuple[StoredDecision | None, dict[str, Figures]]:
        known = self._recall(request_id)
        if known is not None:
            return known, {}
        seen = self._remembered(ledgers, max_age, reread=True)
        if seen is not None:
            return None, seen  # a decision stored by another replica is found by the commit
        prior, found = await self._counters.prior_and_read(request_id, ledgers)
        if prior is None and max_age > 0:
            if len(self._read_for) >= MAX_REMEMBERED:
                self._read_for.clear()  # reads whose commit never came (the request failed)
            self._read_for[request_id] = (self.clock(), found)
        return prior, found

    async def commit_decision(
        self, *, decision: StoredDecision, holds: Sequence[Hold], ttl_seconds: int, now: datetime,
        unless_changed: Mapping[str, Figures] | None = None,
    ) -> CommitOutcome:
        read = self._read_for.pop(decision.request_id, None)
        outcome = await self._counters.commit_decision(
            decision=decision, holds=holds, ttl_seconds=ttl_seconds, now=now, unless_changed=unless_changed
        )
        if read is not None:
            held = {hold.ledger.id for hold in holds}
            self._saw({ledger_id: seen for ledger_id, seen in read[1].items() if ledger_id not in held}, at=read[0])
        if outcome.stored is not None:  # committed (ours) or duplicate (the first one): the stored decision
            self._remember(outcome.stored, outcome.encoded)
        if outcome.figures:
            self._saw(outcome.figures)
        elif outcome.status == "committed":
            self._forget(hold.ledger.id for hold in holds)
        if unless_changed is not None:
            if outcome.status == "committed":  # the commit found them current: as good as a read just now
                self._saw(unless_changed)
            elif outcome.status == "changed":  # a ledger the counters no longer hold is read, and rebuilt, next
                self._forget(ledger_id for ledger_id in unless_changed if ledger_id not in outcome.figures)
        return outcome

    async def settle(self, *, request_id: str, snapshots: Sequence[LedgerSnapshot]) -> dict[str, Figures]:
        figures = await self._counters.settle(request_id=request_id, snapshots=snapshots)
        if figures:
            self._saw(figures)
        # The hold's ledgers may be others than the snapshots' (a record after a policy change):
        # what this replica remembers of the decision's ledgers is forgotten too.
        known = self._recalled(request_id)
        self._forget(
            {snap.ledger_id for snap in snapshots if snap.ledger_id not in figures}
            | {ledger_id for ledger_id in (known[2] if known is not None else ()) if ledger_id not in figures}
        )
        return figures

    async def expire(self, *, now: datetime, limit: int = 500) -> int:
        return await self._counters.expire(now=now, limit=limit)

    async def ping(self) -> None:
        await self._counters.ping()

    async def close(self) -> None:
        await self._counters.close()
