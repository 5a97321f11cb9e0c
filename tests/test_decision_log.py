"""The decision log: one JSON line per decision on `spendgate.decisions`, never a key secret."""

from __future__ import annotations

import hashlib
import json
import logging
import uuid
from typing import Any

import pytest

from support.app import RunningApp
from support.app import AppFactory
from support.scenario import authorize, create, create_key, record

pytestmark = pytest.mark.asyncio


def decision_lines(caplog: pytest.LogCaptureFixture) -> list[dict[str, Any]]:
    return [json.loads(r.getMessage()) for r in caplog.records if r.name == "spendgate.decisions"]


async def test_each_decision_is_one_json_line_with_its_facts(
    any_app: RunningApp, caplog: pytest.LogCaptureFixture,
) -> None:
    await create(any_app.admin, "users", {"id": "ada", "budget": {"max_budget": "1.00", "soft_budget": "0.10"}})
    secret = await create_key(any_app.admin, id="k1", user_id="ada")
    caplog.set_level(logging.INFO, logger="spendgate.decisions")

    await authorize(any_app.gateway, request_id="r1", api_key=secret, model="gpt-4o", tags=["search"],
                    estimated_cost="0.20")
    await record(any_app.gateway, request_id="r1", cost="0.15", outcome="success")
    await authorize(any_app.gateway, request_id="r2", api_key=secret, estimated_cost="5")
    await authorize(any_app.gateway, request_id="r1", api_key=secret, estimated_cost="0.20")  # a replay: no decision
    await record(any_app.gateway, request_id="r1", cost="0.15", outcome="success")
    assert (await any_app.gateway.post("/v1/record", json={"request_id": "r1", "cost": "1", "outcome": "success"})
            ).status_code == 409

    lines = decision_lines(caplog)

    assert [(e["phase"], e["request_id"], e["decision"]) for e in lines] == [
        ("authorize", "r1", "allow"), ("record", "r1", "recorded"), ("authorize", "r2", "deny"),
        ("record", "r1", "duplicate"), ("record", "r1", "conflict"),
    ]
    assert len({e["decision_id"] for e in lines}) == len(lines)
    assert all(uuid.UUID(e["decision_id"]) and e["latency_ms"] >= 0 for e in lines)
    allow, recorded, deny = lines[:3]
    revision = allow["policy_revision"]
    assert revision and recorded["policy_revision"] == deny["policy_revision"] == revision
    assert {(c["type"], c["id"], c["window"]) for c in allow["charges"]} == {
        ("key", "k1", None), ("user", "ada", None), ("tag", "search", None)}
    assert allow["reasons"] == [] and allow["key_id"] == "k1" and allow["model"] == "gpt-4o"
    assert allow["estimated_cost"] == "0.200000"
    assert allow["alerts"] == []
    assert (recorded["cost"], recorded["outcome"]) == ("0.150000", "success")
    assert recorded["charges"] == allow["charges"]
    assert deny["reasons"] == [{"code": "budget_exceeded", "entity": {"type": "user", "id": "ada"}}]
    assert deny["alerts"] == ["soft_budget_crossed"]
    assert lines[4]["reasons"] == [{"code": "conflict", "entity": None}] and lines[4]["cost"] == "1.000000"
    # One line, one record: nothing else is logged on this logger.
    assert all("\n" not in r.getMessage() for r in caplog.records if r.name == "spendgate.decisions")


async def test_no_key_secret_or_its_hash_is_ever_logged(any_app: RunningApp, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)  # everything, from every logger
    secret = await create_key(any_app.admin, id="k1", budget={"max_budget": "1"})
    unknown = "sk-sg-never-issued-0123456789abcdef"

    await authorize(any_app.gateway, request_id="r1", api_key=secret, estimated_cost="0.10")
    await record(any_app.gateway, request_id="r1", cost="0.10", outcome="success")
    await record(any_app.gateway, request_id="r2", api_key=secret, cost="0.10", outcome="success")
    await authorize(any_app.gateway, request_id="r3", api_key=unknown)
    await authorize(any_app.gateway, request_id="r4", api_key=secret, estimated_cost="5")

    assert len(decision_lines(caplog)) == 5
    everything = caplog.text + "\n".join(
        f"{r.getMessage()} {r.args!r} {r.__dict__!r}" for r in caplog.records
    )
    for leaked in (secret, unknown):
        assert leaked not in everything
        assert hashlib.sha256(leaked.encode()).hexdigest() not in everything


async def test_the_decision_log_can_be_switched_off(
    app_factory: AppFactory, sqlite_url: str, caplog: pytest.LogCaptureFixture,
) -> None:
    app = await app_factory(database_url=sqlite_url, decision_log=False)
    secret = await create_key(app.admin, id="k1")
    caplog.set_level(logging.INFO, logger="spendgate.decisions")

    await authorize(app.gateway, request_id="r1", api_key=secret)

    assert decision_lines(caplog) == []
