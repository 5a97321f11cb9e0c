"""The `spendgate` command: serve, migrate, reconcile, and the policy and maintenance tools.

Start-up failures the operator can fix (a database or Redis that cannot be reached, policies that do
not compile, OPA refusing them) end the command with one line naming the cause and a non-zero exit
status, never a traceback; a traceback is left for what is a bug.
"""

from __future__ import annotations

import argparse
import asyncio
import atexit
import contextlib
import logging
import os
import sys
from collections.abc import Callable, Sequence
from contextlib import AsyncExitStack
from pathlib import Path
from typing import TYPE_CHECKING

from pydantic import ValidationError

from . import __version__
from .errors import PolicyError, SpendgateError
from .heap import settle_after_startup
from .settings import Settings, get_settings

if TYPE_CHECKING:
    from fastapi import FastAPI
    from starlette.types import Receive, Scope, Send

__all__ = ["main", "worker_app"]


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
    """One line naming the cause; a longer message (a compile error's source excerpt) is a command away."""
    first, *rest = exc.message.strip().splitlines() or [""]
    more = "; run `spendgate policy check` for the full message" if rest and isinstance(exc, PolicyError) else ""
    print(f"spendgate {command}: cannot start: {first.rstrip(';: ')}{more}", file=sys.stderr)
    return 1


class _StartupGuard:
    """The ASGI app uvicorn runs: the service, with its lifespan driven here.

    Starlette reports a failed start-up to uvicorn with the formatted traceback, which uvicorn logs.
    Driving the lifespan here keeps a `SpendgateError` (the operator's to fix) for `_serve` to print
    as one line; anything else still propagates to uvicorn, traceback and all, as the bug it is.
    """

    def __init__(self, app: FastAPI, on_failure: Callable[[SpendgateError], object] | None = None) -> None:
        self.app = app
        self.on_failure = on_failure
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
                if self.on_failure is not None:
                    self.on_failure(exc)
                await send({"type": "lifespan.startup.failed", "message": ""})
                return
            settle_after_startup()  # the collector off the decision path (heap.py)
            await send({"type": "lifespan.startup.complete"})
            await receive()  # lifespan.shutdown
        await send({"type": "lifespan.shutdown.complete"})


#: Where generated tokens go when stderr is not a terminal (a container or service log keeps stderr).
GENERATED_TOKENS_FILE = Path(".spendgate-tokens")


def _hand_over_generated_tokens(settings: Settings, generated: Sequence[str]) -> None:
    """Show freshly generated tokens to the person starting the service, and to no log.

    On a terminal they are printed once. Elsewhere stderr usually ends up in a log (Docker's log
    driver, journald), so they go to a file only the current user can read, and stderr names the file.
    """
    lines = [f"SPENDGATE_{name.upper()}={getattr(settings, name).get_secret_value()}" for name in generated]
    if sys.stderr.isatty():
        for line in lines:
            print(f"{line}  (generated; set it in the environment to keep it)", file=sys.stderr)
        return
    path = GENERATED_TOKENS_FILE.absolute()
    try:
        # A fresh file, never one planted beforehand (its mode kept) nor a symlink followed elsewhere.
        with contextlib.suppress(FileNotFoundError):
            os.unlink(path)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
        with os.fdopen(fd, "w") as out:
            out.write("\n".join(lines) + "\n")
    except OSError as exc:
        sys.exit(
            f"spendgate serve: cannot start: SPENDGATE_ADMIN_TOKEN and SPENDGATE_GATEWAY_TOKEN are not set, and the "
            f"generated ones could not be written to {path} ({exc.strerror}); set both in the environment"
        )
    print(f"spendgate serve: generated tokens written to {path} (readable by you only); "
          "set SPENDGATE_ADMIN_TOKEN and SPENDGATE_GATEWAY_TOKEN to choose your own", file=sys.stderr)


def _worker_count(requested: int | None, settings: Settings) -> int:
    """Worker processes for `serve`: as asked, else one per core — but one on SQLite.

    Every replica invariant holds between workers as between replicas: all shared state is in the
    database or Redis. SQLite, though, has one writer for the whole file: more processes only queue
    on its lock (and time out on it), so the embedded default always runs one.
    """
    if settings.is_postgres:
        return max(requested or os.cpu_count() or 1, 1)
    if requested is not None and requested > 1:
        print(f"spendgate serve: starting 1 worker, not {requested}: the embedded SQLite database has one "
              "writer; set SPENDGATE_DATABASE_URL to PostgreSQL to use several workers", file=sys.stderr)
    return 1


def _die_with_supervisor() -> None:
    """A worker dies with the process that started it (Linux): a killed `serve` leaves no worker behind
    still answering on its port, as one process would not."""
    if sys.platform == "linux":
        import ctypes
        import signal

        ctypes.CDLL(None).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG


def worker_app() -> _StartupGuard:
    """The app factory uvicorn imports in each worker of `serve --workers N` (settings from the environment)."""
    _die_with_supervisor()
    _configure_logging()  # as `main` does in a single-process serve (the decision log is INFO)
    from .api import create_app

    return _StartupGuard(create_app(_settings_or_exit()), on_failure=lambda exc: _cannot_start("serve", exc))


def _serve_workers(args: argparse.Namespace, settings: Settings, generated: list[str], workers: int) -> int:
    """Several uvicorn workers, each with its own lifespan (connections, sweeper, reloader)."""
    import uvicorn

    from .runtime import open_runtime

    async def check() -> None:
        async with open_runtime(settings):  # policies, database (migrated once, here), Redis
            pass

    try:
        asyncio.run(check())  # the operator's mistakes as one line, before any worker starts
    except SpendgateError as exc:
        return _cannot_start("serve", exc)
    for name in generated:  # the workers read the settings from the environment: the same tokens
        os.environ[f"SPENDGATE_{name.upper()}"] = getattr(settings, name).get_secret_value()
    uvicorn.run("spendgate.cli:worker_app", factory=True, workers=workers, host=args.host, port=args.port,
                log_level=args.log_level, access_log=False)
    return 0


def _serve(args: argparse.Namespace) -> int:
    import uvicorn

    from .api import create_app

    settings, generated = _settings_or_exit().with_generated_tokens()
    if generated:
        _hand_over_generated_tokens(settings, generated)
    workers = _worker_count(args.workers, settings)
    if workers > 1:
        return _serve_workers(args, settings, generated, workers)
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
    serve.add_argument("--workers", type=int, default=None, metavar="N",
                       help="worker processes (default: one per core; always 1 on SQLite)")
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

    from .reports.cli import add_report_command

    add_report_command(commands)

    from .policy.cli import add_policy_commands

    add_policy_commands(commands)

    from .pricing.cli import add_prices_commands

    add_prices_commands(commands)
    return parser


_LOG_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


def _configure_logging() -> None:
    logging.basicConfig(level=logging.INFO, format=_LOG_FORMAT)
    logging.getLogger("alembic.runtime.plugins").setLevel(logging.WARNING)  # 7 "setup plugin" lines per run
    _decision_log_off_the_loop()


def _decision_log_off_the_loop() -> None:
    """The decision log (a line per decision, spendgate.decisions) is formatted and written to
    stderr by a thread, a batch per write (log_writer.py): the request only queues the record.
    Queued lines are written out at exit."""
    from .decisions.observed import DECISION_LOGGER
    from .log_writer import BatchedStreamHandler

    decisions = logging.getLogger(DECISION_LOGGER)
    if any(isinstance(handler, BatchedStreamHandler) for handler in decisions.handlers):
        return  # configured already (a worker process calls this once more)
    writer = BatchedStreamHandler(_LOG_FORMAT)
    atexit.register(writer.flush)
    decisions.addHandler(writer)
    decisions.propagate = False


def main(argv: Sequence[str] | None = None) -> int:
    _configure_logging()
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
