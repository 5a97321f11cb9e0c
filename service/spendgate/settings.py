"""Service configuration: one pydantic-settings class read from the environment or `.env`.

Only this module reads the environment. Values are validated at start-up so that a bad
setting stops the service with a message naming the variable, never mid-request.
"""

from __future__ import annotations

import secrets
from functools import lru_cache
from pathlib import Path
from typing import Literal

from pydantic import Field, SecretStr, ValidationInfo, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from .resources import default_policy_dir

__all__ = ["Settings", "get_settings", "DEFAULT_POLICY_DIR"]

#: The policies shipped with the service: the checkout's `policies/`, or the wheel's copy (resources.py).
DEFAULT_POLICY_DIR = default_policy_dir()


class Settings(BaseSettings):
    """Everything API.md "Running it" names, plus a few operational knobs."""

    model_config = SettingsConfigDict(
        env_prefix="SPENDGATE_", env_file=".env", extra="ignore", frozen=True
    )

    environment: Literal["development", "production"] = "development"
    database_url: str = Field(
        default="sqlite+aiosqlite:///./spendgate.db",
        description="postgresql+asyncpg://… for the ledger; defaults to an embedded SQLite file",
    )
    redis_url: str | None = None
    opa_url: str | None = None
    policy_dir: Path = DEFAULT_POLICY_DIR
    admin_token: SecretStr | None = None
    gateway_token: SecretStr | None = None
    reservation_ttl: int = Field(default=600, description="seconds")
    #: How long an admin change may take to reach every replica (facts cache lifetime).
    facts_cache_seconds: float = 0.5
    #: How old the spent/reserved figures an authorize decides on may be when this replica saw them
    #: (counters/replica_memory.py): admission is still exact; 0 reads current figures every time.
    figures_max_age_seconds: float = 0.5
    #: How often each replica looks for expired reservations.
    expiry_interval_seconds: float = 1.0
    #: Seconds to wait for the OPA server before answering 503 `unavailable`.
    opa_timeout_seconds: float = 2.0
    #: While OPA is unreachable, evaluate the same policies in-process instead of refusing with 503.
    #: Off by default: it trades OPA's decision log (and any OPA-only data) for availability.
    opa_fail_over: bool = False
    #: How often the policy directory is checked for changes (0: never — policies load at start only).
    policy_reload_seconds: float = 1.0
    #: What a policy set must pass to go live (at start-up and on reload): "compile", or "test" —
    #: also the policy tests beside it (`*_test.rego` in the policy dir and a sibling policy_tests/).
    policy_gate: Literal["compile", "test"] = "compile"
    #: Embedded engine: decide through regorus's compiled virtual machine (about half the interpreter's
    #: cost) for every policy revision on which it answers every probe input as the interpreter does.
    policy_compiled: bool = True
    #: Every Nth compiled decision is also evaluated by the interpreter, whose answer is served; the
    #: first disagreement sends the revision back to the interpreter (0: never checked; 1: every one).
    policy_compiled_check_every: int = Field(default=100, ge=0)
    #: Budget applied to end users never created through the admin API, e.g. '{"max_budget": "5"}'.
    default_end_user_budget: str | None = None
    #: Budgets given to entities a gateway's principal names when first seen (identity.py), by entity
    #: type, e.g. '{"team": {"max_budget": "100", "duration": "1mo"}}'.
    default_budgets: str | None = None
    db_pool_size: int = 10
    #: Redis connections one replica opens at most; when all are in use, a call waits up to 2 s for one.
    redis_max_connections: int = Field(default=100, ge=1)
    #: Authorizes one replica works on at once; more are answered 503 at once (0: no limit).
    max_authorize_in_flight: int = 64
    #: Largest request body accepted, in bytes (1 MiB); a larger one is answered 413 before it is read.
    max_body_bytes: int = 1_048_576
    #: PostgreSQL: most records one ledger transaction may carry (group commit, record_batch.py).
    record_batch_max: int = 64
    #: PostgreSQL: ledger transactions of records a replica runs at once.
    record_batch_concurrency: int = 2
    #: How often each replica reconciles the counters with the ledger (0: never; `spendgate reconcile` still works).
    reconcile_interval_seconds: float = 300.0
    #: Whether that periodic reconcile repairs the spent and reserved drift it finds (False: only report it).
    reconcile_fix: bool = True
    #: GET /metrics: "public" (no token, as Prometheus scrapes), "admin" (the admin token), or "off".
    metrics_access: Literal["public", "admin", "off"] = "public"
    #: One JSON line per decision on the logger "spendgate.decisions".
    decision_log: bool = True
    #: Alert webhooks (spendgate.alerts): comma-separated URLs; `slack+https://…` sends Slack's body to one.
    alert_webhook_urls: str | None = None
    #: Signs every webhook body: header `X-Spendgate-Signature: sha256=<hex HMAC-SHA256>` (required in production).
    alert_webhook_secret: SecretStr | None = None
    #: Body of the webhook POSTs: "json" (the event) or "slack" (`{"text": …}`); a URL's prefix overrides it.
    alert_webhook_format: Literal["json", "slack"] = "json"
    #: Percentages of a hard limit that fire `threshold_crossed`, e.g. "80,95" ("" for none).
    alert_thresholds: str = "80,95"
    #: Seconds a webhook receiver has to answer one delivery.
    alert_webhook_timeout_seconds: float = 5.0
    #: First retry delay of a failed delivery (doubling each attempt up to the cap below).
    alert_retry_base_seconds: float = 1.0
    alert_retry_max_seconds: float = 300.0
    #: Attempts before an event is marked `failed`.
    alert_max_attempts: int = 10
    #: How often each replica's delivery worker looks for due events.
    alert_poll_seconds: float = 1.0
    #: How long a worker owns an event it is delivering; after that another replica may take it over.
    alert_lease_seconds: float = 60.0
    #: The recent-decisions store (GET /v1/reports/decisions): most rows kept, and their longest age.
    decision_store_max_rows: int = 100_000
    decision_store_max_age_seconds: float = 7 * 24 * 3600.0
    #: The web console at /console (docs/console.md); off: those routes answer 404.
    console: bool = True
    #: How long a console sign-in lasts, in seconds (the session cookie's lifetime).
    console_session_seconds: int = Field(default=8 * 3600, ge=60, le=30 * 86400)

    @field_validator("database_url")
    @classmethod
    def _known_database(cls, value: str) -> str:
        if value.startswith("sqlite+aiosqlite://"):
            from .db import sqlite_file  # here: db imports this module

            sqlite_file(value)  # an in-memory database is refused, naming the URL
            return value
        if value.startswith("postgresql+asyncpg://"):
            return value
        if value.startswith(("postgres://", "postgresql://")):
            scheme, rest = value.split("://", 1)
            return "postgresql+asyncpg://" + rest
        raise ValueError(
            "SPENDGATE_DATABASE_URL must be a postgresql+asyncpg://user@host/db URL "
            "(or sqlite+aiosqlite:///path.db for a single machine)"
        )

    @field_validator("redis_url")
    @classmethod
    def _known_redis(cls, value: str | None) -> str | None:
        if value in (None, ""):
            return None
        if not value.startswith(("redis://", "rediss://", "unix://")):
            raise ValueError("SPENDGATE_REDIS_URL must be a redis://host:port/db URL")
        return value

    @field_validator("opa_url")
    @classmethod
    def _known_opa(cls, value: str | None) -> str | None:
        if value in (None, ""):
            return None
        if not value.startswith(("http://", "https://")):
            raise ValueError("SPENDGATE_OPA_URL must be an http(s):// URL such as http://opa:8181")
        return value.rstrip("/")

    @field_validator("default_end_user_budget")
    @classmethod
    def _valid_end_user_budget(cls, value: str | None) -> str | None:
        """Checked at start-up, so a typo stops the service instead of failing the first request that needs it."""
        if value in (None, ""):
            return None
        from pydantic import ValidationError

        from .budgets import BudgetSpec  # late: budgets imports the table models

        try:
            BudgetSpec.model_validate_json(value)
        except ValidationError as exc:
            problem = "; ".join(
                f"{'.'.join(str(p) for p in e['loc']) or 'value'}: {str(e['msg']).removeprefix('Value error, ')}"
                for e in exc.errors()
            )
            raise ValueError(
                "SPENDGATE_DEFAULT_END_USER_BUDGET must be budget JSON such as "
                f'{{"max_budget": "5", "duration": "1d", "reset": "calendar"}} ({problem})'
            ) from None
        return value

    @field_validator("default_budgets")
    @classmethod
    def _valid_default_budgets(cls, value: str | None) -> str | None:
        """Checked at start-up, like the default end-user budget."""
        if value in (None, ""):
            return None
        from .identity import parse_default_budgets  # late: identity imports the table models

        parse_default_budgets(value)
        return value

    @field_validator("reservation_ttl")
    @classmethod
    def _positive_ttl(cls, value: int) -> int:
        if value <= 0:
            raise ValueError("SPENDGATE_RESERVATION_TTL must be a positive number of seconds")
        return value

    @field_validator("reconcile_interval_seconds")
    @classmethod
    def _non_negative_interval(cls, value: float) -> float:
        if value < 0:
            raise ValueError("SPENDGATE_RECONCILE_INTERVAL_SECONDS must be 0 (off) or a positive number of seconds")
        return value

    @field_validator("max_authorize_in_flight")
    @classmethod
    def _non_negative_limit(cls, value: int) -> int:
        if value < 0:
            raise ValueError("SPENDGATE_MAX_AUTHORIZE_IN_FLIGHT must be 0 (no limit) or a positive whole number")
        return value

    @field_validator("max_body_bytes")
    @classmethod
    def _room_for_a_request(cls, value: int) -> int:
        if value < 1024:
            raise ValueError("SPENDGATE_MAX_BODY_BYTES must be a whole number of bytes, at least 1024")
        return value

    @field_validator("db_pool_size", "record_batch_max", "record_batch_concurrency")
    @classmethod
    def _at_least_one(cls, value: int, info: ValidationInfo) -> int:
        if value < 1:
            raise ValueError(f"SPENDGATE_{str(info.field_name).upper()} must be a whole number of at least 1")
        return value

    @field_validator("facts_cache_seconds")
    @classmethod
    def _cache_within_contract(cls, value: float) -> float:
        if not 0 <= value <= 1:
            raise ValueError("SPENDGATE_FACTS_CACHE_SECONDS must be between 0 and 1 (docs/api.md: admin changes apply within 1 s)")
        return value

    @field_validator("figures_max_age_seconds")
    @classmethod
    def _figures_within_contract(cls, value: float) -> float:
        if not 0 <= value <= 1:
            raise ValueError("SPENDGATE_FIGURES_MAX_AGE_SECONDS must be between 0 and 1 (docs/api.md: figures shown are at most 1 s old)")
        return value

    @field_validator("policy_dir")
    @classmethod
    def _policy_dir_exists(cls, value: Path) -> Path:
        if not value.is_dir():
            raise ValueError(f"SPENDGATE_POLICY_DIR {value} is not a directory of .rego policies")
        return value

    @field_validator("alert_webhook_urls", "alert_thresholds")
    @classmethod
    def _valid_alert_setting(cls, value: str | None, info: ValidationInfo) -> str | None:
        from .alerts.config import parse_thresholds, parse_webhook_urls  # late: keeps this module light

        if value in (None, "") and info.field_name == "alert_webhook_urls":
            return None
        parse = parse_webhook_urls if info.field_name == "alert_webhook_urls" else parse_thresholds
        parse(value or "")  # raises ValueError naming the variable
        return value

    @field_validator(
        "alert_webhook_timeout_seconds", "alert_retry_base_seconds", "alert_retry_max_seconds", "alert_poll_seconds",
        "alert_lease_seconds", "decision_store_max_age_seconds",
    )
    @classmethod
    def _positive_seconds(cls, value: float, info: ValidationInfo) -> float:
        if value <= 0:
            raise ValueError(f"SPENDGATE_{str(info.field_name).upper()} must be a positive number of seconds")
        return value

    @field_validator("alert_max_attempts", "decision_store_max_rows")
    @classmethod
    def _at_least_one_alerting(cls, value: int, info: ValidationInfo) -> int:
        if value < 1:
            raise ValueError(f"SPENDGATE_{str(info.field_name).upper()} must be a whole number of at least 1")
        return value

    @model_validator(mode="after")
    def _safe_in_production(self) -> Settings:
        if self.environment == "production":
            if self.admin_token is None or self.gateway_token is None:
                raise ValueError("in production SPENDGATE_ADMIN_TOKEN and SPENDGATE_GATEWAY_TOKEN must be set")
            if self.database_url.startswith("sqlite"):
                raise ValueError("in production SPENDGATE_DATABASE_URL must point at PostgreSQL")
            if self.alert_webhook_urls and self.alert_webhook_secret is None:
                raise ValueError("in production SPENDGATE_ALERT_WEBHOOK_SECRET must be set when SPENDGATE_ALERT_WEBHOOK_URLS is")
        for name in ("admin_token", "gateway_token"):
            token = getattr(self, name)
            if token is not None and len(token.get_secret_value()) < 16:
                raise ValueError(f"SPENDGATE_{name.upper()} must be at least 16 characters")
        if self.admin_token is not None and self.admin_token == self.gateway_token:
            raise ValueError("SPENDGATE_ADMIN_TOKEN and SPENDGATE_GATEWAY_TOKEN must differ")
        return self

    @property
    def is_postgres(self) -> bool:
        return self.database_url.startswith("postgresql")

    def with_generated_tokens(self) -> tuple[Settings, list[str]]:
        """Fill unset tokens with fresh random ones; returns the names that were generated."""
        generated = {
            name: SecretStr("sg-" + secrets.token_urlsafe(24))
            for name in ("admin_token", "gateway_token")
            if getattr(self, name) is None
        }
        return self.model_copy(update=generated), sorted(generated)


@lru_cache
def get_settings() -> Settings:
    """The process-wide settings; tests call `get_settings.cache_clear()` after changing the environment."""
    return Settings()
