"""Start-up wiring for alerts and the recent-decisions store: the record-transaction writer, and
each replica's two background tasks (the writer of what authorize hands over, the webhook worker)."""

from __future__ import annotations

import asyncio
import contextlib
import logging

from ..decision_store import BackgroundWriter, SqliteBatchWriter
from ..runtime import Runtime
from ..stopping import cancel_and_wait
from .config import AlertConfig
from .delivery import DeliveryWorker
from .recording import AlertOutboxWriter

__all__ = ["Alerting", "start_alerting"]

log = logging.getLogger("spendgate.alerts")


class Alerting:
    """The running background tasks; `stop()` ends them in order at shutdown."""

    def __init__(self, runtime: Runtime, writer: BackgroundWriter, worker: DeliveryWorker | None) -> None:
        self._runtime = runtime
        self._writer = writer
        self._stopping = asyncio.Event()
        self._writing = asyncio.create_task(writer.run(), name="spendgate-background-writer")
        self._delivering = (
            asyncio.create_task(worker.run(self._stopping), name="spendgate-alert-delivery") if worker else None
        )

    async def stop(self, timeout: float = 2.0) -> None:
        """Write what authorize queued, let the delivery worker finish its round (a database call
        cut short by cancellation can leave a pooled connection mid-operation), then cancel."""
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(self._writer.drain(), timeout)
        self._stopping.set()
        tasks = [task for task in (self._writing, self._delivering) if task is not None]
        if self._delivering is not None:
            await asyncio.wait([self._delivering], timeout=timeout)
        await cancel_and_wait(tasks)


def start_alerting(runtime: Runtime) -> Alerting:
    """Hook the outbox into record transactions and start the background tasks."""
    settings = runtime.settings
    config = AlertConfig.from_settings(settings)
    runtime.ledgers.in_transaction.append(
        AlertOutboxWriter(thresholds=config.thresholds, clock=lambda: runtime.clock())
    )
    sink = None
    if runtime.sqlite_writer is not None:  # the embedded default: one writer for the file (sqlite_writes.py)
        sink = SqliteBatchWriter(runtime.sqlite_writer)
    runtime.background = BackgroundWriter(
        runtime.sessions, max_rows=settings.decision_store_max_rows,
        max_age_seconds=settings.decision_store_max_age_seconds, clock=lambda: runtime.clock(),
        dropped=runtime.metrics.background_dropped, sink=sink,
    )
    worker = None
    if config.webhooks:
        worker = DeliveryWorker(
            runtime.sessions, config=config, settings=settings, clock=lambda: runtime.clock(),
            deliveries=runtime.metrics.alert_deliveries,
        )
        if config.secret is None:
            log.warning("alert webhooks are sent unsigned: set SPENDGATE_ALERT_WEBHOOK_SECRET")
    return Alerting(runtime, runtime.background, worker)
