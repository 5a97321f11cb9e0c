"""Gather the facts of a request: its key, the entities behind it, their budgets.

The key chain (key, user, team, membership, orgs) and every budget the request could touch
come from ONE indexed query by key hash; end users and tags named by the request are a second
small query only when the request names any. Results are cached per process for at most
`facts_cache_seconds` (≤ 1 s), which is how an admin change reaches every replica in time.

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


#: A hard bound on cached request shapes per replica, whatever the request rate.
MAX_ENTRIES = 50_000


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
    _default_end_user: tuple[BudgetWindow, ...] = ()
    _default_budgets: DefaultBudgets = field(default_factory=dict)

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
        cache_key: tuple[Any, ...]
        if principal is not None:
            # A separate shape from secrets' hashes: the first element can never be a hash.
            cache_key = ("gateway", principal.key, principal.user, principal.team, principal.org, *named)
        elif api_key is not None:
            cache_key = (hash_secret(api_key), *named)
        else:
            raise ValueError("facts need an api_key or a principal")
        now = self.clock()
        hit = self._entries.get(cache_key)
        if hit is not None and now - hit[0] < self.ttl_seconds:
            return hit[1]
        loading = self._loading.get(cache_key)
        if loading is not None:  # the same shape is being read already: share that read
            try:
                return await asyncio.shield(loading)
            except asyncio.CancelledError:
                if not loading.cancelled():
                    raise  # this request was cancelled
                # the reading request was cancelled (its client left): read here instead
        loading = asyncio.get_running_loop().create_future()
        self._loading[cache_key] = loading
        try:
            if principal is not None:
                facts = await self._query_principal(principal, *named)
            else:
                facts = await self._query(*cache_key)
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
        self._entries.pop(cache_key, None)  # re-inserted at the back: it is the newest now
        self._entries[cache_key] = (now, facts)
        self._drop_expired(now)
        return facts

    def _drop_expired(self, now: float) -> None:
        """Forget entries past their lifetime, so memory follows the request rate of the last
        `ttl_seconds` rather than every request shape ever seen (with many end users nearly
        every authorize is a new shape)."""
        entries = self._entries
        while entries:
            loaded_at, _facts = next(iter(entries.values()))
            if now - loaded_at < self.ttl_seconds and len(entries) <= MAX_ENTRIES:
                return
            entries.popitem(last=False)

    async def _query(
        self, key_hash: str, model: str | None, end_user: str | None, tags: tuple[str, ...]
    ) -> RequestFacts:
        params = {"key_hash": key_hash, "model": model or "", "end_user": end_user, "tags": list(tags)}
        async with wrap_database_errors():
            rows, named = await self._read(KEY_CHAIN_SQL, params, end_user, tags)
        return self._assemble(rows, named, model, end_user, tags)

    async def _query_principal(
        self, principal: Principal, model: str | None, end_user: str | None, tags: tuple[str, ...]
    ) -> RequestFacts:
        params = {
            "key": principal.key, "user": principal.user, "team": principal.team, "org": principal.org,
            "team_org": principal.team_org, "user_org": principal.user_org,
            "model": model or "", "end_user": end_user, "tags": list(tags),
        }
        async with wrap_database_errors():
            rows, named = await self._read(PRINCIPAL_SQL, params, end_user, tags)
            if _unseen(principal, rows):
                await self._create(principal)
                rows, named = await self._read(PRINCIPAL_SQL, params, end_user, tags)
        return self._assemble(rows, named, model, end_user, tags, source="gateway")

    async def _read(
        self, chain: TextualSelect, params: dict[str, Any], end_user: str | None, tags: tuple[str, ...]
    ) -> tuple[Sequence[Any], Sequence[Any]]:
        """The key chain's rows, and the named end user's and tags' rows when the request names any."""
        async with self.sessions() as session:
            rows = (await execute_core(session, chain, params)).all()
            named = (
                (await execute_core(session, NAMED_SQL, {"end_user": end_user, "tags": list(tags)})).all()
                if end_user or tags
                else []
            )
        return rows, named

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

    def _assemble(
        self,
        rows: Sequence[Any],
        named: Sequence[Any],
        model: str | None,
        end_user: str | None,
        tags: tuple[str, ...],
        source: IdentitySource = "api_key",
    ) -> RequestFacts:
        budgets: dict[tuple[str, str], dict[int, BudgetWindow]] = {}
        for row in rows:
            if row.b_id is not None:
                budgets.setdefault((row.b_type, row.b_entity), {})[row.b_id] = _window(row)

        def windows(entity_type: str, entity_id: str) -> tuple[BudgetWindow, ...]:
            found = budgets.get((entity_type, entity_id), {})
            return tuple(found[i] for i in sorted(found))

        known = {(row.kind, row.id): bool(row.blocked) for row in named}
        eu = None
        if end_user:
            is_known = ("end_user", end_user) in known
            eu = EntityFacts(
                "end_user", end_user, known.get(("end_user", end_user), False), is_known,
                windows("end_user", end_user) or (() if is_known else self._default_end_user),
            )
        tag_facts = tuple(
            EntityFacts("tag", tag, known.get(("tag", tag), False), ("tag", tag) in known, windows("tag", tag))
            for tag in tags
        )
        if not rows or rows[0].k_id is None:
            return RequestFacts(key=None, end_user=eu, tags=tag_facts, identity_source=source)
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
        return RequestFacts(
            key=key, user=user, team=team, team_member=member, orgs=tuple(orgs[o] for o in sorted(orgs)),
            key_model=key_model, end_user=eu, tags=tag_facts, identity_source=source,
        )


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
