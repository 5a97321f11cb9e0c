"""What a reconcile run found: one row per drifting ledger, the totals, and their two renderings."""

from __future__ import annotations

import json
from typing import Any, NamedTuple

from ..money import format_nanos

__all__ = ["LedgerDrift", "ReconcileReport", "render_text", "render_json"]

#: Problems a ledger's counter can have, as reported:
#:   spent    — another `spent` than the ledger at the same version (a corrupted cache)
#:   behind   — an older version than the ledger (a record whose counter update was lost)
#:   ahead    — a newer version than the ledger (the ledger was restored or edited by hand)
#:   reserved — `reserved` differs from the open holds naming the ledger (a leaked or lost
#:              reservation), or a hold was taken on an earlier incarnation of the hash
#:   missing  — no counter while open holds name the ledger (their reservations are not counted)


class LedgerDrift(NamedTuple):
    ledger_id: str
    problems: tuple[str, ...]
    #: None when the counter (the Redis hash) is missing.
    counter_spent: int | None
    ledger_spent: int
    counter_version: int | None
    ledger_version: int
    #: None when the counter is missing.
    reserved: int | None
    #: Sum of the open holds (Redis) or open reservations (SQL) naming the ledger.
    held: int
    #: Part of `held` on holds taken on an earlier incarnation of the hash (Redis only).
    orphaned: int
    fixed: bool

    @property
    def spent_drift(self) -> int | None:
        """counter − ledger (positive: the counter overstates spend); None when missing."""
        return None if self.counter_spent is None else self.counter_spent - self.ledger_spent

    @property
    def reserved_drift(self) -> int:
        """reserved − held (positive: a leaked reservation; negative: a lost one)."""
        return (self.reserved or 0) - self.held

    def to_json(self) -> dict[str, Any]:
        def money(value: int | None) -> str | None:
            return None if value is None else _signed(value)

        return {
            "ledger_id": self.ledger_id,
            "problems": list(self.problems),
            "counter_spent": money(self.counter_spent),
            "ledger_spent": money(self.ledger_spent),
            "spent_drift": money(self.spent_drift),
            "counter_version": self.counter_version,
            "ledger_version": self.ledger_version,
            "reserved": money(self.reserved),
            "held": money(self.held),
            "orphaned": money(self.orphaned),
            "reserved_drift": money(self.reserved_drift),
            "fixed": self.fixed,
        }


class ReconcileReport(NamedTuple):
    #: "redis" or "sql".
    counters: str
    #: Ledgers compared (every live counter, plus ledgers named only by open holds).
    checked: int
    open_holds: int
    drifts: tuple[LedgerDrift, ...]
    #: Whether this run was asked to repair.
    fix: bool

    @property
    def spent_drift_total(self) -> int:
        """Sum of |spent drift| over the drifting ledgers (nano-USD)."""
        return sum(abs(d.spent_drift or 0) for d in self.drifts)

    @property
    def reserved_drift_total(self) -> int:
        return sum(abs(d.reserved_drift) for d in self.drifts)

    @property
    def fixed(self) -> int:
        return sum(1 for d in self.drifts if d.fixed)

    @property
    def unfixed(self) -> int:
        return len(self.drifts) - self.fixed

    @property
    def exit_code(self) -> int:
        """0: nothing drifts, or all of it was repaired; 1: drift remains."""
        return 1 if self.unfixed else 0

    def to_json(self) -> dict[str, Any]:
        return {
            "counters": self.counters,
            "checked": self.checked,
            "open_holds": self.open_holds,
            "fix": self.fix,
            "drifts": [d.to_json() for d in self.drifts],
            "total": {
                "drifting": len(self.drifts),
                "fixed": self.fixed,
                "spent_drift": format_nanos(self.spent_drift_total),
                "reserved_drift": format_nanos(self.reserved_drift_total),
            },
        }


def _signed(nanos: int) -> str:
    return ("-" if nanos < 0 else "") + format_nanos(abs(nanos))


def _plus(nanos: int | None) -> str:
    if nanos is None:
        return "-"
    return ("+" if nanos > 0 else "") + _signed(nanos)


def render_json(report: ReconcileReport) -> str:
    return json.dumps(report.to_json(), indent=2)


def render_text(report: ReconcileReport) -> str:
    """A table of the drifting ledgers and a total line, for a terminal."""
    lines: list[str] = []
    if report.drifts:
        header = ("ledger", "counter spent", "ledger spent", "spent drift", "reserved", "held", "reserved drift",
                  "problems", "fixed" if report.fix else "")
        rows = [
            (
                d.ledger_id,
                "missing" if d.counter_spent is None else _signed(d.counter_spent),
                _signed(d.ledger_spent),
                _plus(d.spent_drift),
                "missing" if d.reserved is None else _signed(d.reserved),
                _signed(d.held) + (f" ({_signed(d.orphaned)} orphaned)" if d.orphaned else ""),
                _plus(d.reserved_drift),
                ",".join(d.problems),
                ("yes" if d.fixed else "NO") if report.fix else "",
            )
            for d in report.drifts
        ]
        widths = [max(len(row[i]) for row in (header, *rows)) for i in range(len(header))]
        for row in (header, *rows):
            lines.append("  ".join(cell.ljust(widths[i]) for i, cell in enumerate(row)).rstrip())
        lines.append("")
    verdict = "no drift" if not report.drifts else (
        f"{len(report.drifts)} drifting"
        + (f", {report.fixed} fixed" if report.fix else "")
        + (f", {report.unfixed} NOT fixed" if report.fix and report.unfixed else "")
    )
    lines.append(
        f"total: {verdict}; |spent drift| {format_nanos(report.spent_drift_total)} USD, "
        f"|reserved drift| {format_nanos(report.reserved_drift_total)} USD "
        f"({report.checked} ledgers checked on {report.counters} counters, "
        f"{report.open_holds} open hold{'' if report.open_holds == 1 else 's'})"
    )
    return "\n".join(lines)
