"""The `spendgate` command: serve, migrate, reconcile, and the policy and maintenance tools."""

from __future__ import annotations

import argparse
import asyncio
import logging
import sys
from collections.abc import Sequence

from pydantic import ValidationError

from .settings import Settings, get_settings

__all__ = ["main"]


def _settings_or_exit() -> Settings:
    try:
        return get_settings()
    except ValidationError as exc:
        lines = []
        for error in exc.errors():
            name = "SPENDGATE_" + "_".join(str(p) for p in error["loc"]).upper() if error["loc"] else "configuration"
            lines.append(f"  {name}: {str(error['msg']).removeprefix('Value error, ')}")
        sys.exit("spendgate: invalid configuration\n" + "\n".join(lines))


def _serve(args: argparse.Namespace) -> int:
    import uvicorn

    from .api import create_app

    settings, generated = _settings_or_exit().with_generated_tokens()
    for name in generated:
        secret = getattr(settings, name).get_secret_value()
        # Printed once, to the terminal only, so a first-time user can call the API; never logged.
        print(f"SPENDGATE_{name.upper()}={secret}  (generated; set it in the environment to keep it)", file=sys.stderr)
    app = create_app(settings)
    uvicorn.run(app, host=args.host, port=args.port, log_level=args.log_level, access_log=False)
    return 0


def _migrate(_args: argparse.Namespace) -> int:
    from .db import create_engine
    from .migrate import upgrade

    settings = _settings_or_exit()

    async def run() -> None:
        engine = create_engine(settings)
        try:
            await upgrade(engine)
        finally:
            await engine.dispose()

    asyncio.run(run())
    print("spendgate: database schema is up to date", file=sys.stderr)
    return 0


def _reconcile(args: argparse.Namespace) -> int:
    from .errors import SpendgateError
    from .reconcile import ReconcileReport, open_reconciler, render_json, render_text

    settings = _settings_or_exit()

    async def run() -> ReconcileReport:
        async with open_reconciler(settings) as reconciler:
            return await reconciler.run(fix=args.fix, fix_ahead=args.fix)

    try:
        report = asyncio.run(run())
    except SpendgateError as exc:
        print(f"spendgate reconcile: {exc.message}", file=sys.stderr)
        return 2
    print(render_json(report) if args.format == "json" else render_text(report))
    return report.exit_code


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="spendgate", description="Budget admission and spend attribution for LLM traffic.")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    serve = commands.add_parser("serve", help="run the HTTP service")
    serve.add_argument("--host", default="127.0.0.1")
    serve.add_argument("--port", type=int, default=8080)
    serve.add_argument("--log-level", default="info", choices=["critical", "error", "warning", "info", "debug"])
    serve.set_defaults(run=_serve)

    migrate = commands.add_parser("migrate", help="bring the database schema up to date")
    migrate.set_defaults(run=_migrate)

    reconcile = commands.add_parser(
        "reconcile",
        help="compare every hot counter with the ledger; --fix repairs the drift",
        description="Compare every live counter (spent, reserved) with the ledger and the open holds, "
        "print the drift per ledger and in total. Exit status: 0 no drift (or all of it repaired), "
        "1 drift remains, 2 could not run.",
    )
    reconcile.add_argument("--fix", action="store_true", help="repair the drift atomically (safe under live traffic)")
    reconcile.add_argument("--format", choices=["text", "json"], default="text")
    reconcile.set_defaults(run=_reconcile)

    from .policy.cli import add_policy_commands

    add_policy_commands(commands)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    args = build_parser().parse_args(argv)
    return int(args.run(args) or 0)


if __name__ == "__main__":
    sys.exit(main())
