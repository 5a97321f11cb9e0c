"""Alerts that reach people: events decided once per ledger period (across replicas), stored in
the outbox with what caused them, delivered to a real HTTP receiver with retries, signed — and
never in the way of authorize. Plus the enforcement-bypass flag on records after a denial.

The receiver is deploy/webhook_receiver.py itself, serving on a free port in this process.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import importlib.util
import json
import os
import sys
from collections.abc import AsyncIterator, Callable, Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import pytest

from reliability.harness import GATEWAY_TOKEN, Cluster, eventually
from support.app import AppFactory, RunningApp
from support.scenario import authorize, create_key, ledger, record


REPO = Path(__file__).resolve().parents[1]
SECRET = "test-webhook-secret-0123456789"
_spec = importlib.util.spec_from_file_location("webhook_receiver", REPO / "deploy" / "webhook_receiver.py")
assert _spec is not None and _spec.loader is not None
receiver_module = importlib.util.module_from_spec(_spec)
sys.modules["webhook_receiver"] = receiver_module  # dataclasses look their module up there
_spec.loader.exec_module(receiver_module)
Receiver = receiver_module.Receiver

#: Fast retries and polling, so a test sees several attempts in a second or two.
FAST = {"alert_poll_seconds": 0.05, "alert_retry_base_seconds": 0.05, "alert_retry_max_seconds": 0.2}


@pytest.fixture
def receivers() -> Iterator[Callable[..., Any]]:
    started: list[Any] = []

    def start(**options: Any) -> Any:
        receiver = Receiver(options.pop("secret", SECRET.encode()), out=open(os.devnull, "w"), **options).start()
        started.append(receiver)
        return receiver

    yield start
    for receiver in started:
        receiver.stop()
        receiver.out.close()


async def _app(app_factory: AppFactory, database_url: str, redis_url: str | None, receiver: Any, **settings: Any
               ) -> RunningApp:
    return await app_factory(
        database_url=database_url, redis_url=redis_url, alert_webhook_urls=receiver.url,
        alert_webhook_secret=SECRET, **(FAST | settings),
    )


async def _alerts(app: RunningApp, **params: Any) -> list[dict[str, Any]]:
    response = await app.admin.get("/v1/admin/alerts", params={"limit": 500, **params})
    assert response.status_code == 200, response.text
    return response.json()["items"]  # type: ignore[no-any-return]


async def _settled(app: RunningApp, count: int, timeout: float = 20, **params: Any) -> list[dict[str, Any]]:
    """The alerts once `count` of them exist and none is pending any more."""
    found: list[dict[str, Any]] = []

    async def done() -> bool:
        nonlocal found
        found = await _alerts(app, **params)
        return len(found) >= count and all(item["status"] != "pending" for item in found)

    assert await eventually(done, timeout, 0.05), found
    return found


async def _spend(app: RunningApp, secret: str, request_id: str, cost: str, estimate: str = "0") -> dict[str, Any]:
    decided = await authorize(app.gateway, request_id=request_id, api_key=secret, estimated_cost=estimate)
    assert decided["decision"] == "allow", decided
    return await record(app.gateway, request_id=request_id, cost=cost, outcome="success")


# --- deciding: once per ledger period, kind and threshold -----------------------------------


async def test_soft_budget_and_each_threshold_fire_once_per_period_and_again_in_the_next(
    app_factory: AppFactory, clean_pg: str, redis_url: str, receivers: Callable[..., Any]
) -> None:
    receiver = receivers()
    app = await _app(app_factory, clean_pg, redis_url, receiver)
    secret = await create_key(app.admin, id="k1", budget={"max_budget": "1.00", "soft_budget": "0.50", "duration": "1d"})
    for n, cost in enumerate(["0.30", "0.30", "0.25", "0.05", "0.06", "0.01"]):  # 0.30 0.60 0.85 0.90 0.96 0.97
        await _spend(app, secret, f"r{n}", cost)
    fired = await _settled(app, 3, entity="key:k1")
    assert sorted((a["event"], a.get("threshold")) for a in fired) == [
        ("soft_budget_crossed", None), ("threshold_crossed", 80), ("threshold_crossed", 95)
    ]
    by_kind = {(a["event"], a.get("threshold")): a for a in fired}
    soft = by_kind[("soft_budget_crossed", None)]
    assert (soft["spent"], soft["limit"], soft["soft_budget"], soft["window"]) == ("0.600000", "1.000000", "0.500000", "1d")
    assert by_kind[("threshold_crossed", 80)]["spent"] == "0.850000"
    assert by_kind[("threshold_crossed", 95)]["spent"] == "0.960000"
    assert all(a["status"] == "delivered" and a["attempts"] == 1 and a["resets_at"] for a in fired)
    assert sorted(receiver.accepted) == sorted(a["id"] for a in fired) and receiver.duplicates == 0

    start = app.runtime.clock()
    app.runtime.clock = lambda: start + timedelta(days=1)  # the next period: a fresh ledger
    await _spend(app, secret, "next-0", "0.55")
    fired = await _settled(app, 4, entity="key:k1")
    assert sorted(a["event"] for a in fired) == ["soft_budget_crossed"] * 2 + ["threshold_crossed"] * 2
    assert len({a["ledger"] for a in fired}) == 2


async def test_budget_exceeded_fires_once_for_many_refusals_on_two_replicas(
    any_app_with_alerts: tuple[RunningApp, Any], app_factory: AppFactory
) -> None:
    app, receiver = any_app_with_alerts
    # A second replica (its own runtime, queue and memory of written events) on the same database.
    other = await _app(app_factory, app.settings.database_url, app.settings.redis_url, receiver)
    secret = await create_key(app.admin, id="k1", budget={"max_budget": "1.00"})
    for n in range(25):
        replica = (app, other)[n % 2]
        denied = await authorize(replica.gateway, request_id=f"r{n}", api_key=secret, estimated_cost="2")
        assert denied["decision"] == "deny"
        await replica.runtime.background.drain()  # type: ignore[union-attr]  # each refusal's write lands
    fired = await _settled(app, 1, entity="key:k1")
    assert [(a["event"], a["spent"], a["limit"], a["status"]) for a in fired] == [
        ("budget_exceeded", "0.000000", "1.000000", "delivered")
    ]
    assert fired[0]["request_id"] == "r0" and "budget" in fired[0]["message"]
    assert list(receiver.accepted) == [fired[0]["id"]]


@pytest.fixture(params=["postgres+redis", "sqlite"])
async def any_app_with_alerts(
    request: pytest.FixtureRequest, app_factory: AppFactory, receivers: Callable[..., Any], sqlite_url: str,
    clean_pg: str, redis_url: str,
) -> tuple[RunningApp, Any]:
    receiver = receivers()
    if request.param == "sqlite":
        return await _app(app_factory, sqlite_url, None, receiver), receiver
    return await _app(app_factory, clean_pg, redis_url, receiver), receiver


# --- delivering: signed, retried, never in authorize's way ----------------------------------


async def test_each_delivery_is_signed_with_the_shared_secret_and_a_wrong_secret_is_refused(
    app_factory: AppFactory, clean_pg: str, redis_url: str, receivers: Callable[..., Any]
) -> None:
    good = receivers()
    wrong = receivers(secret=b"another-secret-entirely")
    app = await app_factory(
        database_url=clean_pg, redis_url=redis_url, alert_webhook_urls=f"{good.url},{wrong.url}",
        alert_webhook_secret=SECRET, alert_max_attempts=2, **FAST,
    )
    secret = await create_key(app.admin, id="k1", budget={"max_budget": "1.00", "soft_budget": "0.10"})
    await _spend(app, secret, "r1", "0.20")
    [event] = await _settled(app, 1)
    assert event["status"] == "failed" and "HTTP 401" in event["last_error"] and event["attempts"] == 2
    assert list(good.accepted) == [event["id"]]  # delivered to the good one once, not again on the retry
    arrival = good.arrivals[0]
    assert arrival["verified"] and arrival["event"]["event"] == "soft_budget_crossed"
    assert {"id", "event", "entity", "ledger", "window", "spent", "limit", "soft_budget", "resets_at", "at"} <= set(
        arrival["event"]
    )
    assert [a["verified"] for a in wrong.arrivals] == [False, False] and wrong.rejected == 2
    body = json.dumps(arrival["event"], separators=(",", ":")).encode()
    assert receiver_module.verify(SECRET.encode(), body, "sha256=" + hmac.new(SECRET.encode(), body, hashlib.sha256).hexdigest())


async def test_a_receiver_that_answers_500_gets_the_event_on_a_retry(
    app_factory: AppFactory, clean_pg: str, redis_url: str, receivers: Callable[..., Any]
) -> None:
    receiver = receivers(fail=2)
    app = await _app(app_factory, clean_pg, redis_url, receiver)
    secret = await create_key(app.admin, id="k1", budget={"max_budget": "1.00", "soft_budget": "0.10"})
    await _spend(app, secret, "r1", "0.20")
    [event] = await _settled(app, 1)
    assert (event["status"], event["attempts"], event["last_error"]) == ("delivered", 3, None)
    assert len(receiver.arrivals) == 3 and list(receiver.accepted) == [event["id"]]
    assert await _metric(app, 'spendgate_alert_deliveries_total{result="retry"}') == 2
    assert await _metric(app, 'spendgate_alert_deliveries_total{result="delivered"}') == 1


async def test_an_event_no_receiver_accepts_ends_failed_after_its_attempts(
    app_factory: AppFactory, clean_pg: str, redis_url: str, receivers: Callable[..., Any]
) -> None:
    receiver = receivers(fail=100)
    app = await _app(app_factory, clean_pg, redis_url, receiver, alert_max_attempts=3)
    secret = await create_key(app.admin, id="k1", budget={"max_budget": "1.00", "soft_budget": "0.10"})
    await _spend(app, secret, "r1", "0.20")
    [event] = await _settled(app, 1)
    assert (event["status"], event["attempts"]) == ("failed", 3) and "HTTP 500" in event["last_error"]
    # The target is named by host and digest: a Slack webhook URL carries its secret in the path.
    assert event["last_error"].startswith("127.0.0.1 #") and receiver.url not in event["last_error"]
    assert len(receiver.arrivals) == 3
    assert [a["id"] for a in await _alerts(app, status="failed")] == [event["id"]]
    assert await _alerts(app, status="delivered") == []


async def test_a_hung_receiver_does_not_hold_up_authorize_or_record(
    app_factory: AppFactory, clean_pg: str, redis_url: str, receivers: Callable[..., Any]
) -> None:
    receiver = receivers(hang=1000)
    app = await _app(app_factory, clean_pg, redis_url, receiver, alert_webhook_timeout_seconds=600)
    secret = await create_key(app.admin, id="k1", budget={"max_budget": "1.00", "soft_budget": "0.10"})
    await _spend(app, secret, "r0", "0.20")

    async def hung() -> bool:
        return receiver.hanging >= 1

    assert await eventually(hung, 20)  # the worker is now stuck mid-delivery, for up to 600 s
    answered = await asyncio.wait_for(
        asyncio.gather(*(_spend(app, secret, f"r{n}", "0.01") for n in range(1, 21))), timeout=30
    )
    assert all(body["recorded"] for body in answered)
    denied = await asyncio.wait_for(authorize(app.gateway, request_id="big", api_key=secret, estimated_cost="5"), 30)
    assert denied["decision"] == "deny"
    [event] = [a for a in await _alerts(app, entity="key:k1") if a["event"] == "soft_budget_crossed"]
    assert event["status"] == "pending" and event["attempts"] == 1  # still stuck on the hung receiver


async def _metric(app: RunningApp, series: str) -> float:
    text = (await app.anonymous.get("/metrics")).text
    for line in text.splitlines():
        if line.startswith(series + " "):
            return float(line.split()[1])
    raise AssertionError(f"{series} not in /metrics")


# --- enforcement bypass: charged, flagged, counted, alerted once ------------------------------


async def test_a_record_after_a_denial_is_charged_flagged_counted_and_alerted_once(
    any_app_with_alerts: tuple[RunningApp, Any]
) -> None:
    app, receiver = any_app_with_alerts
    secret = await create_key(app.admin, id="k1", budget={"max_budget": "1.00", "duration": "1d"})
    denied = await authorize(app.gateway, request_id="r1", api_key=secret, estimated_cost="2")
    assert denied["decision"] == "deny"
    recorded = await record(app.gateway, request_id="r1", cost="1.50", outcome="success")
    assert recorded["after_denial"] is True and not recorded["duplicate"]
    assert [(c["entity"], c["amount"]) for c in recorded["charges"]] == [
        (c["entity"], "1.500000") for c in denied["charges"]
    ]  # the ledgers the denied decision named: checked at authorize = charged at record
    assert (await ledger(app.admin, "keys/k1", "1d"))["spent"] == "1.500000"
    again = await record(app.gateway, request_id="r1", cost="1.50", outcome="success")
    assert again["duplicate"] and again["after_denial"] is True
    assert (await ledger(app.admin, "keys/k1", "1d"))["spent"] == "1.500000"

    second = await authorize(app.gateway, request_id="r2", api_key=secret, estimated_cost="0.10")
    assert second["decision"] == "deny"
    assert (await record(app.gateway, request_id="r2", cost="0.10", outcome="success"))["after_denial"] is True
    allowed_key = await create_key(app.admin, id="k2", budget={"max_budget": "1.00"})
    assert (await _spend(app, allowed_key, "r3", "0.10"))["after_denial"] is False

    assert await _metric(app, "spendgate_records_after_denial_total") == 2
    await app.runtime.background.drain()  # type: ignore[union-attr]
    bypassed = [a for a in await _settled(app, 2, entity="key:k1") if a["event"] == "enforcement_bypassed"]
    assert len(bypassed) == 1, bypassed  # once per key per period, however many bypasses
    assert bypassed[0]["entity"] == {"type": "key", "id": "k1"}
    assert bypassed[0]["request_id"] == "r1" and bypassed[0]["denial"] == {"reasons": ["budget_exceeded"]}
    assert bypassed[0]["id"] in receiver.accepted


# --- several replicas: one event, one delivery; a replica killed mid-delivery -------------------


class _AlertingCluster(Cluster):
    """Replicas that deliver alerts to `webhook_url`, quickly, with a short lease."""

    webhook_url = ""
    lease_seconds = "3"

    def _env(self, replica: int | None = None) -> dict[str, str]:
        return super()._env(replica) | {
            "SPENDGATE_RESERVATION_TTL": "600",
            "SPENDGATE_ALERT_WEBHOOK_URLS": self.webhook_url,
            "SPENDGATE_ALERT_WEBHOOK_SECRET": SECRET,
            "SPENDGATE_ALERT_POLL_SECONDS": "0.05",
            "SPENDGATE_ALERT_RETRY_BASE_SECONDS": "0.05",
            "SPENDGATE_ALERT_LEASE_SECONDS": self.lease_seconds,
            "SPENDGATE_ALERT_WEBHOOK_TIMEOUT_SECONDS": "600",
        }


@pytest.fixture
async def cluster_with(tmp_path: Path) -> AsyncIterator[Callable[..., Any]]:
    started: list[Cluster] = []

    async def start(webhook_url: str) -> Cluster:
        cluster = _AlertingCluster(tmp_path, replicas=2)
        cluster.webhook_url = webhook_url
        started.append(cluster)
        await cluster.start()
        return cluster

    yield start
    for cluster in started:
        await cluster.stop()


async def _cluster_call(client: httpx.AsyncClient, url: str, path: str, body: dict[str, Any]) -> dict[str, Any]:
    response = await client.post(url + path, json=body, headers={"authorization": f"Bearer {GATEWAY_TOKEN}"})
    assert response.status_code == 200, response.text
    return response.json()  # type: ignore[no-any-return]


async def _outbox(cluster: Cluster) -> list[dict[str, Any]]:
    conn = await asyncpg.connect(cluster.asyncpg_url)
    try:
        return [dict(row) for row in await conn.fetch("SELECT * FROM alert_events ORDER BY created_at")]
    finally:
        await conn.close()


async def test_two_replicas_crossing_a_soft_budget_together_deliver_one_event_once(
    cluster_with: Callable[..., Any], receivers: Callable[..., Any]
) -> None:
    receiver = receivers()
    cluster = await cluster_with(receiver.url)
    created = await cluster.admin("POST", "/v1/admin/keys", {"id": "k1", "budget": {"max_budget": "100", "soft_budget": "1"}})
    async with httpx.AsyncClient(timeout=30) as client:
        async def spend(n: int) -> None:
            url = cluster.replicas[n % 2].url
            await _cluster_call(client, url, "/v1/authorize", {"request_id": f"r{n}", "api_key": created["key"]})
            await _cluster_call(client, url, "/v1/record", {"request_id": f"r{n}", "cost": "0.10", "outcome": "success"})

        await asyncio.gather(*(spend(n) for n in range(30)))  # 3.00 spent: crosses 1.00 once, on either replica

    async def delivered() -> bool:
        rows = await _outbox(cluster)
        return len(rows) == 1 and rows[0]["status"] == "delivered"

    assert await eventually(delivered, 30), (await _outbox(cluster), cluster.logs())
    [row] = await _outbox(cluster)
    assert row["event"] == "soft_budget_crossed" and row["attempts"] == 1
    assert list(receiver.accepted) == [row["id"]] and receiver.duplicates == 0 and len(receiver.arrivals) == 1


async def test_a_replica_killed_mid_delivery_leaves_the_event_to_the_other_which_delivers_it(
    cluster_with: Callable[..., Any], receivers: Callable[..., Any]
) -> None:
    receiver = receivers(hang=1)  # the first delivery never gets an answer
    cluster = await cluster_with(receiver.url)
    created = await cluster.admin("POST", "/v1/admin/keys", {"id": "k1", "budget": {"max_budget": "100", "soft_budget": "1"}})
    async with httpx.AsyncClient(timeout=30) as client:
        url = cluster.replicas[0].url
        await _cluster_call(client, url, "/v1/authorize", {"request_id": "r1", "api_key": created["key"]})
        await _cluster_call(client, url, "/v1/record", {"request_id": "r1", "cost": "2", "outcome": "success"})

    async def hung() -> bool:
        return receiver.hanging == 1

    assert await eventually(hung, 30), cluster.logs()
    [row] = await _outbox(cluster)
    assert row["status"] == "pending" and row["claim"], row  # leased by the replica that is stuck
    holder_pid = int(row["claim"].split(":")[0])
    [holder] = [r for r in cluster.replicas if r.process is not None and r.process.pid == holder_pid]
    holder.kill9()

    async def delivered() -> bool:
        rows = await _outbox(cluster)
        return rows[0]["status"] == "delivered"

    assert await eventually(delivered, 30), (await _outbox(cluster), cluster.logs())
    [row] = await _outbox(cluster)
    assert row["attempts"] == 2 and row["claim"] is None  # the killed attempt, then the other replica's
    assert list(receiver.accepted) == [row["id"]]  # accepted once (the receiver saw it twice: at least once)
    assert [a["event"]["id"] for a in receiver.arrivals] == [row["id"], row["id"]]


async def test_a_slack_url_gets_a_signed_text_body(
    app_factory: AppFactory, clean_pg: str, redis_url: str, receivers: Callable[..., Any]
) -> None:
    receiver = receivers()
    app = await app_factory(
        database_url=clean_pg, redis_url=redis_url, alert_webhook_urls=f"slack+{receiver.url}",
        alert_webhook_secret=SECRET, **FAST,
    )
    secret = await create_key(app.admin, id="k1", budget={"max_budget": "1.00", "soft_budget": "0.10"})
    await _spend(app, secret, "r1", "0.20")
    [event] = await _settled(app, 1)
    [arrival] = receiver.arrivals
    assert arrival["verified"] and set(arrival["event"]) == {"text"}
    assert "key k1 passed its soft budget of $0.100000" in arrival["event"]["text"]
    assert event["id"] in arrival["event"]["text"] and event["status"] == "delivered"


@pytest.mark.parametrize(
    ("settings", "named"),
    [
        ({"alert_thresholds": "80,150"}, "SPENDGATE_ALERT_THRESHOLDS"),
        ({"alert_thresholds": "eighty"}, "SPENDGATE_ALERT_THRESHOLDS"),
        ({"alert_webhook_urls": "ftp://hooks.example/x"}, "SPENDGATE_ALERT_WEBHOOK_URLS"),
        ({"alert_max_attempts": 0}, "SPENDGATE_ALERT_MAX_ATTEMPTS"),
        ({"decision_store_max_rows": 0}, "SPENDGATE_DECISION_STORE_MAX_ROWS"),
        ({"environment": "production", "admin_token": "a" * 20, "gateway_token": "g" * 20,
          "database_url": "postgresql://db/x", "alert_webhook_urls": "https://hooks.example/x"},
         "SPENDGATE_ALERT_WEBHOOK_SECRET"),
    ],
)
def test_alert_settings_that_cannot_work_stop_start_up_naming_the_variable(settings: dict[str, Any], named: str) -> None:
    from pydantic import ValidationError

    from spendgate.settings import Settings

    with pytest.raises(ValidationError, match=named):
        Settings(_env_file=None, **settings)  # type: ignore[call-arg]
