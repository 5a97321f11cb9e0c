"""API keys: create (the secret is shown once), read, update, and revoke by soft deletion.

Only the SHA-256 hash of a secret is stored; the secret itself is in the creation response
and nowhere else — not in the database, not in a log. A key's `model_budgets` are budgets of
the entity `key_model` '<key_id>/<model>'. Deleting a key stamps `deleted_at`: the facts
query ignores it from then on (revoked at once on this replica, within a second on every
other), its id is never reused, and its ledgers and spend events stay.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any

from sqlmodel import col, select
from sqlmodel.ext.asyncio.session import AsyncSession

from ..budgets import BudgetSpec, as_windows, delete_budgets, load_budgets, replace_budgets
from ..counters import Counters
from ..errors import Conflict, NotFound
from ..facts import FactsCache
from ..keys import display_prefix, hash_secret, new_secret
from ..tables import ApiKey, Budget, Team, User, utcnow
from .audit import model_budgets_snapshot, snapshot
from .common import admin_read, admin_write, new_id, require
from .ledger_view import LedgerLine, ledger_lines, public_budget, read_ledgers
from .schemas import KeyCreate, KeyCreated, KeyPublic, KeyUpdate

__all__ = ["create_key", "read_key", "update_key", "delete_key"]

_KEY_MODEL = "key_model"


def _model_entity(key_id: str, model: str) -> str:
    return f"{key_id}/{model}"


async def _model_budgets(session: AsyncSession, key_id: str) -> dict[str, list[Budget]]:
    """The key's per-model budgets, by model name (ids are '<key_id>/<model>'; models may contain '/').

    LIKE narrows the rows; the exact prefix test is repeated here because SQLite's LIKE ignores case.
    """
    prefix = f"{key_id}/"
    rows = await session.exec(
        select(Budget)
        .where(col(Budget.entity_type) == _KEY_MODEL, col(Budget.entity_id).startswith(prefix, autoescape=True))
        .order_by(col(Budget.id))
    )
    found: dict[str, list[Budget]] = {}
    for row in rows.all():
        if row.entity_id.startswith(prefix):
            found.setdefault(row.entity_id[len(prefix) :], []).append(row)
    return found


async def _replace_model_budgets(
    session: AsyncSession,
    key_id: str,
    wanted: Mapping[str, BudgetSpec | list[BudgetSpec] | None],
    *,
    now: datetime | None = None,
) -> dict[str, list[Budget]]:
    """Make the key's per-model budgets exactly `wanted` (a model mapped to null has none)."""
    current = await _model_budgets(session, key_id)
    for model in current.keys() - wanted.keys():
        await delete_budgets(session, _KEY_MODEL, _model_entity(key_id, model))
    result: dict[str, list[Budget]] = {}
    for model, budget in wanted.items():
        rows = await replace_budgets(session, _KEY_MODEL, _model_entity(key_id, model), as_windows(budget), now=now)
        if rows:
            result[model] = rows
    return result


async def _view(
    *,
    counters: Counters,
    key: ApiKey,
    budgets: Sequence[Budget],
    model_budgets: Mapping[str, Sequence[Budget]],
    secret: str | None = None,
) -> KeyPublic:
    now = utcnow()
    groups: dict[str, list[LedgerLine]] = {
        "": ledger_lines(entity_type="key", entity_id=key.id, budgets=budgets, at=now)
    }
    for model, rows in model_budgets.items():
        groups[model] = ledger_lines(
            entity_type=_KEY_MODEL, entity_id=_model_entity(key.id, model), budgets=rows, at=now
        )
    ledgers = await read_ledgers(counters=counters, groups=groups)
    fields: dict[str, Any] = {
        **key.model_dump(exclude={"key_hash", "deleted_at"}),
        "budget": public_budget(budgets),
        "ledgers": ledgers.pop(""),
        "model_budgets": {model: public_budget(rows) for model, rows in model_budgets.items()},
        "model_ledgers": ledgers,
    }
    if secret is not None:
        return KeyCreated.model_validate({**fields, "key": secret})
    return KeyPublic.model_validate(fields)


def _snapshot(key: ApiKey, budgets: Sequence[Budget], model_budgets: Mapping[str, Sequence[Budget]]) -> dict[str, Any]:
    """The key as the audit trail records it: never its secret or hash (`audit.snapshot` leaves them out)."""
    return snapshot(key, budgets, extra={"model_budgets": model_budgets_snapshot(model_budgets)})


async def _live_key(session: AsyncSession, key_id: str) -> ApiKey:
    key = await session.get(ApiKey, key_id)
    if key is None:
        raise NotFound(kind="key", id=key_id)
    if key.deleted_at is not None:
        raise NotFound(kind="key", id=key_id, hint="it was deleted")
    return key


async def create_key(*, session: AsyncSession, counters: Counters, facts: FactsCache, body: KeyCreate) -> KeyCreated:
    """Create a key; the response carries the secret, which is never shown again."""
    async with admin_write(session, facts=facts) as change:
        key_id = body.id or new_id("key_")
        existing = await session.get(ApiKey, key_id)
        if existing is not None:
            was = " and was deleted; key ids are never reused" if existing.deleted_at is not None else ""
            raise Conflict(f"key {key_id!r} already exists{was}; choose another id")
        if body.user_id is not None:
            await require(session, User, body.user_id, kind="user", hint="create the user first or leave user_id out")
        if body.team_id is not None:
            await require(session, Team, body.team_id, kind="team", hint="create the team first or leave team_id out")
        secret = new_secret()
        key = ApiKey(
            id=key_id,
            key_hash=hash_secret(secret),
            key_prefix=display_prefix(secret),
            name=body.name,
            user_id=body.user_id,
            team_id=body.team_id,
            models=list(dict.fromkeys(body.models)),
            expires_at=body.expires_at,
            blocked=body.blocked,
        )
        session.add(key)
        budgets = await replace_budgets(session, "key", key_id, as_windows(body.budget), now=key.created_at)
        model_budgets = await _replace_model_budgets(session, key_id, body.model_budgets, now=key.created_at)
        await session.flush()
        change.created("key", key_id, _snapshot(key, budgets, model_budgets))
        view = await _view(counters=counters, key=key, budgets=budgets, model_budgets=model_budgets, secret=secret)
    assert isinstance(view, KeyCreated)
    return view


async def read_key(*, session: AsyncSession, counters: Counters, key_id: str) -> KeyPublic:
    """A live key with its budgets and current ledgers (never its secret); deleted keys are 404."""
    async with admin_read():
        key = await _live_key(session, key_id)
        budgets = await load_budgets(session, "key", key_id)
        model_budgets = await _model_budgets(session, key_id)
        return await _view(counters=counters, key=key, budgets=budgets, model_budgets=model_budgets)


async def update_key(
    *, session: AsyncSession, counters: Counters, facts: FactsCache, key_id: str, body: KeyUpdate
) -> KeyPublic:
    """Apply the fields present: name, budget, models, model_budgets (replaces the map), expires_at, blocked."""
    given = body.model_fields_set
    async with admin_write(session, facts=facts) as change:
        key = await _live_key(session, key_id)
        before = _snapshot(key, await load_budgets(session, "key", key_id), await _model_budgets(session, key_id))
        if "name" in given:
            key.name = body.name
        if "models" in given:
            key.models = list(dict.fromkeys(body.models or []))
        if "expires_at" in given:
            key.expires_at = body.expires_at
        if "blocked" in given and body.blocked is not None:
            key.blocked = body.blocked
        session.add(key)
        if "budget" in given:
            budgets = await replace_budgets(session, "key", key_id, as_windows(body.budget))
        else:
            budgets = await load_budgets(session, "key", key_id)
        if "model_budgets" in given:
            model_budgets = await _replace_model_budgets(session, key_id, body.model_budgets or {})
        else:
            model_budgets = await _model_budgets(session, key_id)
        await session.flush()
        change.updated("key", key_id, before, _snapshot(key, budgets, model_budgets), fields=given)
        view = await _view(counters=counters, key=key, budgets=budgets, model_budgets=model_budgets)
    return view


async def delete_key(*, session: AsyncSession, facts: FactsCache, key_id: str) -> None:
    """Revoke the key now: stamp `deleted_at` and drop its budgets; its spend history stays."""
    async with admin_write(session, facts=facts) as change:
        key = await _live_key(session, key_id)
        before = _snapshot(key, await load_budgets(session, "key", key_id), await _model_budgets(session, key_id))
        change.deleted("key", key_id, before, action="revoke")
        key.deleted_at = utcnow()
        session.add(key)
        await delete_budgets(session, "key", key_id)
        for model in await _model_budgets(session, key_id):
            await delete_budgets(session, _KEY_MODEL, _model_entity(key_id, model))
