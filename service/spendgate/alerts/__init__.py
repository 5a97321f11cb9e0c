"""Alerts: events decided with what caused them, stored in an outbox, delivered to webhooks.

`events` decides (pure), `outbox` stores and leases, `recording` writes in the record
transaction, `delivery` posts with retries, `payload` shapes and signs, `config` reads settings.
"""

from .config import AlertConfig, Webhook
from .events import EVENT_KINDS, AlertDraft

__all__ = ["AlertConfig", "AlertDraft", "EVENT_KINDS", "Webhook"]
