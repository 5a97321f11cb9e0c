"""The audit trail's write side: what an admin change records, in the change's own transaction.

Every admin write (`common.admin_write`) hands its service a `Change`; the service records the
entity's state before and after. The row is added to the same session, so it commits with the
change or not at all — a refused change (404, 409) leaves no row.

`before`/`after` are snapshots as the API shows them (money as exact decimal strings, times ISO
8601 UTC): the settable fields and the budget, never a key secret or hash. A create has no
`before`, a delete no `after`; an update shows only the fields its body named, old and new, so
"who changed this limit, and when?" reads off one row.

Entities created on first sight by the decision path are not admin changes and write no row.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping, Sequence
from typing import Any, Final

from pydantic_core import to_jsonable_python
from sqlmodel.ext.asyncio.session import AsyncSession

from ..budgets import budget_public
from ..tables import AuditEvent, Budget, utcnow

__all__ = ["ADMIN_ACTOR", "AUDIT_ENTITY_TYPES", "Change", "snapshot", "model_budgets_snapshot", "update_action"]

#: The token class of admin routes.
ADMIN_ACTOR: Final = "admin"
#: Entity types the trail names (`GET /v1/admin/audit?entity=<type>:<id>`).
AUDIT_ENTITY_TYPES: Final = ("org", "team", "user", "team_member", "key", "end_user", "tag")
#: Never in a snapshot: the secret's hash, bookkeeping the API does not show.
_HIDDEN: Final = frozenset({"key_hash", "deleted_at", "created_at"})


def snapshot(
    row: Any,
    budgets: Sequence[Budget],
    *,
    extra: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """An entity's settable state as JSON: its fields (hidden ones left out), `budget`, then `extra`."""
    fields = {name: value for name, value in row.model_dump().items() if name not in _HIDDEN}
    state = {**fields, "budget": budget_public(budgets), **(extra or {})}
    return dict(to_jsonable_python(state))


def model_budgets_snapshot(model_budgets: Mapping[str, Sequence[Budget]]) -> dict[str, Any]:
    """A key's per-model budgets, by model, as the API shows them."""
    return {model: budget_public(rows) for model, rows in sorted(model_budgets.items())}


def update_action(before: Mapping[str, Any], after: Mapping[str, Any]) -> str:
    """'block' / 'unblock' when the update changed `blocked`, otherwise 'update'."""
    if "blocked" in after and before.get("blocked") != after["blocked"]:
        return "block" if after["blocked"] else "unblock"
    return "update"


class Change:
    """The audit rows of one admin transaction (`common.admin_write` creates it)."""

    def __init__(self, session: AsyncSession, *, actor: str = ADMIN_ACTOR) -> None:
        self._session = session
        self._actor = actor

    def created(self, entity_type: str, entity_id: str, after: dict[str, Any]) -> None:
        self._add("create", entity_type, entity_id, None, after)

    def deleted(self, entity_type: str, entity_id: str, before: dict[str, Any], *, action: str = "delete") -> None:
        self._add(action, entity_type, entity_id, before, None)

    def updated(
        self,
        entity_type: str,
        entity_id: str,
        before: Mapping[str, Any],
        after: Mapping[str, Any],
        *,
        fields: Collection[str],
    ) -> None:
        """Record the named `fields` of two full snapshots (those the update's body carried)."""
        old = {name: before.get(name) for name in sorted(fields)}
        new = {name: after.get(name) for name in sorted(fields)}
        self._add(update_action(old, new), entity_type, entity_id, old, new)

    def _add(
        self, action: str, entity_type: str, entity_id: str, before: dict[str, Any] | None, after: dict[str, Any] | None
    ) -> None:
        self._session.add(
            AuditEvent(
                at=utcnow(),
                actor=self._actor,
                action=action,
                entity_type=entity_type,
                entity_id=entity_id,
                before=before,
                after=after,
            )
        )
