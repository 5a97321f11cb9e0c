"""Alert settings as the alert modules use them: webhook targets and threshold percentages."""

from __future__ import annotations

import hashlib
from typing import Literal, NamedTuple
from urllib.parse import urlsplit

from ..settings import Settings

__all__ = ["Webhook", "AlertConfig", "parse_webhook_urls", "parse_thresholds"]

Format = Literal["json", "slack"]


class Webhook(NamedTuple):
    url: str
    #: None: the SPENDGATE_ALERT_WEBHOOK_FORMAT default.
    format: Format | None

    @property
    def label(self) -> str:
        """How the outbox and `GET /v1/admin/alerts` name this target: its host and a digest of the
        URL, never the URL itself (a Slack incoming-webhook URL carries its secret in the path)."""
        return f"{urlsplit(self.url).hostname} #{hashlib.sha256(self.url.encode()).hexdigest()[:12]}"


def parse_webhook_urls(value: str) -> tuple[Webhook, ...]:
    """'https://a/x, slack+https://hooks.slack.com/…' → the targets (a `json+`/`slack+` prefix sets the body)."""
    found: list[Webhook] = []
    for raw in (part.strip() for part in value.split(",")):
        if not raw:
            continue
        fmt: Format | None = None
        if raw.startswith("json+"):
            fmt, raw = "json", raw[5:]
        elif raw.startswith("slack+"):
            fmt, raw = "slack", raw[6:]
        if not raw.startswith(("http://", "https://")):
            raise ValueError(
                "SPENDGATE_ALERT_WEBHOOK_URLS must be comma-separated http(s):// URLs, each optionally prefixed "
                f"with slack+ or json+ (got {raw[:40]!r})"
            )
        found.append(Webhook(raw, fmt))
    return tuple(found)


def parse_thresholds(value: str) -> tuple[int, ...]:
    """'80,95' → (80, 95): whole percentages of a hard limit, 1–100."""
    try:
        found = sorted({int(part) for part in value.replace(" ", "").split(",") if part})
    except ValueError:
        found = [0]
    if any(not 1 <= p <= 100 for p in found):
        raise ValueError("SPENDGATE_ALERT_THRESHOLDS must be comma-separated whole percentages 1-100, e.g. 80,95")
    return tuple(found)


class AlertConfig(NamedTuple):
    webhooks: tuple[Webhook, ...]
    thresholds: tuple[int, ...]
    default_format: Format
    secret: bytes | None

    @classmethod
    def from_settings(cls, settings: Settings) -> AlertConfig:
        secret = settings.alert_webhook_secret
        return cls(
            parse_webhook_urls(settings.alert_webhook_urls or ""),
            parse_thresholds(settings.alert_thresholds),
            settings.alert_webhook_format,
            secret.get_secret_value().encode() if secret is not None else None,
        )
