"""A spend report as the API's JSON body, as CSV lines, or as an aligned text table (CLI)."""

from __future__ import annotations

import csv
import io
from collections.abc import Iterator
from typing import Any

from ..money import format_nanos
from .query import SpendReport, Totals

__all__ = ["report_json", "report_csv", "report_table"]

_MEASURES = ("spend", "requests", "failures")


def _iso(moment: Any) -> str:
    return moment.strftime("%Y-%m-%dT%H:%M:%SZ")


def _measures(totals: Totals) -> dict[str, Any]:
    return {"spend": format_nanos(totals.spend), "requests": totals.requests, "failures": totals.failures}


def report_json(report: SpendReport) -> dict[str, Any]:
    """The `GET /v1/reports/spend` body."""
    names = report.query.group_by
    return {
        "from": _iso(report.query.start),
        "to": _iso(report.query.end),
        "group_by": list(names),
        "rows": [dict(zip(names, row.groups)) | _measures(row.totals) for row in report.rows],
        "total": _measures(report.total),
    }


def report_csv(report: SpendReport) -> Iterator[str]:
    """CSV: a header row, then one line per row (no total line; an absent label is empty)."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow([*report.query.group_by, *_MEASURES])
    yield buffer.getvalue()
    for row in report.rows:
        buffer.seek(0)
        buffer.truncate()
        measures = _measures(row.totals)
        writer.writerow([*("" if label is None else label for label in row.groups), *(measures[m] for m in _MEASURES)])
        yield buffer.getvalue()


def report_table(report: SpendReport) -> str:
    """Aligned columns, labels left and figures right, a TOTAL line last; money exact."""
    names = report.query.group_by
    header = [*names, *_MEASURES]
    lines: list[list[str]] = []
    for row in report.rows:
        measures = _measures(row.totals)
        lines.append([*("-" if label is None else label for label in row.groups), *(str(measures[m]) for m in _MEASURES)])
    total = _measures(report.total)
    footer = ["TOTAL", *([""] * (len(names) - 1)), *(str(total[m]) for m in _MEASURES)] if names else [
        str(total[m]) for m in _MEASURES
    ]
    widths = [max(len(cells[i]) for cells in [header, *lines, footer]) for i in range(len(header))]

    def line(cells: list[str]) -> str:
        return "  ".join(
            cell.ljust(widths[i]) if i < len(names) else cell.rjust(widths[i]) for i, cell in enumerate(cells)
        ).rstrip()

    title = f"spend {_iso(report.query.start)} .. {_iso(report.query.end)}"
    if report.query.entity:
        title += f"  {report.query.entity[0]}:{report.query.entity[1]}"
    for name, value in (("key", report.query.key), ("model", report.query.model)):
        if value is not None:
            title += f"  {name}={value}"
    rule = "  ".join("-" * width for width in widths)
    return "\n".join([title, line(header), rule, *(line(cells) for cells in lines), rule, line(footer)])
