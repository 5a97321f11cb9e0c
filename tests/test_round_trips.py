"""Redis commands on the decision path, counted by Redis itself (INFO commandstats).

A record on the replica that authorized it is one round trip: the settle script, no read of the
decision (counters/replica_memory.py). On another replica it reads the decision first, as it must.
Commandstats also count the commands a script runs inside Redis; the client's own are EVALSHA (a
script) and GET (the decision read; settle, the one script a record runs, calls no GET), so those two
are what is compared. A
warm-up pair first loads every script (a first EVALSHA of an unknown script is retried after
SCRIPT LOAD).
"""

from __future__ import annotations


from support.app import AppFactory, RunningApp
from support.redis_stats import commands_during
from support.scenario import authorize, create_key, record

#: The background sweeper and reconciler are slowed so that only the requests' commands are counted.
_QUIET = {"expiry_interval_seconds": 3600, "reconcile_interval_seconds": 0}


async def _authorized(app: RunningApp, request_id: str) -> None:
    secret = await create_key(app.admin, id=f"k-{request_id}", budget={"max_budget": "1.00"})
    await authorize(app.gateway, request_id=f"warm-up-{request_id}", api_key=secret, estimated_cost="0.1")
    await record(app.gateway, request_id=f"warm-up-{request_id}", cost="0.01", outcome="success")
    assert (await authorize(app.gateway, request_id=request_id, api_key=secret, estimated_cost="0.1"))["decision"] == "allow"


async def test_a_record_on_the_replica_that_authorized_is_one_redis_call(
    app_factory: AppFactory, clean_pg: str, redis_url: str
) -> None:
    app = await app_factory(database_url=clean_pg, redis_url=redis_url, **_QUIET)
    await _authorized(app, "same")

    async def recorded() -> None:
        assert (await record(app.gateway, request_id="same", cost="0.05", outcome="success"))["duplicate"] is False

    assert await commands_during(redis_url, recorded, ("evalsha", "get")) == {"evalsha": 1}


async def test_a_record_on_another_replica_reads_the_decision_first(
    app_factory: AppFactory, clean_pg: str, redis_url: str
) -> None:
    first = await app_factory(database_url=clean_pg, redis_url=redis_url, **_QUIET)
    second = await app_factory(database_url=clean_pg, redis_url=redis_url, **_QUIET)
    await _authorized(first, "elsewhere")

    async def recorded() -> None:
        answer = await record(second.gateway, request_id="elsewhere", cost="0.05", outcome="success")
        assert answer["duplicate"] is False and answer["charges"]  # charged to the decision's ledgers

    assert await commands_during(redis_url, recorded, ("evalsha", "get")) == {"get": 1, "evalsha": 1}
