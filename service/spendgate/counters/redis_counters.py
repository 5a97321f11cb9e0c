"""Redis counters adapter: hot `spent`/`reserved` per ledger shared by every replica.

Every write is one Lua script (`lua/*.lua`, package data, registered once per adapter), so
replicas never read-modify-write. A ledger hash is a cache of the ledger store: when it is
missing (never seeded, expired, evicted, flushed) it is rebuilt from `load_snapshots` before
it is trusted, and `spent` is only ever replaced by a newer snapshot — never incremented —
so rebuilding can never count a cost twice. Each hash creation gets a fresh epoch; a hold
remembers the epochs it reserved on and releases only on the same incarnation, so a rebuilt
hash never goes negative.

Money crosses into Lua as decimal strings; the scripts compare them exactly (see
`lua/_lib.lua`) and add with HINCRBY, exact up to Redis' signed 64-bit integers (2^63-1
nanos ≈ 9.2 billion USD), the same bound as the ledger's BIGINT columns.

Needs one Redis (standalone or Sentinel), not Cluster: release scripts reach keys named by
a hold. Use `maxmemory-policy noeviction`: an evicted decision key would let a repeated
authorize reserve again (evicted ledger hashes are harmless — they are rebuilt).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence
from datetime import datetime
from importlib import resources
from types import TracebackType
from typing import Any

import redis.asyncio as aioredis
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from ..errors import Unavailable
from ..ledgers import LedgerRef, LedgerSnapshot
from .base import DECISION_KEEP_SECONDS, CommitOutcome, Figures, Hold, SnapshotLoader, StoredDecision
from .holds import decode_decision, encode_decision, refuse_invalid_commit, unique_holds

__all__ = ["RedisCounters"]

#: A windowed ledger's hash outlives its period by this much (late records still find it).
LEDGER_GRACE_SECONDS = 2 * 24 * 3600
#: Lifetime of a hash created by `settle`, which knows no period; the next commit corrects it.
SETTLED_HASH_SECONDS = 2 * 24 * 3600
#: How often commit rebuilds missing ledger hashes before giving up.
REBUILD_ATTEMPTS = 3


def _lua(name: str) -> str:
    return resources.files("spendgate.counters").joinpath("lua", name).read_text(encoding="utf-8")


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def _ledger_ttl(ref: LedgerRef, now: float) -> str:
    """Seconds a ledger hash should live ('' for a ledger that never resets); `now`: `time.time()`."""
    if ref.period_end is None:
        return ""
    remaining = int(ref.period_end.timestamp() - now) + LEDGER_GRACE_SECONDS
    return str(max(remaining, 3600))


def _figures(holds: Sequence[Hold], flat: Sequence[bytes | str]) -> dict[str, Figures]:
    """Figures of the held ledgers from a script's flat reply (spent, reserved per hold, in order; `int`
    reads the reply's bytes as they are)."""
    return {hold.ledger.id: Figures(int(flat[2 * i]), int(flat[2 * i + 1])) for i, hold in enumerate(holds)}


class _RedisErrors:
    """`with _redis_errors:` — a lost or refused Redis connection is 503 `unavailable` naming Redis.

    A plain class, entered around every script call: a generator-based context manager per call (and
    an async one, for nothing asynchronous) cost more than the call's own Python."""

    def __enter__(self) -> None:
        return None

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if isinstance(exc, (RedisConnectionError, RedisTimeoutError, ConnectionError, TimeoutError)):
            raise Unavailable("redis", type(exc).__name__) from exc


_redis_errors = _RedisErrors()


class RedisCounters:
    """The counters port on Redis; `close()` closes the client it was given."""

    def __init__(
        self,
        client: aioredis.Redis,
        load_snapshots: SnapshotLoader,
        key_prefix: str = "sg",
        on_rebuild: Callable[[int], None] | None = None,
    ) -> None:
        self._client = client
        self._load_snapshots = load_snapshots
        #: Told how many ledger hashes each rebuild seeds (the service counts them as a metric).
        self._on_rebuild = on_rebuild
        self._prefix = key_prefix
        lib = _lua("_lib.lua")
        self._seed = client.register_script(lib + _lua("seed.lua"))
        self._commit = client.register_script(lib + _lua("commit.lua"))
        self._commit_denial = client.register_script(_lua("commit_denial.lua"))
        self._settle = client.register_script(lib + _lua("settle.lua"))
        self._expire = client.register_script(lib + _lua("expire.lua"))

    # --- key names --------------------------------------------------------------------

    def _ledger_key(self, ledger_id: str) -> str:
        return f"{self._prefix}:l:{ledger_id}"

    def _decision_key(self, request_id: str) -> str:
        return f"{self._prefix}:d:{request_id}"

    def _hold_key(self, request_id: str) -> str:
        return f"{self._prefix}:h:{request_id}"

    @property
    def _expiry_key(self) -> str:
        return f"{self._prefix}:exp"

    @property
    def _epoch_key(self) -> str:
        return f"{self._prefix}:epoch"

    # --- the port ---------------------------------------------------------------------

    async def read(self, ledgers: Sequence[LedgerRef], *, max_age: float = 0.0) -> dict[str, Figures]:
        return (await self._read(None, ledgers))[1]

    async def prior_and_read(
        self, request_id: str, ledgers: Sequence[LedgerRef], *, max_age: float = 0.0
    ) -> tuple[StoredDecision | None, dict[str, Figures]]:
        return await self._read(request_id, ledgers)

    async def _read(
        self, request_id: str | None, ledgers: Sequence[LedgerRef]
    ) -> tuple[StoredDecision | None, dict[str, Figures]]:
        """One pipelined round trip: the prior decision (when asked) and every ledger's figures.
        Not MULTI/EXEC: the figures are advisory — the commit script re-checks them atomically."""
        refs = list({ref.id: ref for ref in ledgers}.values())
        if not refs and request_id is None:
            return None, {}
        with _redis_errors:
            pipe = self._client.pipeline(transaction=False)
            if request_id is not None:
                pipe.get(self._decision_key(request_id))
            for ref in refs:
                pipe.hmget(self._ledger_key(ref.id), "spent", "reserved")
            rows = await pipe.execute()
        if request_id is not None:
            raw, rows = rows[0], rows[1:]
            if raw is not None:
                return decode_decision(raw), {}
        figures: dict[str, Figures] = {}
        missing: list[LedgerRef] = []
        for ref, (spent, reserved) in zip(refs, rows):
            if spent is None:
                missing.append(ref)
            else:
                figures[ref.id] = Figures(int(spent), int(reserved or b"0"))
        if missing:
            figures.update(await self._rebuild(missing))
        return None, figures

    async def prior_decision(self, request_id: str) -> StoredDecision | None:
        with _redis_errors:
            raw = await self._client.get(self._decision_key(request_id))
        return None if raw is None else decode_decision(raw)

    async def commit_decision(
        self,
        *,
        decision: StoredDecision,
        holds: Sequence[Hold],
        ttl_seconds: int,
        now: datetime,
        unless_changed: Mapping[str, Figures] | None = None,
    ) -> CommitOutcome:
        refuse_invalid_commit(decision, holds, unless_changed)
        encoded = encode_decision(decision)
        keep = str(max(DECISION_KEEP_SECONDS, ttl_seconds + 3600))
        if unless_changed is not None:
            return await self._commit_unless_changed(decision, encoded, keep, unless_changed)
        unique = unique_holds(holds)
        keys = [self._decision_key(decision.request_id), self._hold_key(decision.request_id), self._expiry_key]
        keys += [self._ledger_key(hold.ledger.id) for hold in unique]
        args: list[str | bytes] = [
            encoded,
            keep,
            str(decision.amount),
            str(int(now.timestamp() * 1000) + ttl_seconds * 1000),
            decision.request_id,
        ]
        wall = time.time()
        for hold in unique:
            args += [hold.ledger.id, "" if hold.limit is None else str(hold.limit), _ledger_ttl(hold.ledger, wall)]
        refs = {hold.ledger.id: hold.ledger for hold in unique}
        for _ in range(REBUILD_ATTEMPTS):
            with _redis_errors:
                reply = await self._commit(keys=keys, args=args)
            status, rest = _text(reply[0]), reply[1:]
            if status == "committed":  # the figures each held ledger had before its reservation
                seen = _figures(unique, rest)
                after = {key: Figures(f.spent, f.reserved + decision.amount) for key, f in seen.items()}
                return CommitOutcome("committed", decision, figures=after, encoded=encoded)
            if status == "duplicate":
                return CommitOutcome("duplicate", decode_decision(rest[0]))
            if status == "no_room":  # the ids without room, then every held ledger's figures
                count = int(rest[0])
                full = tuple(_text(ledger_id) for ledger_id in rest[1:1 + count])
                return CommitOutcome("no_room", None, full, _figures(unique, rest[1 + count:]))
            await self._rebuild([refs[_text(ledger_id)] for ledger_id in rest])
        raise Unavailable("redis", "ledger counters disappear as soon as they are rebuilt; check maxmemory-policy")

    async def _commit_unless_changed(
        self, decision: StoredDecision, encoded: bytes, keep: str, unless_changed: Mapping[str, Figures]
    ) -> CommitOutcome:
        """A denial stored only while its ledgers' figures are `unless_changed` (`lua/commit_denial.lua`)."""
        ids = list(unless_changed)
        keys = [self._decision_key(decision.request_id)] + [self._ledger_key(ledger_id) for ledger_id in ids]
        args: list[str | bytes] = [encoded, keep]
        for ledger_id in ids:
            args += [str(unless_changed[ledger_id].spent), str(unless_changed[ledger_id].reserved)]
        with _redis_errors:
            reply = await self._commit_denial(keys=keys, args=args)
        status, rest = _text(reply[0]), reply[1:]
        if status == "committed":
            return CommitOutcome("committed", decision, encoded=encoded)
        if status == "duplicate":
            return CommitOutcome("duplicate", decode_decision(rest[0]))
        found = {  # a hash that is gone is left out: a read rebuilds it
            ledger_id: Figures(int(rest[2 * i]), int(rest[2 * i + 1]))
            for i, ledger_id in enumerate(ids)
            if rest[2 * i] not in (b"", "")
        }
        return CommitOutcome("changed", None, figures=found)

    async def settle(self, *, request_id: str, snapshots: Sequence[LedgerSnapshot]) -> dict[str, Figures]:
        newest: dict[str, LedgerSnapshot] = {}
        for snap in snapshots:
            if snap.ledger_id not in newest or snap.version > newest[snap.ledger_id].version:
                newest[snap.ledger_id] = snap
        keys = [self._epoch_key] + [self._ledger_key(ledger_id) for ledger_id in newest]
        args = [self._prefix, request_id, str(SETTLED_HASH_SECONDS)]
        for snap in newest.values():
            args += [str(snap.spent), str(snap.version)]
        with _redis_errors:
            flat = await self._settle(keys=keys, args=args)
        return {ledger_id: Figures(int(flat[2 * i]), int(flat[2 * i + 1])) for i, ledger_id in enumerate(newest)}

    async def expire(self, *, now: datetime, limit: int = 500) -> int:
        with _redis_errors:
            released = await self._expire(
                keys=[self._expiry_key], args=[self._prefix, str(int(now.timestamp() * 1000)), str(limit)]
            )
        return int(released)

    async def ping(self) -> None:
        with _redis_errors:
            await self._client.ping()

    async def close(self) -> None:
        await self._client.aclose()

    # --- rebuilding -------------------------------------------------------------------

    async def _rebuild(self, refs: Sequence[LedgerRef]) -> dict[str, Figures]:
        """Seed missing ledger hashes from the ledger store (absent ledgers seed as 0, version 0)."""
        if self._on_rebuild is not None:
            self._on_rebuild(len(refs))
        snapshots = await self._load_snapshots([ref.id for ref in refs])
        args: list[str] = []
        wall = time.time()
        for ref in refs:
            snap = snapshots.get(ref.id)
            args += [str(snap.spent if snap else 0), str(snap.version if snap else 0), _ledger_ttl(ref, wall)]
        with _redis_errors:
            flat = await self._seed(keys=[self._epoch_key] + [self._ledger_key(ref.id) for ref in refs], args=args)
        return {ref.id: Figures(int(flat[2 * i]), int(flat[2 * i + 1])) for i, ref in enumerate(refs)}
