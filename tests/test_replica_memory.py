"""An authorize decided on figures a replica remembered (SPENDGATE_FIGURES_MAX_AGE_SECONDS) keeps
admission exact: two replicas on one PostgreSQL + Redis, replica A's memory held still (its clock
stopped) while replica B changes the ledger under it.

- A allow on stale figures that would overshoot the limit is refused by the reservation's atomic
  re-check, and the refusal shows the current figures.
- A refusal on stale figures is decided again on current ones (here: it becomes an allow); on remembered
  figures that are still current it stands, decided once.
- With the memory fresh, an authorize is one Redis call (the commit); with it off, two. A refusal on
  remembered figures that are still current is one Redis call too: the commit checks them.

Redis' commandstats count the commands a script runs too: the commit script itself does one GET
(its idempotency check) and one HMGET per held ledger; the read before it, when there is one, adds
a GET of the decision and an HMGET per ledger.
"""

from __future__ import annotations

import gc
from decimal import Decimal
from typing import Any

import pytest

from spendgate.counters import ReplicaMemory
from support.app import AppFactory, RunningApp
from support.redis_stats import client_commands_during, commands_during
from support.scenario import authorize, create_key, record

#: Only the requests' own Redis commands are counted (no sweeper, no reconciler).
_QUIET = {"expiry_interval_seconds": 3600, "reconcile_interval_seconds": 0}


def _hold_memory_still(app: RunningApp) -> None:
    counters = app.runtime.counters
    assert isinstance(counters, ReplicaMemory)
    counters.clock = lambda: 1_000.0  # nothing it remembers ever ages


def _key_charge(answer: dict[str, Any]) -> dict[str, Any]:
    (charge,) = [c for c in answer["charges"] if c["entity"]["type"] == "key"]
    return charge


async def _two_replicas(app_factory: AppFactory, clean_pg: str, redis_url: str) -> tuple[RunningApp, RunningApp, str]:
    first = await app_factory(database_url=clean_pg, redis_url=redis_url, figures_max_age_seconds=1, **_QUIET)
    second = await app_factory(database_url=clean_pg, redis_url=redis_url, figures_max_age_seconds=1, **_QUIET)
    secret = await create_key(first.admin, id="k-mem", budget={"max_budget": "1.00"})
    _hold_memory_still(first)
    return first, second, secret


async def test_an_allow_on_remembered_figures_never_overshoots_the_limit(
    app_factory: AppFactory, clean_pg: str, redis_url: str
) -> None:
    a, b, secret = await _two_replicas(app_factory, clean_pg, redis_url)
    assert (await authorize(a.gateway, request_id="a1", api_key=secret, estimated_cost="0.10"))["decision"] == "allow"
    assert (await authorize(b.gateway, request_id="b1", api_key=secret, estimated_cost="0.85"))["decision"] == "allow"

    # A remembers reserved 0.10; the ledger holds 0.95: 0.95 + 0.10 > 1.00.
    refused = await authorize(a.gateway, request_id="a2", api_key=secret, estimated_cost="0.10")
    assert refused["decision"] == "deny"
    assert [r["code"] for r in refused["reasons"]] == ["budget_exceeded"]
    assert _key_charge(refused)["reserved"] == "0.950000"  # current figures, not the remembered ones

    # What the refused commit found is now remembered: a request that fits is admitted on it.
    fits = await authorize(a.gateway, request_id="a3", api_key=secret, estimated_cost="0.05")
    assert fits["decision"] == "allow" and _key_charge(fits)["reserved"] == "0.950000"
    ledger = (await a.admin.get("/v1/admin/keys/k-mem")).json()["ledgers"][0]
    assert Decimal(ledger["spent"]) + Decimal(ledger["reserved"]) == Decimal("1.00")  # exactly full, never past


async def test_a_refusal_on_remembered_figures_is_decided_again_on_current_ones(
    app_factory: AppFactory, clean_pg: str, redis_url: str
) -> None:
    a, b, secret = await _two_replicas(app_factory, clean_pg, redis_url)
    asked = _count_decisions(a)
    assert (await authorize(b.gateway, request_id="b1", api_key=secret, estimated_cost="0.90"))["decision"] == "allow"
    assert (await authorize(a.gateway, request_id="a1", api_key=secret, estimated_cost="0.05"))["decision"] == "allow"
    # B's request finishes at no cost: its 0.90 is released. A still remembers reserved 0.95.
    await record(b.gateway, request_id="b1", cost="0", outcome="failure")

    admitted = await authorize(a.gateway, request_id="a2", api_key=secret, estimated_cost="0.50")
    assert admitted["decision"] == "allow"
    assert _key_charge(admitted)["reserved"] == "0.050000"
    assert asked == ["a1", "a2", "a2"]  # a2 refused on what A remembered, then admitted on what it read


def _count_decisions(app: RunningApp) -> list[str]:
    """The request ids the replica's policy engine decides on, one entry per evaluation."""
    engine = app.runtime.policy
    decide = engine.decide
    asked: list[str] = []

    async def counted(input_doc: dict[str, Any]) -> Any:
        asked.append(input_doc["request"]["request_id"])
        return await decide(input_doc)

    engine.decide = counted  # type: ignore[method-assign]  # before the first authorize takes the method
    return asked


async def test_a_refusal_on_remembered_figures_that_are_still_current_is_decided_once(
    app_factory: AppFactory, clean_pg: str, redis_url: str
) -> None:
    """In a storm of denials every request was decided twice: on remembered figures, then again on the
    current ones. When the current ones are the remembered ones, the first refusal stands."""
    a, _, secret = await _two_replicas(app_factory, clean_pg, redis_url)
    asked = _count_decisions(a)
    assert (await authorize(a.gateway, request_id="a1", api_key=secret, estimated_cost="0.95"))["decision"] == "allow"

    refused = await authorize(a.gateway, request_id="a2", api_key=secret, estimated_cost="0.10")
    assert refused["decision"] == "deny"
    assert [r["code"] for r in refused["reasons"]] == ["budget_exceeded"]
    assert _key_charge(refused)["reserved"] == "0.950000"
    assert asked == ["a1", "a2"]  # one evaluation each


async def test_a_refusal_on_remembered_figures_that_are_still_current_is_one_redis_call(
    app_factory: AppFactory, clean_pg: str, redis_url: str
) -> None:
    """The check that the remembered figures are current is the commit's, not a read before it."""
    a, b, secret = await _two_replicas(app_factory, clean_pg, redis_url)
    assert (await authorize(a.gateway, request_id="a1", api_key=secret, estimated_cost="0.95"))["decision"] == "allow"
    await authorize(a.gateway, request_id="warm-up", api_key=secret, estimated_cost="0.50")  # loads the script

    async def refused() -> None:
        answer = await authorize(a.gateway, request_id="a2", api_key=secret, estimated_cost="0.10")
        assert answer["decision"] == "deny" and _key_charge(answer)["reserved"] == "0.950000"

    assert await client_commands_during(redis_url, refused) == ["EVALSHA"]
    again = await authorize(b.gateway, request_id="a2", api_key=secret, estimated_cost="0.01")
    assert again["decision"] == "deny"  # the refusal is stored in Redis: a retry on any replica gets it back


async def test_an_authorize_on_remembered_figures_is_one_redis_call(
    app_factory: AppFactory, clean_pg: str, redis_url: str
) -> None:
    a, _, secret = await _two_replicas(app_factory, clean_pg, redis_url)
    await authorize(a.gateway, request_id="warm-up", api_key=secret, estimated_cost="0.01")  # loads the script

    async def authorized() -> None:
        assert (await authorize(a.gateway, request_id="a1", api_key=secret, estimated_cost="0.01"))["decision"] == "allow"

    # The commit alone: its own GET and HMGET (one held ledger), no read before it.
    assert await commands_during(redis_url, authorized, ("get", "hmget", "evalsha")) == {"get": 1, "hmget": 1, "evalsha": 1}


async def test_without_remembered_figures_an_authorize_reads_first(
    app_factory: AppFactory, clean_pg: str, redis_url: str
) -> None:
    app = await app_factory(database_url=clean_pg, redis_url=redis_url, figures_max_age_seconds=0, **_QUIET)
    secret = await create_key(app.admin, id="k-fresh", budget={"max_budget": "1.00"})
    await authorize(app.gateway, request_id="warm-up", api_key=secret, estimated_cost="0.01")

    async def authorized() -> None:
        assert (await authorize(app.gateway, request_id="r1", api_key=secret, estimated_cost="0.01"))["decision"] == "allow"

    # A pipelined read (GET of the decision, HMGET of the ledger), then the commit.
    assert await commands_during(redis_url, authorized, ("get", "hmget", "evalsha")) == {"get": 2, "hmget": 2, "evalsha": 1}


async def test_remembered_decisions_add_nothing_for_the_garbage_collector_to_trace(
    app_factory: AppFactory, clean_pg: str, redis_url: str
) -> None:
    """The replica keeps thousands of recent decisions alive for seconds; as dict trees they were
    ~10 traced objects each, and the full collections over them paused requests for ~80 ms."""
    app = await app_factory(database_url=clean_pg, redis_url=redis_url, **_QUIET)
    secret = await create_key(app.admin, id="k-gc", budget={"max_budget": "1000.00"})
    await authorize(app.gateway, request_id="warm-up", api_key=secret, estimated_cost="0.01")
    counters = app.runtime.counters
    assert isinstance(counters, ReplicaMemory)

    async def traced_after(count: int, prefix: str) -> int:
        for i in range(count):
            await authorize(app.gateway, request_id=f"{prefix}-{i}", api_key=secret, estimated_cost="0.01")
        # A pass untracks containers holding atomic values only: the first the ledger-id tuples, the
        # second the entries holding them (in the service the young and middle passes do this).
        gc.collect()
        gc.collect()
        return len(gc.get_objects())

    before = await traced_after(50, "settle")  # per-shape caches and pools filled first
    after = await traced_after(400, "gc")
    assert [await _remembered(counters, f"gc-{i}") for i in (0, 399)] == [True, True]  # remembered...
    assert after - before < 100, f"{after - before} more traced objects after 400 remembered decisions"  # ...untraced


async def _remembered(counters: ReplicaMemory, request_id: str) -> bool:
    stored = await counters.prior_decision(request_id)
    return stored is not None and stored.body["request_id"] == request_id


async def test_a_decision_committed_through_redis_is_encoded_once(
    app_factory: AppFactory, clean_pg: str, redis_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Redis keeps the decision's JSON; the replica remembers those very bytes rather than encoding
    the decision a second time (each encoding was a serialisation of the whole body per authorize)."""
    from spendgate.counters import holds, redis_counters, replica_memory

    app = await app_factory(database_url=clean_pg, redis_url=redis_url, **_QUIET)
    secret = await create_key(app.admin, id="k-once", budget={"max_budget": "1.00"})
    encoded: list[str] = []

    def counted(decision: Any) -> bytes:
        encoded.append(decision.request_id)
        return holds.encode_decision(decision)

    monkeypatch.setattr(redis_counters, "encode_decision", counted)
    monkeypatch.setattr(replica_memory, "encode_decision", counted)
    answer = await authorize(app.gateway, request_id="once-1", api_key=secret, estimated_cost="0.01")

    assert encoded == ["once-1"]
    counters = app.runtime.counters
    assert isinstance(counters, ReplicaMemory)
    remembered = await counters.prior_decision("once-1")
    assert remembered is not None and remembered.body == answer  # what it remembers is what was answered
