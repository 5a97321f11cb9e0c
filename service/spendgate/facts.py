"""Gather the facts of a request: its key, the entities behind it, their budgets.

The key chain (key, user, team, membership, orgs) and all its budgets come from ONE indexed
query by key hash; the end user and tags a request names, with their budgets, are a second small
query only when the request names any. Results are cached per process for at most
`facts_cache_seconds` (≤ 1 s), which is how an admin change reaches every replica in time.

They are cached twice over: whole, per request shape (key, model, end user, tags), and in parts —
the key chain per (key, model), each end user and each tag on its own. With many end users nearly
every request is a shape not seen within the lifetime, but its key chain and end user usually
were: such a request is assembled from the parts, without a database read. Every part is at most
`facts_cache_seconds` old, so the bound an admin change waits for is the same either way.

A shape still asked for late in its lifetime (`REFRESH_AFTER` of it) is read again in the background
while its cached facts keep answering; the new facts replace them before they expire. Without that,
every hot shape expired under load once a lifetime, and the requests that found it so waited for the
read together: the slowest 1 % of an open-loop run came in clusters, one per lifetime
(bench/README.md, twelfth round).

A gateway-asserted principal (identity.py) is looked up by ids instead, with the same row shape:
the key, user, team and membership it names, the org it asserts (or else the stored ones), and
their budgets. The asserted team, user and org are the request's facts even where stored rows
say otherwise. When an entity it names does not exist yet, it is created and the facts read again.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Literal, NamedTuple

from sqlalchemy import TextualSelect
from sqlalchemy.exc import IntegrityError
from sqlmodel.ext.asyncio.session import AsyncSession

from .budgets import BudgetSpec
from .db import SessionFactory, execute_core, wrap_database_errors
from .facts_sql import KEY_CHAIN_SQL, NAMED_SQL, PRINCIPAL_SQL
from .first_sight import create_on_first_sight
from .identity import DefaultBudgets, Principal, parse_default_budgets
from .keys import hash_secret
from .periods import EPOCH
from .settings import Settings
from .tables import utcnow

__all__ = ["BudgetWindow", "EntityFacts", "KeyFacts", "RequestFacts", "FactsCache", "IdentitySource"]

log = logging.getLogger("spendgate.facts")

#: Where the caller's identity came from: a Spendgate secret, or a principal the gateway asserted.
IdentitySource = Literal["api_key", "gateway"]


class BudgetWindow(NamedTuple):
    max_budget: int
    soft_budget: int | None
    duration: str | None
    reset: str
    set_at: datetime


@dataclass(frozen=True, slots=True)
class EntityFacts:
    type: str
    id: str
    blocked: bool = False
    #: False for an end user or tag that was never created (tracked all the same).
    known: bool = True
    budgets: tuple[BudgetWindow, ...] = ()
    org_id: str | None = None


@dataclass(frozen=True, slots=True)
class KeyFacts:
    id: str
    user_id: str | None
    team_id: str | None
    blocked: bool
    expires_at: datetime | None
    models: tuple[str, ...]
    budgets: tuple[BudgetWindow, ...] = ()


@dataclass(frozen=True, slots=True)
class RequestFacts:
    key: KeyFacts | None
    user: EntityFacts | None = None
    team: EntityFacts | None = None
    team_member: EntityFacts | None = None
    orgs: tuple[EntityFacts, ...] = ()
    key_model: EntityFacts | None = None
    end_user: EntityFacts | None = None
    tags: tuple[EntityFacts, ...] = ()
    identity_source: IdentitySource = "api_key"
    #: What the decision path derives from these facts alone (candidate ledgers of the current
    #: periods, the input's entity part), kept while the facts are cached: derived once per
    #: facts instead of per request. Not part of the facts' value (equality, repr).
    derived: dict[str, Any] = field(default_factory=dict, compare=False, repr=False)

    def entities(self) -> list[EntityFacts]:
        """Every entity the request could be charged to, key first."""
        found: list[EntityFacts | None] = [
            EntityFacts("key", self.key.id, self.key.blocked, budgets=self.key.budgets) if self.key else None,
            self.key_model, self.user, self.team, self.team_member, *self.orgs, self.end_user, *self.tags,
        ]
        return [entity for entity in found if entity is not None]


#: A hard bound on cached request shapes (and on cached parts of each kind) per replica, whatever the rate.
MAX_ENTRIES = 50_000
#: The part of a lifetime after which a shape asked for is read again in the background (and its parts
#: that old with it); the cached facts answer meanwhile. A hot shape is then read once per ~0.8 lifetime.
REFRESH_AFTER = 0.8


class _Chain(NamedTuple):
    """The part of a request's facts that its key (or principal) and model decide."""

    key: KeyFacts | None
    user: EntityFacts | None
    team: EntityFacts | None
    team_member: EntityFacts | None
    orgs: tuple[EntityFacts, ...]
    key_model: EntityFacts | None
    identity_source: IdentitySource


#: Parts of one shape just read from the database: when the read began, its key chain (None: it was
#: cached) and its named entities.
_Read = tuple[float, _Chain | None, dict[tuple[str, str], EntityFacts]]


def _put(entries: OrderedDict[Any, tuple[float, Any]], key: Any, value: tuple[float, Any], now: float,
         ttl_seconds: float) -> None:
    """Cache `value` (its time, then itself) at the back, as the newest, and forget what expired."""
    entries.pop(key, None)
    entries[key] = value
    _drop_expired(entries, now, ttl_seconds)


def _drop_expired(entries: OrderedDict[Any, tuple[float, Any]], now: float, ttl_seconds: float) -> None:
    """Forget entries past their lifetime (oldest first), so memory follows the request rate of the last
    `ttl_seconds` rather than every key ever seen, and never holds more than MAX_ENTRIES."""
    while entries:
        loaded_at, _value = next(iter(entries.values()))
        if now - loaded_at < ttl_seconds and len(entries) <= MAX_ENTRIES:
            return
        entries.popitem(last=False)


def _window(row: Any) -> BudgetWindow:
    return BudgetWindow(row.b_max, row.b_soft, row.b_duration, row.b_reset, row.b_set_at)


@dataclass
class FactsCache:
    """Loads `RequestFacts` and keeps them for a short while (per process)."""

    sessions: SessionFactory
    ttl_seconds: float
    settings: Settings
    #: Seconds from an arbitrary start (tests step it by hand).
    clock: Callable[[], float] = time.monotonic
    #: Oldest first: every entry lives `ttl_seconds`, so the expired ones are always at the front.
    _entries: OrderedDict[tuple[Any, ...], tuple[float, RequestFacts]] = field(default_factory=OrderedDict)
    #: Reads in flight per request shape: when an entry expires under load, the requests that
    #: find it missing share one read instead of each reading the database.
    _loading: dict[tuple[Any, ...], asyncio.Future[RequestFacts]] = field(default_factory=dict)
    #: The parts: key chains by (key hash or principal, model); end users and tags by (type, id).
    _chains: OrderedDict[tuple[Any, ...], tuple[float, _Chain]] = field(default_factory=OrderedDict)
    _named: OrderedDict[tuple[str, str], tuple[float, EntityFacts]] = field(default_factory=OrderedDict)
    _default_end_user: tuple[BudgetWindow, ...] = ()
    _default_budgets: DefaultBudgets = field(default_factory=dict)
    #: Background reads of shapes late in their lifetime (REFRESH_AFTER), kept until done.
    _refreshing: set[asyncio.Task[None]] = field(default_factory=set)

    def __post_init__(self) -> None:
        self._default_budgets = parse_default_budgets(self.settings.default_budgets)
        if self.settings.default_end_user_budget:
            spec = BudgetSpec.model_validate(json.loads(self.settings.default_end_user_budget))
            self._default_end_user = (
                BudgetWindow(spec.max_budget, spec.soft_budget, spec.duration, spec.reset, EPOCH),
            )

    def invalidate(self) -> None:
        """Forget everything (this replica). Other replicas forget within `ttl_seconds`."""
        self._entries.clear()
        self._chains.clear()
        self._named.clear()

    async def close(self) -> None:
        """Stop the background reads in flight (before the database they read from is closed)."""
        for task in list(self._refreshing):
            task.cancel()
        await asyncio.gather(*self._refreshing, return_exceptions=True)

    async def load(
        self,
        *,
        api_key: str | None = None,
        principal: Principal | None = None,
        model: str | None,
        end_user: str | None,
        tags: Sequence[str],
    ) -> RequestFacts:
        """The facts of a request identified by `api_key` or by a gateway's `principal` (exactly one)."""
        named = (model, end_user, tuple(sorted(set(tags))))
        identity: tuple[Any, ...]
        if principal is not None:
            # A separate shape from secrets' hashes: the first element can never be a hash.
            identity = ("gateway", principal.key, principal.user, principal.team, principal.org)
        elif api_key is not None:
            identity = (hash_secret(api_key),)
        else:
            raise ValueError("facts need an api_key or a principal")
        cache_key = (*identity, *named)
        chain_key = (*identity, model)
        now = self.clock()
        hit = self._entries.get(cache_key)
        if hit is not None:
            age = now - hit[0]
            if age < self.ttl_seconds:
                if age >= self.ttl_seconds * REFRESH_AFTER and cache_key not in self._loading:
                    self._refresh(cache_key, chain_key, principal, model, end_user, named[2], now)
                return hit[1]
        assembled = self._from_parts(chain_key, end_user, named[2], now, max_age=self.ttl_seconds)
        if assembled is not None:
            self._keep(cache_key, *assembled, now)
            return assembled[1]
        loading = self._loading.get(cache_key)
        if loading is not None:  # the same shape is being read already: share that read
            try:
                return await asyncio.shield(loading)
            except asyncio.CancelledError:
                if not loading.cancelled():
                    raise  # this request was cancelled
                # the reading request was cancelled (its client left): read here instead
        return await self._read_shape(self._start_loading(cache_key), cache_key, chain_key, principal, model, end_user,
                                      named[2], now, max_age=self.ttl_seconds)

    def _start_loading(self, cache_key: tuple[Any, ...]) -> asyncio.Future[RequestFacts]:
        """The future a read of `cache_key`'s shape will complete: requests that find the shape missing meanwhile
        wait for it, and no second background read of the shape starts."""
        loading: asyncio.Future[RequestFacts] = asyncio.get_running_loop().create_future()
        self._loading[cache_key] = loading
        return loading

    def _refresh(
        self, cache_key: tuple[Any, ...], chain_key: tuple[Any, ...], principal: Principal | None, model: str | None,
        end_user: str | None, tags: tuple[str, ...], now: float,
    ) -> None:
        """Read `cache_key`'s shape again in the background: its parts as old as REFRESH_AFTER of a lifetime."""
        loading = self._start_loading(cache_key)  # now: the next request must not start a second read

        async def refresh() -> None:
            try:
                await self._read_shape(loading, cache_key, chain_key, principal, model, end_user, tags, now,
                                       max_age=self.ttl_seconds * REFRESH_AFTER)
            except Exception as exc:  # noqa: BLE001 — the facts expire; the next request reads, and says why
                log.debug("background read of a request shape failed: %s", type(exc).__name__)

        def finished(task: asyncio.Task[None]) -> None:
            self._refreshing.discard(task)
            if not loading.done():  # cancelled before it began (close): waiters read for themselves
                loading.cancel()
            if self._loading.get(cache_key) is loading:
                del self._loading[cache_key]

        task = asyncio.get_running_loop().create_task(refresh())
        self._refreshing.add(task)
        task.add_done_callback(finished)

    async def _read_shape(
        self, loading: asyncio.Future[RequestFacts], cache_key: tuple[Any, ...], chain_key: tuple[Any, ...],
        principal: Principal | None, model: str | None, end_user: str | None, tags: tuple[str, ...], now: float, *,
        max_age: float,
    ) -> RequestFacts:
        """Read the parts of `cache_key`'s shape older than `max_age` (or missing), cache the shape and return
        it, completing `loading` (`_start_loading`) with it. `chain_key` names its key chain: the identity, then
        the model."""
        try:
            assembled = None
            while assembled is None:  # again if a cached part expired (or was forgotten) while this read waited
                read = await self._read_missing(chain_key, principal, model, end_user, tags, now, max_age=max_age)
                now = self.clock()
                # What was just read is used even with a lifetime of 0; the cached parts must still be fresh.
                assembled = self._from_parts(chain_key, end_user, tags, now, max_age=self.ttl_seconds, read=read)
            loaded_at, facts = assembled
        except asyncio.CancelledError:
            loading.cancel()
            raise
        except BaseException as exc:
            loading.set_exception(exc)
            loading.exception()  # retrieved: no "never retrieved" warning when nobody else waited
            raise
        else:
            loading.set_result(facts)
        finally:
            if self._loading.get(cache_key) is loading:
                del self._loading[cache_key]
        self._keep(cache_key, loaded_at, facts, now)
        return facts

    def _keep(self, cache_key: tuple[Any, ...], loaded_at: float, facts: RequestFacts, now: float) -> None:
        """Cache a shape, stamped with its oldest part's time. It goes to the back although that time may be
        older than the stamps in front of it: such an entry is found stale when asked for, and forgotten once
        it reaches the front (within about two lifetimes, and never beyond MAX_ENTRIES)."""
        _put(self._entries, cache_key, (loaded_at, facts), now, self.ttl_seconds)

    def _from_parts(
        self, chain_key: tuple[Any, ...], end_user: str | None, tags: tuple[str, ...], now: float, *,
        max_age: float, read: _Read | None = None,
    ) -> tuple[float, RequestFacts] | None:
        """The facts of a shape made of its parts — those just `read`, else cached ones — and when its
        oldest part was read; None when a part is missing, or cached and older than `max_age` at `now`."""
        read_at, chain_read, named_read = read if read is not None else (now, None, {})
        found = self._chains.get(chain_key) if chain_read is None else (read_at, chain_read)
        if found is None or (chain_read is None and now - found[0] >= max_age):
            return None
        oldest, chain = found
        parts: list[EntityFacts] = []
        for name in ((("end_user", end_user),) if end_user else ()) + tuple(("tag", tag) for tag in tags):
            just_read = named_read.get(name)
            part = (read_at, just_read) if just_read is not None else self._named.get(name)
            if part is None or (just_read is None and now - part[0] >= max_age):
                return None
            oldest = min(oldest, part[0])
            parts.append(part[1])
        eu = parts.pop(0) if end_user else None
        return oldest, RequestFacts(
            key=chain.key, user=chain.user, team=chain.team, team_member=chain.team_member, orgs=chain.orgs,
            key_model=chain.key_model, end_user=eu, tags=tuple(parts), identity_source=chain.identity_source,
        )

    @staticmethod
    def _fresh(entries: OrderedDict[Any, tuple[float, Any]], key: Any, now: float, max_age: float) -> bool:
        found = entries.get(key)
        return found is not None and now - found[0] < max_age

    async def _read_missing(
        self,
        chain_key: tuple[Any, ...],
        principal: Principal | None,
        model: str | None,
        end_user: str | None,
        tags: tuple[str, ...],
        now: float,
        *,
        max_age: float,
    ) -> _Read:
        """Read the parts of a shape that are not cached (or `max_age` old), cache them, and return them."""
        fresh_end_user = not end_user or self._fresh(self._named, ("end_user", end_user), now, max_age)
        missing_end_user = None if fresh_end_user else end_user
        missing_tags = tuple(tag for tag in tags if not self._fresh(self._named, ("tag", tag), now, max_age))
        read_chain = not self._fresh(self._chains, chain_key, now, max_age)
        chain: _Chain | None = None
        named: dict[tuple[str, str], EntityFacts] = {}
        if not (read_chain or missing_end_user or missing_tags):
            return now, chain, named  # another request of a shape with these parts read them meanwhile
        async with wrap_database_errors(), self.sessions() as session:  # one connection for both reads
            if read_chain:
                chain = await (self._read_principal(session, principal, model) if principal is not None
                               else self._read_chain(session, chain_key[0], model))
            if missing_end_user or missing_tags:
                named = await self._read_named(session, missing_end_user, missing_tags)
        if chain is not None:
            _put(self._chains, chain_key, (now, chain), now, self.ttl_seconds)
        for name, entity in named.items():
            _put(self._named, name, (now, entity), now, self.ttl_seconds)
        return now, chain, named

    async def _read_chain(self, session: AsyncSession, key_hash: str, model: str | None) -> _Chain:
        rows = await _rows(session, KEY_CHAIN_SQL, {"key_hash": key_hash, "model": model or ""})
        return _chain_from_rows(rows, model, "api_key")

    async def _read_principal(self, session: AsyncSession, principal: Principal, model: str | None) -> _Chain:
        params = {
            "key": principal.key, "user": principal.user, "team": principal.team, "org": principal.org,
            "team_org": principal.team_org, "user_org": principal.user_org, "model": model or "",
        }
        rows = await _rows(session, PRINCIPAL_SQL, params)
        if _unseen(principal, rows):
            await session.rollback()  # end the read's transaction: the rows created are read in a new one
            await self._create(principal)
            rows = await _rows(session, PRINCIPAL_SQL, params)
        return _chain_from_rows(rows, model, "gateway")

    async def _read_named(
        self, session: AsyncSession, end_user: str | None, tags: tuple[str, ...]
    ) -> dict[tuple[str, str], EntityFacts]:
        """The facts of the end user and tags named (those never created too: known False)."""
        rows = await _rows(session, NAMED_SQL, {"end_user": end_user, "tags": list(tags)})
        known: dict[tuple[str, str], bool] = {}
        budgets: dict[tuple[str, str], dict[int, BudgetWindow]] = {}
        for row in rows:
            if row.b_id is None:
                known[(row.kind, row.id)] = bool(row.blocked)
            else:
                budgets.setdefault((row.kind, row.id), {})[row.b_id] = _window(row)

        def entity(kind: str, entity_id: str, default: tuple[BudgetWindow, ...] = ()) -> EntityFacts:
            found = budgets.get((kind, entity_id), {})
            windows = tuple(found[i] for i in sorted(found))
            is_known = (kind, entity_id) in known
            return EntityFacts(kind, entity_id, known.get((kind, entity_id), False), is_known,
                               windows or (() if is_known else default))

        named = {("tag", tag): entity("tag", tag) for tag in tags}
        if end_user:
            named[("end_user", end_user)] = entity("end_user", end_user, self._default_end_user)
        return named

    async def _create(self, principal: Principal) -> None:
        """Create what the principal names and nobody created yet (one short write transaction)."""
        async with self.sessions() as session:
            try:
                await create_on_first_sight(
                    session=session, principal=principal, defaults=self._default_budgets, now=utcnow()
                )
                await session.commit()
            except IntegrityError as exc:
                # Only an admin deleting a referenced entity at this very moment gets here; the
                # request is then decided on the entities that exist.
                await session.rollback()
                log.warning("entities of gateway key %s were not all created: %s", principal.key, type(exc).__name__)


async def _rows(session: AsyncSession, statement: TextualSelect, params: dict[str, Any]) -> Sequence[Any]:
    return (await execute_core(session, statement, params)).all()


def _chain_from_rows(rows: Sequence[Any], model: str | None, source: IdentitySource) -> _Chain:
    """The key chain's facts from its rows (one per org × budget)."""
    budgets: dict[tuple[str, str], dict[int, BudgetWindow]] = {}
    for row in rows:
        if row.b_id is not None:
            budgets.setdefault((row.b_type, row.b_entity), {})[row.b_id] = _window(row)

    def windows(entity_type: str, entity_id: str) -> tuple[BudgetWindow, ...]:
        found = budgets.get((entity_type, entity_id), {})
        return tuple(found[i] for i in sorted(found))

    if not rows or rows[0].k_id is None:
        return _Chain(None, None, None, None, (), None, source)
    first = rows[0]
    key = KeyFacts(first.k_id, first.k_user, first.k_team, bool(first.k_blocked), first.k_expires,
                   tuple(first.k_models or ()), windows("key", first.k_id))
    user = team = member = key_model = None
    if first.u_id is not None:
        user = EntityFacts("user", first.u_id, bool(first.u_blocked), budgets=windows("user", first.u_id),
                           org_id=first.u_org)
    if first.t_id is not None:
        team = EntityFacts("team", first.t_id, bool(first.t_blocked), budgets=windows("team", first.t_id),
                           org_id=first.t_org)
    if first.m_team is not None and user is not None:
        member_id = f"{first.m_team}/{user.id}"
        member = EntityFacts("team_member", member_id, bool(first.m_blocked),
                             budgets=windows("team_member", member_id))
    if model and windows("key_model", f"{key.id}/{model}"):
        key_model = EntityFacts("key_model", f"{key.id}/{model}", budgets=windows("key_model", f"{key.id}/{model}"))
    orgs = {
        row.o_id: EntityFacts("org", row.o_id, bool(row.o_blocked), budgets=windows("org", row.o_id))
        for row in rows
        if row.o_id is not None
    }
    return _Chain(key, user, team, member, tuple(orgs[o] for o in sorted(orgs)), key_model, source)


def _unseen(principal: Principal, rows: Sequence[Any]) -> bool:
    """Whether the principal names an entity that does not exist (a deleted key stays deleted)."""
    first = rows[0]
    return bool(
        (first.k_id is None and not first.k_exists)
        or (principal.user and first.u_id is None)
        or (principal.team and first.t_id is None)
        or (principal.member and first.m_team is None)
        or (principal.org and not any(row.o_id == principal.org for row in rows))
    )
