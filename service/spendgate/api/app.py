"""The FastAPI application: routers, error handlers, and a lifespan that owns every connection."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI
from starlette.types import ASGIApp

from .. import __version__
from ..alerts.tasks import start_alerting
from ..console import install_console
from ..errors import SpendgateError
from ..policy.reload import policy_reloader
from ..reconcile.periodic import reconcile_periodically
from ..runtime import Runtime, open_runtime
from ..settings import Settings, get_settings
from ..stopping import cancel_and_wait
from . import (
    routes_admin,
    routes_admin_lists,
    routes_alerts,
    routes_decisions,
    routes_decisions_report,
    routes_health,
    routes_metrics,
    routes_reports,
)
from .body_limit import BodyLimit
from .decision_lane import DecisionLane
from .errors import install_error_handlers

__all__ = ["create_app"]

log = logging.getLogger("spendgate")


async def _expire_reservations(runtime: Runtime) -> None:
    """Release reservations never recorded; every replica runs this, the counters make it exactly-once."""
    while True:
        await asyncio.sleep(runtime.settings.expiry_interval_seconds)
        try:
            released = await runtime.counters.expire(now=runtime.clock())
            if released:
                runtime.metrics.reservation_expiries.inc(released)
                log.info("released %d expired reservations", released)
        except SpendgateError as exc:
            log.warning("reservation expiry skipped: %s", exc.message)
        except Exception:  # noqa: BLE001 — the sweeper must outlive any one failure
            log.exception("reservation expiry failed")


class _SpendgateApp(FastAPI):
    """The app with the decision lane (decision_lane.py) in front of every middleware: a well-formed
    decision is answered without passing through the framework's stack at all."""

    def build_middleware_stack(self) -> ASGIApp:
        return DecisionLane(super().build_middleware_stack(), owner=self)


def create_app(settings: Settings | None = None) -> FastAPI:
    """Build the app. Tokens must be set (the CLI generates missing ones before calling this)."""
    settings = settings or get_settings()
    if settings.admin_token is None or settings.gateway_token is None:
        settings, _ = settings.with_generated_tokens()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        async with open_runtime(settings) as runtime:
            app.state.runtime = runtime
            tasks = [asyncio.create_task(_expire_reservations(runtime), name="spendgate-expiry")]
            if settings.reconcile_interval_seconds > 0:
                tasks.append(asyncio.create_task(reconcile_periodically(runtime), name="spendgate-reconcile"))
            reloader = policy_reloader(runtime.policy, settings, runtime.metrics)
            app.state.policy_reloader = reloader  # also without polling: /readyz reports its state
            if settings.policy_reload_seconds > 0:
                tasks.append(asyncio.create_task(reloader.run(), name="spendgate-policy-reload"))
            alerting = start_alerting(runtime)  # the outbox writer, recent decisions, webhook delivery
            try:
                yield
            finally:
                await alerting.stop()
                await cancel_and_wait(tasks)

    # FastAPI's own OpenTelemetry hooks are off: Spendgate's metrics are Prometheus (/metrics), and
    # the hooks' per-request check showed in the decision path's profile.
    app = _SpendgateApp(
        title="Spendgate", version=__version__, lifespan=lifespan,
        telemetry={"tracing": False, "metrics": False, "logs": False},
    )
    install_error_handlers(app)
    app.add_middleware(BodyLimit, max_bytes=settings.max_body_bytes)
    app.include_router(routes_health.router)
    app.include_router(routes_decisions.router)
    app.include_router(routes_admin.router)
    app.include_router(routes_admin_lists.router)
    app.include_router(routes_metrics.router)
    app.include_router(routes_reports.router)
    app.include_router(routes_alerts.router)
    app.include_router(routes_decisions_report.router)
    if settings.console:
        install_console(app)
    return app
