"""Settings: every bad value stops start-up with a message naming its variable; secrets stay secret."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from pydantic import ValidationError

from spendgate.settings import Settings

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize(
    ("variable", "value", "message"),
    [
        ("SPENDGATE_DATABASE_URL", "mysql://db/x", "must be a postgresql+asyncpg://"),
        ("SPENDGATE_DATABASE_URL", "sqlite+aiosqlite://", "in-memory SQLite database: give it a file"),
        ("SPENDGATE_DATABASE_URL", "sqlite+aiosqlite:///:memory:", "in-memory SQLite database: give it a file"),
        ("SPENDGATE_REDIS_URL", "http://cache:6379", "must be a redis://"),
        ("SPENDGATE_OPA_URL", "opa:8181", "must be an http(s):// URL"),
        ("SPENDGATE_RESERVATION_TTL", "-5", "must be a positive number of seconds"),
        ("SPENDGATE_RECONCILE_INTERVAL_SECONDS", "-1", "0 (off) or a positive number"),
        ("SPENDGATE_FACTS_CACHE_SECONDS", "2", "between 0 and 1"),
        ("SPENDGATE_POLICY_DIR", "/no/such/dir", "is not a directory"),
        ("SPENDGATE_ADMIN_TOKEN", "short", "at least 16 characters"),
        ("SPENDGATE_DB_POOL_SIZE", "0", "at least 1"),
        ("SPENDGATE_RECORD_BATCH_MAX", "0", "at least 1"),
        ("SPENDGATE_RECORD_BATCH_CONCURRENCY", "-2", "at least 1"),
        ("SPENDGATE_MAX_AUTHORIZE_IN_FLIGHT", "-1", "0 (no limit) or a positive whole number"),
        ("SPENDGATE_DEFAULT_END_USER_BUDGET", "{\"max_budget\": \"x\"}", "must be budget JSON"),
        ("SPENDGATE_DEFAULT_END_USER_BUDGET", "5 dollars", "must be budget JSON"),
    ],
)
def test_a_bad_value_is_refused_with_a_message_naming_it(
    monkeypatch: pytest.MonkeyPatch, variable: str, value: str, message: str
) -> None:
    monkeypatch.setenv(variable, value)

    with pytest.raises(ValidationError, match=re.escape(message)) as caught:
        Settings()

    assert variable in str(caught.value) or variable.removeprefix("SPENDGATE_").lower() in str(caught.value)


def test_production_refuses_sqlite_and_unset_tokens(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SPENDGATE_ENVIRONMENT", "production")
    with pytest.raises(ValidationError, match="TOKEN must be set"):
        Settings(database_url="postgresql+asyncpg://db/x")
    with pytest.raises(ValidationError, match="must point at PostgreSQL"):
        Settings(admin_token="a" * 20, gateway_token="b" * 20)


def test_identical_tokens_are_refused() -> None:
    with pytest.raises(ValidationError, match="must differ"):
        Settings(admin_token="same-token-0123456789", gateway_token="same-token-0123456789")


def test_the_cli_names_the_variable_and_never_prints_a_set_secret(tmp_path: Path) -> None:
    secret = "admin-secret-never-printed-42"
    env = {**os.environ, "SPENDGATE_RESERVATION_TTL": "0", "SPENDGATE_ADMIN_TOKEN": secret,
           "SPENDGATE_DATABASE_URL": f"sqlite+aiosqlite:///{tmp_path}/x.db"}

    done = subprocess.run(
        [sys.executable, "-m", "spendgate.cli", "migrate"], env=env, cwd=ROOT, capture_output=True, text=True, timeout=60
    )

    assert done.returncode != 0
    assert "SPENDGATE_RESERVATION_TTL" in done.stderr and "positive number of seconds" in done.stderr
    assert secret not in done.stdout + done.stderr
    assert "Traceback" not in done.stderr
