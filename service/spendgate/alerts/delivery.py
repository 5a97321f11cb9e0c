"""The delivery worker: posts due outbox events to the webhooks, with retries — never on the
decision path (it is a background task of each replica, and it only reads the outbox).

At least once: an event is marked `delivered` only after every webhook answered 2xx; a worker
that dies mid-delivery leaves its lease to run out, and another worker sends the event again.
Receivers dedupe by the event `id`. A failed attempt is retried after
min(SPENDGATE_ALERT_RETRY_BASE_SECONDS × 2^(attempts-1), SPENDGATE_ALERT_RETRY_MAX_SECONDS); after
SPENDGATE_ALERT_MAX_ATTEMPTS attempts the event is `failed` (listed by GET /v1/admin/alerts).
A webhook that already answered 2xx is not sent the event again on a retry for the others.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from datetime import datetime, timedelta
from typing import Any

import httpx
from prometheus_client import Counter

from ..db import SessionFactory, wrap_database_errors
from ..errors import SpendgateError
from ..settings import Settings
from .config import AlertConfig, Webhook
from .outbox import claim_due, finish, new_claim
from .payload import SIGNATURE_HEADER, body_for, event_json, signature

__all__ = ["DeliveryWorker", "retry_delay"]

log = logging.getLogger("spendgate.alerts")


def retry_delay(attempts: int, *, base: float, cap: float) -> float:
    """Seconds before the next attempt after `attempts` failed ones (exponential, capped)."""
    return min(base * 2 ** max(attempts - 1, 0), cap)


class DeliveryWorker:
    def __init__(
        self, sessions: SessionFactory, *, config: AlertConfig, settings: Settings, clock: Callable[[], datetime],
        deliveries: Counter | None = None,
    ) -> None:
        self._sessions = sessions
        self._config = config
        self._settings = settings
        self._clock = clock
        self._deliveries = deliveries

    async def run(self, stopping: asyncio.Event | None = None) -> None:
        """Deliver until `stopping` is set (checked between rounds: a database call is never cut
        short by cancellation, which can leave a pooled connection mid-operation)."""
        stopping = stopping or asyncio.Event()
        async with httpx.AsyncClient(timeout=self._settings.alert_webhook_timeout_seconds) as client:
            while not stopping.is_set():
                try:
                    busy = await self.deliver_due(client)
                except SpendgateError as exc:
                    log.warning("alert delivery skipped: %s", exc.message)
                    busy = 0
                except Exception:  # noqa: BLE001 — the worker must outlive any one failure
                    log.exception("alert delivery failed")
                    busy = 0
                if not busy:
                    with contextlib.suppress(asyncio.TimeoutError):
                        await asyncio.wait_for(stopping.wait(), self._settings.alert_poll_seconds)

    async def deliver_due(self, client: httpx.AsyncClient) -> int:
        """Claim the due events and deliver each; returns how many were claimed."""
        claim = new_claim()
        async with wrap_database_errors(), self._sessions() as session:
            rows = await claim_due(
                session, now=self._clock(), lease_seconds=self._settings.alert_lease_seconds, claim=claim
            )
        for row in rows:
            await self._deliver(client, row, claim)
        return len(rows)

    async def _post(self, client: httpx.AsyncClient, webhook: Webhook, event: dict[str, Any]) -> str | None:
        """None on a 2xx answer, else what went wrong (kept as the event's last_error)."""
        body = body_for(event, webhook.format or self._config.default_format)
        headers = {"content-type": "application/json", "x-spendgate-event": event["event"],
                   "x-spendgate-event-id": event["id"]}
        if self._config.secret is not None:
            headers[SIGNATURE_HEADER] = signature(self._config.secret, body)
        try:
            response = await client.post(webhook.url, content=body, headers=headers)
        except httpx.HTTPError as exc:
            return f"{webhook.label}: {type(exc).__name__}"
        if 200 <= response.status_code < 300:
            return None
        return f"{webhook.label}: HTTP {response.status_code}"

    async def _deliver(self, client: httpx.AsyncClient, row: dict[str, Any], claim: str) -> None:
        event = event_json(row)
        delivered = list(row["delivered_to"] or ())
        errors = []
        for webhook in self._config.webhooks:
            if webhook.label in delivered:
                continue
            problem = await self._post(client, webhook, event)
            if problem is None:
                delivered.append(webhook.label)
            else:
                errors.append(problem)
        now = self._clock()
        values: dict[str, Any] = {"delivered_to": delivered}
        if not errors:
            values |= {"status": "delivered", "delivered_at": now, "last_error": None}
            result = "delivered"
        elif row["attempts"] >= self._settings.alert_max_attempts:
            values |= {"status": "failed", "last_error": "; ".join(errors)[:500]}
            result = "failed"
        else:
            delay = retry_delay(
                row["attempts"], base=self._settings.alert_retry_base_seconds, cap=self._settings.alert_retry_max_seconds
            )
            values |= {"last_error": "; ".join(errors)[:500], "next_attempt_at": now + timedelta(seconds=delay)}
            result = "retry"
        async with wrap_database_errors(), self._sessions() as session:
            owned = await finish(session, event_id=row["id"], claim=claim, values=values)
        if not owned:
            log.warning("alert %s: the lease ran out mid-delivery; another worker owns it now", row["id"])
        elif self._deliveries is not None:
            self._deliveries.labels(result).inc()
