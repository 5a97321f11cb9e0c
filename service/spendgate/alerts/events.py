"""Which alert events a decision or a record causes — pure functions, no I/O.

Kinds: `soft_budget_crossed` and `threshold_crossed` (a record took a ledger's committed spend
from below a soft budget / a percentage of its hard limit to at or past it), `budget_exceeded`
(an authorize was refused by a hard limit), `enforcement_bypassed` (a record for a request whose
authorize was denied). Each is at most one per ledger period (and kind, threshold): `dedupe_key`
names that, and a unique constraint on it decides, on whichever replica it is decided.

What a record needs to decide crossings travels in its spend event: record annotates each
charge of `SpendEvent.charges` with the ledger's `limit` and `soft_budget` in force when the
request was authorized, and — for a record after a denial — `after_denial` with the denial's
reason codes (`annotate_charges`).
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from datetime import datetime
from typing import Any, NamedTuple

from ..ledgers import LedgerRef
from ..money import format_nanos, to_nanos
from ..tables import SpendEvent

__all__ = [
    "EVENT_KINDS",
    "AlertDraft",
    "annotate_charges",
    "denial_codes",
    "record_drafts",
    "refusal_drafts",
    "ref_of_charge_view",
]

EVENT_KINDS = ("soft_budget_crossed", "threshold_crossed", "budget_exceeded", "enforcement_bypassed")


class AlertDraft(NamedTuple):
    """An event before it is stored: what happened to which ledger, with its figures."""

    event: str
    ledger: LedgerRef
    spent: int
    limit: int | None
    soft_budget: int | None
    threshold: int | None
    at: datetime
    details: dict[str, Any]

    @property
    def dedupe_key(self) -> str:
        return f"{self.event}:{self.threshold if self.threshold is not None else '-'}:{self.ledger.id}"


class _Budget(NamedTuple):
    limit: int | None
    soft_budget: int | None


def annotate_charges(
    charges: Sequence[dict[str, Any]], budgets: Mapping[str, tuple[int | None, int | None]],
    denied: Sequence[str] | None,
) -> list[dict[str, Any]]:
    """`charges_json(...)` entries plus each ledger's `limit`/`soft_budget` (nano-USD) and, after
    a denial, `after_denial`: the denial's reason codes."""
    annotated = []
    for charge in charges:
        limit, soft = budgets.get(charge["ledger_id"], (None, None))
        extra: dict[str, Any] = {"limit": limit, "soft_budget": soft}
        if denied is not None:
            extra["after_denial"] = list(denied) or ["deny"]
        annotated.append(charge | extra)
    return annotated


def denial_codes(event: SpendEvent) -> list[str] | None:
    """The denial a recorded request ignored (its reason codes), or None when it was not denied."""
    for charge in event.charges:
        codes = charge.get("after_denial")
        if codes:
            return [str(code) for code in codes]
    return None


def _crossed(before: int, after: int, level_times_100: int, scale: int) -> bool:
    """before < level <= after, with level = level_times_100 / scale (exact integers)."""
    return before * scale < level_times_100 <= after * scale


def record_drafts(
    events: Iterable[SpendEvent], spent_after: Mapping[str, int], thresholds: Sequence[int], at: datetime
) -> list[AlertDraft]:
    """Events caused by one record transaction: crossings from the committed figures (before =
    after - what this transaction added), and one `enforcement_bypassed` per recorded denial."""
    added: dict[str, int] = defaultdict(int)
    charges: dict[str, dict[str, Any]] = {}
    drafts: list[AlertDraft] = []
    for event in events:
        for charge in event.charges:
            added[charge["ledger_id"]] += event.cost
            charges[charge["ledger_id"]] = charge
        codes = denial_codes(event)
        key_charge = next((c for c in event.charges if c["entity_type"] == "key"), None)
        if codes is not None and key_charge is not None:
            spent = spent_after.get(key_charge["ledger_id"], 0)
            drafts.append(AlertDraft(
                "enforcement_bypassed", LedgerRef.from_json(key_charge), spent, key_charge.get("limit"),
                key_charge.get("soft_budget"), None, at,
                {"request_id": event.request_id, "denial": {"reasons": codes}, "cost": format_nanos(event.cost)},
            ))
    for ledger_id in sorted(charges):
        if ledger_id not in spent_after:
            continue
        charge = charges[ledger_id]
        after = spent_after[ledger_id]
        before = after - added[ledger_id]
        budget = _Budget(charge.get("limit"), charge.get("soft_budget"))
        ref = LedgerRef.from_json(charge)
        if budget.soft_budget is not None and _crossed(before, after, budget.soft_budget, 1):
            drafts.append(AlertDraft("soft_budget_crossed", ref, after, budget.limit, budget.soft_budget, None, at, {}))
        if budget.limit is not None and budget.limit > 0:
            for percent in thresholds:
                if _crossed(before, after, budget.limit * percent, 100):
                    drafts.append(
                        AlertDraft("threshold_crossed", ref, after, budget.limit, budget.soft_budget, percent, at, {})
                    )
    return drafts


def ref_of_charge_view(charge: Mapping[str, Any]) -> LedgerRef:
    """The ledger of one `charges` entry of an authorize answer."""
    def instant(value: Any) -> datetime | None:
        return datetime.fromisoformat(str(value).replace("Z", "+00:00")) if value else None

    start = instant(charge["period_start"])
    assert start is not None
    return LedgerRef(charge["entity"]["type"], charge["entity"]["id"], charge.get("window"), start,
                     instant(charge.get("resets_at")))


def _nanos(value: Any) -> int | None:
    try:
        return None if value is None else to_nanos(value)
    except ValueError:
        return None


def refusal_drafts(body: Mapping[str, Any], at: datetime) -> list[AlertDraft]:
    """`budget_exceeded` for each ledger an authorize answer refused on (a deny's reasons)."""
    if body.get("decision") != "deny":
        return []
    wanted = {r.get("ledger"): r for r in body.get("reasons") or () if r.get("code") == "budget_exceeded"}
    wanted.pop(None, None)
    if not wanted:
        return []
    refused = [ledger for ledger in wanted if isinstance(ledger, str)]
    drafts = []
    for charge in body.get("charges") or ():
        # Its ledger id up to the period (LedgerRef.id): only a charge some reason may name has its
        # period parsed — a denial names one ledger or two of the several it charges.
        entity = charge["entity"]
        head = f"{entity['type']}:{entity['id']}:{charge.get('window') or '-'}:"
        if not any(ledger.startswith(head) for ledger in refused):
            continue
        ref = ref_of_charge_view(charge)
        reason = wanted.get(ref.id)
        if reason is None:
            continue
        spent = _nanos(reason.get("spent"))
        drafts.append(AlertDraft(
            "budget_exceeded", ref, spent if spent is not None else _nanos(charge.get("spent")) or 0,
            _nanos(reason.get("limit")) if reason.get("limit") is not None else _nanos(charge.get("limit")),
            _nanos(charge.get("soft_budget")), None, at,
            {"request_id": body.get("request_id"), "message": reason.get("message")},
        ))
    return drafts
