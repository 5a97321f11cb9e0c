"""Load shedding: past SPENDGATE_MAX_AUTHORIZE_IN_FLIGHT, authorize answers 503 at once; records never are shed."""

from __future__ import annotations

from contextlib import ExitStack
from decimal import Decimal

from support.app import RunningApp
from support.app import AppFactory
from support.scenario import authorize, create_key, record
from test_metrics import scrape, value


async def test_a_saturated_replica_sheds_authorize_with_503_and_recovers(
    app_factory: AppFactory, clean_pg: str, redis_url: str
) -> None:
    app: RunningApp = await app_factory(database_url=clean_pg, redis_url=redis_url, max_authorize_in_flight=2)
    secret = await create_key(app.admin, id="k-shed", budget={"max_budget": "1.00"})
    admitted = await authorize(app.gateway, request_id="before", api_key=secret, estimated_cost="0.10")
    assert admitted["decision"] == "allow"

    with ExitStack() as held:
        # Two authorizes in flight (held here, as slow requests would hold them): the replica is full.
        for _ in range(2):
            held.enter_context(app.runtime.authorize_slots.slot())
        shed = await app.gateway.post(
            "/v1/authorize", json={"request_id": "shed", "api_key": secret, "estimated_cost": "0.10"}
        )
        # A record is never shed: it finishes a call that already happened.
        recorded = await record(app.gateway, request_id="before", cost="0.05", outcome="success")

    assert shed.status_code == 503
    assert shed.json()["error"]["code"] == "unavailable"
    assert "SPENDGATE_MAX_AUTHORIZE_IN_FLIGHT" in shed.json()["error"]["message"]
    assert recorded["recorded"] is True
    # Nothing was decided or reserved for the shed request: its retry is decided afresh.
    retried = await authorize(app.gateway, request_id="shed", api_key=secret, estimated_cost="0.10")
    assert retried["decision"] == "allow"
    assert all(Decimal(charge["reserved"]) == 0 for charge in retried["charges"])
    assert app.runtime.authorize_slots.in_flight == 0
    assert value(await scrape(app), "spendgate_authorize_shed_total") == 1
