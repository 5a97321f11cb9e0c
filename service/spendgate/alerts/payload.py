"""What a webhook receives: the event as JSON (or Slack's `{"text"}`), signed with HMAC-SHA256.

The signature covers the exact body bytes: `X-Spendgate-Signature: sha256=<hex>` where hex is
HMAC-SHA256(SPENDGATE_ALERT_WEBHOOK_SECRET, body). A receiver recomputes it over the raw body it
read and compares in constant time (deploy/webhook_receiver.py does).
"""

from __future__ import annotations

import hashlib
import hmac
import json
from collections.abc import Mapping
from datetime import datetime
from typing import Any

from ..money import format_nanos

__all__ = ["event_json", "body_for", "signature", "iso", "SIGNATURE_HEADER"]

SIGNATURE_HEADER = "X-Spendgate-Signature"


def iso(value: datetime | None) -> str | None:
    """As the decision routes write times: ISO 8601 with a Z."""
    return value.isoformat().replace("+00:00", "Z") if value is not None else None


def _money(value: int | None) -> str | None:
    return None if value is None else format_nanos(value)


def event_json(row: Mapping[str, Any]) -> dict[str, Any]:
    """The public shape of an `alert_events` row (API.md "Alerts")."""
    body: dict[str, Any] = {
        "id": row["id"],
        "event": row["event"],
        "entity": {"type": row["entity_type"], "id": row["entity_id"]},
        "ledger": row["ledger_id"],
        "window": row["window"],
        "spent": _money(row["spent"]),
        "limit": _money(row["limit"]),
        "resets_at": iso(row["resets_at"]),
        "at": iso(row["created_at"]),
    }
    if row["soft_budget"] is not None:
        body["soft_budget"] = _money(row["soft_budget"])
    if row["threshold"] is not None:
        body["threshold"] = row["threshold"]
    body.update(row["details"] or {})
    return body


def _slack_text(event: Mapping[str, Any]) -> str:
    entity = event["entity"]
    what = {
        "soft_budget_crossed": f"passed its soft budget of ${event.get('soft_budget')}",
        "threshold_crossed": f"passed {event.get('threshold')}% of its budget",
        "budget_exceeded": "was refused: budget exceeded",
        "enforcement_bypassed": f"was charged after a denial (request {event.get('request_id')})",
    }.get(event["event"], event["event"])
    limit = f" of ${event['limit']}" if event.get("limit") else ""
    window = f" {event['window']}" if event.get("window") else ""
    return (
        f"Spendgate: {entity['type']} {entity['id']} {what} — spent ${event['spent']}{limit}{window}"
        f"{', resets ' + event['resets_at'] if event.get('resets_at') else ''} (event {event['id']})"
    )


def body_for(event: Mapping[str, Any], fmt: str) -> bytes:
    document = {"text": _slack_text(event)} if fmt == "slack" else event
    return json.dumps(document, separators=(",", ":"), ensure_ascii=False).encode()


def signature(secret: bytes, body: bytes) -> str:
    return "sha256=" + hmac.new(secret, body, hashlib.sha256).hexdigest()
