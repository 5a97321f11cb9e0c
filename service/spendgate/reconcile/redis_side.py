"""Reconcile the Redis counters with the ledger store and the open holds.

A first pass reads everything without locking anything — every ledger hash (SCAN), every
open hold (the expiry zset), then the ledger rows of those ledgers — and keeps the ledgers
that look wrong. Each suspect is then checked again, or repaired, by one Lua script
(`counters/lua/reconcile.lua`) that re-reads the hash and the holds atomically, so live traffic
can neither fake a drift nor be overwritten by a repair: `spent` is only replaced by a
snapshot that is not older than the counter, `reserved` is recomputed from the holds inside
the same script.

Reading the counter before the ledger makes "ahead" (counter newer than the ledger) a real
anomaly; "behind" is only reported when the counter is still behind the ledger as it was
read in the first pass, i.e. it failed to catch up for longer than a record takes to settle.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from datetime import datetime
from importlib import resources
from typing import Any, NamedTuple

import redis.asyncio as aioredis
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError
from sqlalchemy import Table, select

from ..counters.redis_counters import LEDGER_GRACE_SECONDS, SETTLED_HASH_SECONDS
from ..db import SessionFactory, execute_core, wrap_database_errors
from ..errors import Unavailable
from ..tables import Ledger
from .report import LedgerDrift, ReconcileReport

__all__ = ["RedisReconciler"]

_PAGE = 500
_ledgers: Table = Ledger.__table__  # type: ignore[attr-defined]


class _Counter(NamedTuple):
    spent: int | None
    reserved: int | None
    version: int | None
    epoch: str | None


class _Row(NamedTuple):
    spent: int
    version: int
    period_end: datetime | None


_NO_ROW = _Row(0, 0, None)


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def _int(value: Any) -> int | None:
    return None if value is None or _text(value) == "" else int(_text(value))


def _script_source() -> str:
    lua = resources.files("spendgate.counters").joinpath("lua")
    return lua.joinpath("_lib.lua").read_text(encoding="utf-8") + lua.joinpath("reconcile.lua").read_text(
        encoding="utf-8"
    )


@asynccontextmanager
async def _redis_errors() -> AsyncIterator[None]:
    try:
        yield
    except (RedisConnectionError, RedisTimeoutError, ConnectionError, TimeoutError) as exc:
        raise Unavailable("redis", type(exc).__name__) from exc


def _pages(items: Sequence[str], size: int = _PAGE) -> list[Sequence[str]]:
    return [items[i : i + size] for i in range(0, len(items), size)]


class RedisReconciler:
    """Compares (and with `fix`, repairs) every live ledger counter in Redis."""

    def __init__(
        self, client: aioredis.Redis, sessions: SessionFactory, *, key_prefix: str = "sg", grace_seconds: float = 0.5,
        batch: int = 100,
    ) -> None:
        self._client = client
        self._sessions = sessions
        self._prefix = key_prefix
        self._grace = grace_seconds
        self._batch = batch
        self._script = client.register_script(_script_source())

    async def run(self, *, fix: bool, fix_ahead: bool = False) -> ReconcileReport:
        """One pass over every counter. `fix_ahead` also lowers a counter that is newer than the
        ledger (only after a restored or hand-edited ledger; the periodic run leaves that to a human)."""
        async with _redis_errors():
            holds, open_holds = await self._open_holds()
            counters = await self._counters()
        ids = sorted(set(counters) | set(holds))
        rows = await self._rows(ids)
        suspects = [lid for lid in ids if self._suspect(counters.get(lid), rows.get(lid, _NO_ROW), holds.get(lid, []))]
        if suspects and self._grace > 0 and any(
            (counters[lid].version or 0) < rows.get(lid, _NO_ROW).version for lid in suspects if lid in counters
        ):
            await asyncio.sleep(self._grace)  # let in-flight records settle before calling a counter behind
        drifts: list[LedgerDrift] = []
        for chunk in _pages(suspects, self._batch):
            drifts += await self._confirm(chunk, first=rows, observed=counters, fix=fix, fix_ahead=fix_ahead)
        return ReconcileReport("redis", len(ids), open_holds, tuple(drifts), fix)

    # --- first pass -------------------------------------------------------------------

    async def _open_holds(self) -> tuple[dict[str, list[tuple[str, int]]], int]:
        """(epoch, amount) of every open hold, per ledger it names; and how many holds are open."""
        request_ids = [_text(member) async for member, _score in self._client.zscan_iter(f"{self._prefix}:exp")]
        by_ledger: dict[str, list[tuple[str, int]]] = {}
        count = 0
        for page in _pages(request_ids):
            pipe = self._client.pipeline(transaction=False)
            for request_id in page:
                pipe.hgetall(f"{self._prefix}:h:{request_id}")
            for raw in await pipe.execute():
                fields = {_text(k): _text(v) for k, v in raw.items()}
                if not fields:
                    continue
                count += 1
                amount = int(fields.get("amount", "0"))
                for name, epoch in fields.items():
                    if name.startswith("e:"):
                        by_ledger.setdefault(name[2:], []).append((epoch, amount))
        return by_ledger, count

    async def _counters(self) -> dict[str, _Counter]:
        head = f"{self._prefix}:l:"
        keys = sorted({_text(key) async for key in self._client.scan_iter(match=head + "*", count=1000)})
        found: dict[str, _Counter] = {}
        for page in _pages(keys):
            pipe = self._client.pipeline(transaction=False)
            for key in page:
                pipe.hmget(key, "spent", "reserved", "version", "epoch")
            for key, (spent, reserved, version, epoch) in zip(page, await pipe.execute()):
                if spent is None and reserved is None and version is None:
                    continue  # gone since the scan
                found[key[len(head) :]] = _Counter(
                    _int(spent), _int(reserved), _int(version), None if epoch is None else _text(epoch)
                )
        return found

    async def _rows(self, ids: Sequence[str]) -> dict[str, _Row]:
        rows: dict[str, _Row] = {}
        async with wrap_database_errors(), self._sessions() as session:
            for page in _pages(ids):
                result = await execute_core(
                    session,
                    select(_ledgers.c.ledger_id, _ledgers.c.spent, _ledgers.c.version, _ledgers.c.period_end).where(
                        _ledgers.c.ledger_id.in_(page)
                    ),
                )
                rows.update({r[0]: _Row(int(r[1]), int(r[2]), r[3]) for r in result.all()})
        return rows

    @staticmethod
    def _suspect(counter: _Counter | None, row: _Row, holds: list[tuple[str, int]]) -> bool:
        held = sum(amount for _epoch, amount in holds)
        if counter is None:
            return held > 0
        return (
            counter.spent != row.spent
            or counter.version != row.version
            or counter.reserved != held
            or any(epoch != counter.epoch for epoch, _amount in holds)
        )

    # --- second pass: atomic check or repair --------------------------------------------

    def _ttl(self, ledger_id: str, row: _Row | None) -> str:
        """Lifetime of a hash created by a repair, as the counters adapter would give it."""
        if row is None:
            never_resets = ledger_id.rsplit(":", 2)[-2] == "-"
            return "" if never_resets else str(SETTLED_HASH_SECONDS)
        if row.period_end is None:
            return ""
        return str(max(int(row.period_end.timestamp() - time.time()) + LEDGER_GRACE_SECONDS, 3600))

    async def _confirm(
        self, chunk: Sequence[str], *, first: dict[str, _Row], observed: dict[str, _Counter], fix: bool,
        fix_ahead: bool,
    ) -> list[LedgerDrift]:
        keys = [f"{self._prefix}:epoch", f"{self._prefix}:exp"] + [f"{self._prefix}:l:{lid}" for lid in chunk]
        args = [self._prefix, "fix" if fix else "check", "1" if fix_ahead else "0"]
        # With fix: the snapshot the repair applies, read now (after the first pass).
        rows = await self._rows(chunk) if fix else {}
        for lid in chunk:
            row = rows.get(lid) if fix else None
            seen = observed.get(lid)
            version = "" if seen is None or seen.version is None else str(seen.version)
            args += [lid, str(row.spent if row else 0), str(row.version if row else 0), version, self._ttl(lid, row)]
        async with _redis_errors():
            flat = [_text(item) for item in await self._script(keys=keys, args=args)]
        if not fix:  # the ledger as it is now, read after the counters: a newer counter is an anomaly
            rows = await self._rows(chunk)
        drifts: list[LedgerDrift] = []
        for i, lid in enumerate(chunk):
            existed, spent, reserved, version, held, orphaned, spent_after, reserved_after = flat[8 * i : 8 * i + 8]
            row = rows.get(lid, _NO_ROW)
            seen = observed.get(lid)
            problems = _problems(
                existed == "1", _int(spent), _int(reserved), _int(version), int(held), int(orphaned),
                row=row, first=first.get(lid, _NO_ROW),
                observed=None if not fix or seen is None else seen.version, redis_first=not fix,
            )
            if not problems:
                continue
            repaired = fix and reserved_after == held and (
                not {"spent", "behind", "ahead"} & set(problems) or spent_after == str(row.spent)
            )
            drifts.append(
                LedgerDrift(
                    lid, problems, _int(spent) if existed == "1" else None, row.spent, _int(version), row.version,
                    _int(reserved) if existed == "1" else None, int(held), int(orphaned), repaired,
                )
            )
        return drifts


def _problems(
    existed: bool, spent: int | None, reserved: int | None, version: int | None, held: int, orphaned: int, *,
    row: _Row, first: _Row, observed: int | None, redis_first: bool,
) -> tuple[str, ...]:
    if not existed:
        return ("missing",) if held else ()
    found: list[str] = []
    current = -1 if version is None else version
    if current == row.version and spent != row.spent:
        found.append("spent")
    elif current < row.version and current < first.version:
        found.append("behind")
    elif current > row.version and (redis_first or current == observed):
        found.append("ahead")
    if reserved != held or orphaned:
        found.append("reserved")
    return tuple(found)
