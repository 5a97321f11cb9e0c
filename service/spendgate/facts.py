"""Gather the facts of a request: its key, the entities behind it, their budgets.

The key chain (key, user, team, membership, orgs) and every budget the request could touch
come from ONE indexed query by key hash; end users and tags named by the request are a second
small query only when the request names any. Results are cached per process for at most
`facts_cache_seconds` (≤ 1 s), which is how an admin change reaches every replica in time.
"""

from __future__ import annotations

import json
import time
from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, NamedTuple

from sqlalchemy import JSON, Boolean, String, bindparam, text

from .budgets import BudgetSpec
from .db import SessionFactory, execute_core, wrap_database_errors
from .keys import hash_secret
from .periods import EPOCH
from .settings import Settings
from .tables import UtcDateTime

__all__ = ["BudgetWindow", "EntityFacts", "KeyFacts", "RequestFacts", "FactsCache"]


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

    def entities(self) -> list[EntityFacts]:
        """Every entity the request could be charged to, key first."""
        found: list[EntityFacts | None] = [
            EntityFacts("key", self.key.id, self.key.blocked, budgets=self.key.budgets) if self.key else None,
            self.key_model, self.user, self.team, self.team_member, *self.orgs, self.end_user, *self.tags,
        ]
        return [entity for entity in found if entity is not None]


_KEY_CHAIN_SQL = text(
    """
    SELECT k.id AS k_id, k.user_id AS k_user, k.team_id AS k_team, k.blocked AS k_blocked,
           k.expires_at AS k_expires, k.models AS k_models,
           u.id AS u_id, u.org_id AS u_org, u.blocked AS u_blocked,
           t.id AS t_id, t.org_id AS t_org, t.blocked AS t_blocked,
           m.team_id AS m_team, m.blocked AS m_blocked,
           o.id AS o_id, o.blocked AS o_blocked,
           b.id AS b_id, b.entity_type AS b_type, b.entity_id AS b_entity, b.max_budget AS b_max,
           b.soft_budget AS b_soft, b.duration AS b_duration, b.reset AS b_reset, b.set_at AS b_set_at
    FROM keys k
    LEFT JOIN users u ON u.id = k.user_id
    LEFT JOIN teams t ON t.id = k.team_id
    LEFT JOIN team_members m ON m.team_id = k.team_id AND m.user_id = k.user_id
    LEFT JOIN orgs o ON o.id = t.org_id OR o.id = u.org_id
    LEFT JOIN budgets b ON
           (b.entity_type = 'key' AND b.entity_id = k.id)
        OR (b.entity_type = 'key_model' AND b.entity_id = k.id || '/' || :model)
        OR (b.entity_type = 'user' AND b.entity_id = k.user_id)
        OR (b.entity_type = 'team' AND b.entity_id = k.team_id)
        OR (b.entity_type = 'team_member' AND b.entity_id = k.team_id || '/' || k.user_id)
        OR (b.entity_type = 'org' AND b.entity_id = o.id)
        OR (b.entity_type = 'end_user' AND b.entity_id = :end_user)
        OR (b.entity_type = 'tag' AND b.entity_id IN :tags)
    WHERE k.key_hash = :key_hash AND k.deleted_at IS NULL
    """
).bindparams(bindparam("tags", expanding=True, type_=String)).columns(
    k_blocked=Boolean, k_expires=UtcDateTime, k_models=JSON, u_blocked=Boolean, t_blocked=Boolean,
    m_blocked=Boolean, o_blocked=Boolean, b_set_at=UtcDateTime,
)

_NAMED_SQL = text(
    """
    SELECT 'end_user' AS kind, id, blocked FROM end_users WHERE id = :end_user
    UNION ALL
    SELECT 'tag' AS kind, id, blocked FROM tags WHERE id IN :tags
    """
).bindparams(bindparam("tags", expanding=True, type_=String)).columns(blocked=Boolean)


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
    _default_end_user: tuple[BudgetWindow, ...] = ()

    def __post_init__(self) -> None:
        if self.settings.default_end_user_budget:
            spec = BudgetSpec.model_validate(json.loads(self.settings.default_end_user_budget))
            self._default_end_user = (
                BudgetWindow(spec.max_budget, spec.soft_budget, spec.duration, spec.reset, EPOCH),
            )

    def invalidate(self) -> None:
        """Forget everything (this replica). Other replicas forget within `ttl_seconds`."""
        self._entries.clear()

    async def load(
        self, *, api_key: str, model: str | None, end_user: str | None, tags: Sequence[str]
    ) -> RequestFacts:
        cache_key = (hash_secret(api_key), model, end_user, tuple(sorted(set(tags))))
        now = self.clock()
        hit = self._entries.get(cache_key)
        if hit is not None and now - hit[0] < self.ttl_seconds:
            return hit[1]
        facts = await self._query(*cache_key)
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
        async with wrap_database_errors(), self.sessions() as session:
            rows = (
                await execute_core(
                    session,
                    _KEY_CHAIN_SQL,
                    {"key_hash": key_hash, "model": model or "", "end_user": end_user, "tags": list(tags)},
                )
            ).all()
            named = (
                (await execute_core(session, _NAMED_SQL, {"end_user": end_user, "tags": list(tags)})).all()
                if end_user or tags
                else []
            )
        return self._assemble(rows, named, model, end_user, tags)

    def _assemble(
        self, rows: Sequence[Any], named: Sequence[Any], model: str | None, end_user: str | None, tags: tuple[str, ...]
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
        if not rows:
            return RequestFacts(key=None, end_user=eu, tags=tag_facts)
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
            key_model=key_model, end_user=eu, tags=tag_facts,
        )
