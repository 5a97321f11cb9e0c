"""An entity's current ledgers as admin responses show them: one per budget window, now.

Each budget window names the ledger of the period containing `at` (`ledgers.ledger_for_budget`,
the same function the decision path uses, so both always name the same ledger); an entity
without a budget has one ledger that never resets and has no limit. Figures come from the
counters in one `read` call per response, however many entities and windows it shows.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import NamedTuple

from ..budgets import BudgetSpec, budget_public
from ..counters import Counters, Figures
from ..ledgers import LedgerRef, ledger_for_budget
from ..money import format_nanos
from ..periods import EPOCH
from ..settings import Settings
from ..tables import Budget
from .schemas import BudgetPublic, BudgetWindowPublic, LedgerPublic

__all__ = ["LedgerLine", "ledger_lines", "read_ledgers", "public_budget", "default_end_user_budget"]


class LedgerLine(NamedTuple):
    """A ledger an admin response shows, with the limits of the window that names it."""

    ref: LedgerRef
    limit: int | None
    soft_budget: int | None


def ledger_lines(*, entity_type: str, entity_id: str, budgets: Sequence[Budget], at: datetime) -> list[LedgerLine]:
    """The ledgers of one entity at instant `at`, in window order."""
    if not budgets:
        return [
            LedgerLine(ledger_for_budget(entity_type=entity_type, entity_id=entity_id, budget=None, at=at), None, None)
        ]
    return [
        LedgerLine(
            ledger_for_budget(entity_type=entity_type, entity_id=entity_id, budget=row, at=at),
            row.max_budget,
            row.soft_budget,
        )
        for row in budgets
    ]


def _public(line: LedgerLine, figures: Figures) -> LedgerPublic:
    return LedgerPublic(
        window=line.ref.window,
        spent=format_nanos(figures.spent),
        reserved=format_nanos(figures.reserved),
        limit=format_nanos(line.limit) if line.limit is not None else None,
        soft_budget=format_nanos(line.soft_budget) if line.soft_budget is not None else None,
        period_start=line.ref.period_start,
        resets_at=line.ref.period_end,
    )


async def read_ledgers(
    *, counters: Counters, groups: Mapping[str, Sequence[LedgerLine]]
) -> dict[str, list[LedgerPublic]]:
    """Figures for every line of every group, read with a single counters call."""
    refs = [line.ref for lines in groups.values() for line in lines]
    figures = await counters.read(refs) if refs else {}
    return {
        name: [_public(line, figures.get(line.ref.id, Figures(0, 0))) for line in lines]
        for name, lines in groups.items()
    }


def public_budget(rows: Sequence[Budget]) -> BudgetPublic:
    """`budgets.budget_public` as a typed response field."""
    shown = budget_public(rows)
    if shown is None:
        return None
    if isinstance(shown, list):
        return [BudgetWindowPublic.model_validate(item) for item in shown]
    return BudgetWindowPublic.model_validate(shown)


def default_end_user_budget(settings: Settings, end_user_id: str) -> list[Budget]:
    """The configured budget of end users never created here, as the decision path applies it.

    Not stored: an in-memory row anchored at the epoch, exactly as `facts.FactsCache` builds it.
    """
    if not settings.default_end_user_budget:
        return []
    spec = BudgetSpec.model_validate(json.loads(settings.default_end_user_budget))
    return [
        Budget(
            entity_type="end_user",
            entity_id=end_user_id,
            max_budget=spec.max_budget,
            soft_budget=spec.soft_budget,
            duration=spec.duration,
            reset=spec.reset,
            set_at=EPOCH,
        )
    ]
