"""Budgets: the `budget` input of API.md (one window or several) and how windows are stored.

A budget window is a row of `budgets` per (entity_type, entity_id). Replacing an entity's
windows keeps the period anchor (`set_at`) of a window whose duration and reset are
unchanged — raising a limit does not restart the period; changing the duration does.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, field_validator, model_validator
from sqlmodel import col, delete, select
from sqlmodel.ext.asyncio.session import AsyncSession

from .money import Nanos, format_nanos
from .periods import Duration, InvalidDuration
from .tables import Budget, utcnow

__all__ = [
    "BudgetSpec",
    "BudgetInput",
    "as_windows",
    "budget_public",
    "replace_budgets",
    "load_budgets",
    "delete_budgets",
]


class BudgetSpec(BaseModel):
    """One budget window: `{"max_budget", "soft_budget"?, "duration"?, "reset"?}`."""

    model_config = ConfigDict(extra="forbid")

    max_budget: Nanos
    soft_budget: Nanos | None = None
    duration: str | None = None
    reset: Literal["rolling", "calendar"] = "rolling"

    @field_validator("duration")
    @classmethod
    def _canonical_duration(cls, value: str | None) -> str | None:
        if value is None:
            return None
        try:
            return str(Duration.parse(value))
        except InvalidDuration as exc:
            raise ValueError(str(exc)) from None

    @model_validator(mode="after")
    def _soft_within_max(self) -> BudgetSpec:
        if self.soft_budget is not None and self.soft_budget > self.max_budget:
            raise ValueError("soft_budget must not be larger than max_budget")
        return self


#: What `budget` accepts: one window, a list of windows, or null (no budget).
BudgetInput = BudgetSpec | list[BudgetSpec] | None


def as_windows(budget: BudgetInput) -> list[BudgetSpec]:
    """Normalise the input to a list of windows; two windows with the same duration are an error."""
    windows = [] if budget is None else [budget] if isinstance(budget, BudgetSpec) else list(budget)
    seen: set[str | None] = set()
    for window in windows:
        if window.duration in seen:
            raise ValueError(f"two budget windows have the same duration {window.duration or '(none)'}; give each window its own duration")
        seen.add(window.duration)
    return windows


def budget_public(rows: Sequence[Budget]) -> dict[str, Any] | list[dict[str, Any]] | None:
    """Rows back to API shape: an object for one window, a list for several, null for none."""
    items = [
        {
            "max_budget": format_nanos(row.max_budget),
            "soft_budget": format_nanos(row.soft_budget) if row.soft_budget is not None else None,
            "duration": row.duration,
            "reset": row.reset,
            "set_at": row.set_at.isoformat().replace("+00:00", "Z"),
        }
        for row in rows
    ]
    if not items:
        return None
    return items[0] if len(items) == 1 else items


async def load_budgets(session: AsyncSession, entity_type: str, entity_id: str) -> list[Budget]:
    rows = await session.exec(
        select(Budget).where(Budget.entity_type == entity_type, Budget.entity_id == entity_id).order_by(col(Budget.id))
    )
    return list(rows.all())


async def delete_budgets(session: AsyncSession, entity_type: str, entity_id: str) -> None:
    await session.exec(delete(Budget).where(col(Budget.entity_type) == entity_type, col(Budget.entity_id) == entity_id))


async def replace_budgets(
    session: AsyncSession,
    entity_type: str,
    entity_id: str,
    windows: Sequence[BudgetSpec],
    *,
    now: datetime | None = None,
) -> list[Budget]:
    """Make the entity's windows exactly `windows` (in the caller's transaction)."""
    now = now or utcnow()
    old = {(row.duration, row.reset): row.set_at for row in await load_budgets(session, entity_type, entity_id)}
    await delete_budgets(session, entity_type, entity_id)
    rows = [
        Budget(
            entity_type=entity_type,
            entity_id=entity_id,
            max_budget=window.max_budget,
            soft_budget=window.soft_budget,
            duration=window.duration,
            reset=window.reset,
            set_at=old.get((window.duration, window.reset), now),
        )
        for window in windows
    ]
    session.add_all(rows)
    return rows
