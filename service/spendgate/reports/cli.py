"""`spendgate report`: the spend report from the ledger database, straight (no HTTP service needed).

Same query and rendering as `GET /v1/reports/spend`, so the CLI and the API always agree.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from collections.abc import Mapping
from typing import Any

from sqlalchemy import inspect

from ..db import create_engine, session_factory
from ..errors import SpendgateError
from ..runtime import reaching_database, redacted
from ..settings import Settings
from ..tables import utcnow
from .query import SpendReport, parse_query, spend_report
from .render import report_csv, report_json, report_table

__all__ = ["add_report_command", "run_report"]


async def run_report(settings: Settings, params: Mapping[str, str | None]) -> SpendReport:
    """Connect with `settings`, read one report, disconnect."""
    query = parse_query(params, now=utcnow())
    engine = create_engine(settings)
    try:
        async with reaching_database(settings), engine.connect() as conn:
            migrated = await conn.run_sync(lambda sync: inspect(sync).has_table("spend_rollups"))
        if not migrated:
            raise SpendgateError(
                f"{redacted(settings.database_url)} has no spend rollups yet; run `spendgate migrate` first"
            )
        async with session_factory(engine)() as session:
            return await spend_report(session, query)
    finally:
        await engine.dispose()


def render(report: SpendReport, fmt: str) -> str:
    if fmt == "json":
        return json.dumps(report_json(report), indent=2)
    if fmt == "csv":
        return "".join(report_csv(report)).rstrip("\n")
    return report_table(report)


def _report(args: argparse.Namespace) -> int:
    from ..cli import _settings_or_exit

    params: dict[str, str | None] = {
        "from": args.from_, "to": args.to, "group_by": args.by, "entity": args.entity, "key": args.key,
        "model": args.model, "tag": args.tag, "end_user": args.end_user,
    }
    try:
        report = asyncio.run(run_report(_settings_or_exit(), params))
    except SpendgateError as exc:
        print(f"spendgate report: {exc.message}", file=sys.stderr)
        return 2
    print(render(report, args.format))
    return 0


def add_report_command(commands: Any) -> None:
    report = commands.add_parser(
        "report",
        help="spend per entity, model, key, outcome and time, exactly as the ledgers say",
        description="Sum the spend rollups in the ledger database (SPENDGATE_DATABASE_URL), as "
        "GET /v1/reports/spend does. Times are UTC whole hours or dates; --to is exclusive.",
    )
    report.add_argument("--entity", help="TYPE:ID whose charges to report, e.g. team:search (default: every request)")
    report.add_argument("--by", help="comma list of entity, model, key, outcome and one of hour, day, week, month")
    report.add_argument("--from", dest="from_", help="start (default: --to minus 30 days)")
    report.add_argument("--to", help="end, exclusive (default: the next whole hour)")
    report.add_argument("--key", help="only requests made with this key id")
    report.add_argument("--model", help="only requests for this model")
    report.add_argument("--tag", help="charges to this tag (instead of --entity)")
    report.add_argument("--end-user", dest="end_user", help="charges to this end user (instead of --entity)")
    report.add_argument("--format", choices=["table", "csv", "json"], default="table")
    report.set_defaults(run=_report)
