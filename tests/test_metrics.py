"""GET /metrics: decisions by outcome and reason, stage latencies, records, duplicates, conflicts,
expiries and counter rebuilds — on bounded labels only."""

from __future__ import annotations

import asyncio

import pytest
from prometheus_client.parser import text_string_to_metric_families

from support.app import RunningApp
from spendgate.metrics import Metrics
from support.app import AppFactory
from support.scenario import authorize, create_key, record

pytestmark = pytest.mark.asyncio

Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


async def scrape(app: RunningApp) -> Samples:
    response = await app.anonymous.get("/metrics")
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("text/plain")
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(response.text)
        for sample in family.samples
    }


def value(samples: Samples, name: str, **labels: str) -> float:
    return samples[(name, tuple(sorted(labels.items())))]


async def test_metrics_count_an_allow_a_deny_a_duplicate_and_a_conflict(any_app: RunningApp) -> None:
    secret = await create_key(any_app.admin, id="k-metrics", budget={"max_budget": "1.00"})
    allowed = await authorize(any_app.gateway, request_id="r1", api_key=secret, estimated_cost="0.50")
    assert allowed["decision"] == "allow"
    denied = await authorize(any_app.gateway, request_id="r2", api_key=secret, estimated_cost="2.00")
    assert [reason["code"] for reason in denied["reasons"]] == ["budget_exceeded"]
    await record(any_app.gateway, request_id="r1", cost="0.40", outcome="success")
    assert (await record(any_app.gateway, request_id="r1", cost="0.40", outcome="success"))["duplicate"] is True
    conflict = await any_app.gateway.post("/v1/record", json={"request_id": "r1", "cost": "0.41", "outcome": "success"})
    assert conflict.status_code == 409
    await authorize(any_app.gateway, request_id="r1", api_key=secret, estimated_cost="0.50")  # a replay

    samples = await scrape(any_app)

    assert value(samples, "spendgate_decisions_total", phase="authorize", decision="allow") == 1
    assert value(samples, "spendgate_decisions_total", phase="authorize", decision="deny") == 1
    assert value(samples, "spendgate_decisions_total", phase="record", decision="recorded") == 1
    assert value(samples, "spendgate_decisions_total", phase="record", decision="duplicate") == 1
    assert value(samples, "spendgate_decisions_total", phase="record", decision="conflict") == 1
    assert value(samples, "spendgate_deny_reasons_total", code="budget_exceeded", entity_type="key") == 1
    assert value(samples, "spendgate_deny_reasons_total", code="budget_exceeded", entity_type="user") == 0
    assert value(samples, "spendgate_records_total", outcome="success") == 1
    assert value(samples, "spendgate_records_total", outcome="failure") == 0
    assert value(samples, "spendgate_record_duplicates_total") == 1
    assert value(samples, "spendgate_record_conflicts_total") == 1
    assert value(samples, "spendgate_authorize_replays_total") == 1
    # Both decisions went through facts and policy, the replay only through facts (it names the
    # ledgers read in the same round trip as the prior decision) and the counters; every record
    # that answered 200 through the database. The histograms saw each call once.
    for stage, calls in (("facts", 3), ("policy", 2), ("counters", 3), ("total", 3)):
        assert value(samples, "spendgate_stage_seconds_count", phase="authorize", stage=stage) == calls, stage
    assert value(samples, "spendgate_stage_seconds_count", phase="record", stage="database") == 2
    assert value(samples, "spendgate_stage_seconds_count", phase="record", stage="total") == 2
    assert value(samples, "spendgate_stage_seconds_sum", phase="authorize", stage="total") > 0
    assert value(samples, "spendgate_stage_seconds_bucket", phase="authorize", stage="total", le="+Inf") == 3


async def test_metrics_labels_never_name_a_request_or_a_key(any_app: RunningApp) -> None:
    secret = await create_key(any_app.admin, id="k-label-probe", budget={"max_budget": "1.00"})
    await authorize(any_app.gateway, request_id="req-label-probe", api_key=secret, estimated_cost="5")

    text = (await any_app.anonymous.get("/metrics")).text

    assert "label-probe" not in text
    assert secret not in text


async def test_metrics_count_expiries_and_counter_rebuilds(
    app_factory: AppFactory, clean_pg: str, redis_url: str,
) -> None:
    app = await app_factory(database_url=clean_pg, redis_url=redis_url, reservation_ttl=1, expiry_interval_seconds=0.1)
    secret = await create_key(app.admin, id="k1")
    await authorize(app.gateway, request_id="r1", api_key=secret, estimated_cost="0.10")

    for _ in range(60):
        samples = await scrape(app)
        if value(samples, "spendgate_reservation_expiries_total") >= 1:
            break
        await asyncio.sleep(0.1)

    assert value(samples, "spendgate_reservation_expiries_total") == 1
    # The first authorize found no counter for the key's ledger in the fresh Redis and rebuilt it.
    assert value(samples, "spendgate_counter_rebuilds_total") >= 1
    assert value(samples, "process_resident_memory_bytes") > 0


@pytest.mark.parametrize(("access", "anonymous", "admin"), [("admin", 401, 200), ("off", 404, 404)])
async def test_metrics_access_can_require_the_admin_token_or_be_off(
    app_factory: AppFactory, sqlite_url: str, access: str, anonymous: int, admin: int,
) -> None:
    app = await app_factory(database_url=sqlite_url, metrics_access=access)

    assert (await app.anonymous.get("/metrics")).status_code == anonymous
    assert (await app.gateway.get("/metrics")).status_code == anonymous
    assert (await app.admin.get("/metrics")).status_code == admin


async def test_each_metrics_instance_has_its_own_registry() -> None:
    first, second = Metrics(), Metrics()
    first.record_conflicts.inc()

    assert b"spendgate_record_conflicts_total 1.0" in first.render()
    assert b"spendgate_record_conflicts_total 0.0" in second.render()
