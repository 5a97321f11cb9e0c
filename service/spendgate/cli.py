"""The `spendgate` command: serve, migrate, reconcile, and the policy and maintenance tools.

Start-up failures the operator can fix (a database or Redis that cannot be reached, policies that do
not compile, OPA refusing them) end the command with one line naming the cause and a non-zero exit
status, never a traceback; a traceback is left for what is a bug.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import sys
from collections.abc import Sequence
from contextlib import AsyncExitStack
from typing import TYPE_CHECKING

from pydantic import ValidationError

from . import __version__
from .errors import SpendgateError
from .settings import Settings, get_settings

if TYPE_CHECKING:
    from fastapi import FastAPI
    from starlette.types import Receive, Scope, Send

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


def _cannot_start(command: str, exc: SpendgateError) -> int:
    print(f"spendgate {command}: cannot start: {exc.message}", file=sys.stderr)
    return 1


class _StartupGuard:
    """The ASGI app uvicorn runs: the service, with its lifespan driven here.

    Starlette reports a failed start-up to uvicorn with the formatted traceback, which uvicorn logs.
    Driving the lifespan here keeps a `SpendgateError` (the operator's to fix) for `_serve` to print
    as one line; anything else still propagates to uvicorn, traceback and all, as the bug it is.
    """

    def __init__(self, app: FastAPI) -> None:
        self.app = app
        self.failure: SpendgateError | None = None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "lifespan":
            await self.app(scope, receive, send)
            return
        await receive()  # lifespan.startup
        async with AsyncExitStack() as stack:
            try:
                await stack.enter_async_context(self.app.router.lifespan_context(self.app))
            except SpendgateError as exc:
                self.failure = exc
                await send({"type": "lifespan.startup.failed", "message": ""})
                return
            await send({"type": "lifespan.startup.complete"})
            await receive()  # lifespan.shutdown
        await send({"type": "lifespan.shutdown.complete"})


def _serve(args: argparse.Namespace) -> int:
    import uvicorn

    from .api import create_app

    settings, generated = _settings_or_exit().with_generated_tokens()
    for name in generated:
        secret = getattr(settings, name).get_secret_value()
        # Printed once, to the terminal only, so a first-time user can call the API; never logged.
        print(f"SPENDGATE_{name.upper()}={secret}  (generated; set it in the environment to keep it)", file=sys.stderr)
    guard = _StartupGuard(create_app(settings))
    try:
        uvicorn.run(guard, host=args.host, port=args.port, log_level=args.log_level, access_log=False)
    except SystemExit:  # uvicorn's exit after a failed start-up
        if guard.failure is None:
            raise
    if guard.failure is not None:
        return _cannot_start("serve", guard.failure)
    return 0


def _migrate(_args: argparse.Namespace) -> int:
    from .db import create_engine
    from .migrate import upgrade
    from .runtime import reaching_database

    settings = _settings_or_exit()

    async def run() -> None:
        engine = create_engine(settings)
        try:
            async with reaching_database(settings):
                await upgrade(engine)
        finally:
            await engine.dispose()

    try:
        asyncio.run(run())
    except SpendgateError as exc:
        return _cannot_start("migrate", exc)
    print("spendgate: database schema is up to date", file=sys.stderr)
    return 0


def _reconcile(args: argparse.Namespace) -> int:
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
    parser.add_argument("--version", action="version", version=f"spendgate {__version__}")
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
    logging.getLogger("alembic.runtime.plugins").setLevel(logging.WARNING)  # 7 "setup plugin" lines per run
    args = build_parser().parse_args(argv)
    try:
        code = int(args.run(args) or 0)
        sys.stdout.flush()  # inside the try: a reader gone away (`| head`) is met here, not at exit
    except BrokenPipeError:
        # As the Python docs advise ("Note on SIGPIPE"): point stdout at /dev/null so the
        # interpreter's last flush cannot fail again, and stop quietly.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 1
    except KeyboardInterrupt:
        return 130
    return code


if __name__ == "__main__":
    sys.exit(main())
