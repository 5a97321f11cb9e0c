"""One contract for the policy-engine adapters: the embedded Rego engine (regorus's compiled VM and its
interpreter) and OPA over its REST API.

The OPA adapter talks to tests/support/opa_compat.py, a real HTTP server speaking OPA's REST API
(routes, status codes, bodies) and compiling and evaluating with OPA's own Go engine (opa_bindings,
requirements/opa-engine.txt), so no OPA binary is needed and the two adapters are regorus and OPA.
With SPENDGATE_TEST_OPA_URL set, every test that needs no failure knob runs against that OPA instead.
Inputs follow policies/INTERFACE.md; expectations follow API.md ("The shipped policy charges ...").

Latency (skipped unless asked): SPENDGATE_TEST_BENCH=2000 .venv/bin/python -m pytest
tests/test_policy_engines_contract.py -k latency -s -q
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import os
import shutil
import socket
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import datetime, timezone
from decimal import ROUND_CEILING, Decimal
from pathlib import Path
from typing import Any, NamedTuple

import httpx
import pytest

from spendgate.errors import PolicyError, Unavailable
from spendgate.money import format_nanos, to_nanos
from spendgate.policy import PolicyDecision, PolicySet, load_policy_set
from spendgate.policy.embedded import EmbeddedEngine, compile_policy_set
from spendgate.policy.engine import DECISION_PATH, DECISION_QUERY, PriceQuote
from spendgate.policy.opa import POLICY_ID_PREFIX, OpaEngine, policy_id
from support.opa_compat import OpaCompatServer

POLICY_DIR = Path(__file__).resolve().parents[1] / "policies"
#: "embedded": regorus's compiled VM deciding every decision unchecked; "interpreter": regorus's interpreter.
ADAPTERS = ["embedded", "interpreter", "opa"]
REAL_OPA_URL = os.environ.get("SPENDGATE_TEST_OPA_URL")

Engine = EmbeddedEngine | OpaEngine
MakeEngine = Callable[..., Awaitable[Engine]]

# -- inputs (policies/INTERFACE.md) -------------------------------------------------------------

NOW = datetime(2026, 11, 23, 3, 0, 0, tzinfo=timezone.utc)
DAY_START, DAY_END = "2026-11-23T00:00:00Z", "2026-11-24T00:00:00Z"


def ns(moment: datetime) -> int:
    delta = moment - datetime(1970, 1, 1, tzinfo=timezone.utc)
    return (delta.days * 86_400 + delta.seconds) * 1_000_000_000 + delta.microseconds * 1_000


def ledger(kind: str, entity_id: str, *, limit: str | None = None, soft: str | None = None,
           spent: str = "0", reserved: str = "0", window: str | None = "1d") -> dict[str, Any]:
    """A candidate ledger; without a limit it is the one open-ended ledger of an entity with no budget."""
    window = window if limit is not None else None
    nanos = {"limit": limit, "soft_budget": soft, "spent": spent, "reserved": reserved}
    amounts = {name: to_nanos(value) if value is not None else None for name, value in nanos.items()}
    return {
        "id": f"{kind}:{entity_id}:{window or '-'}:{0 if window is None else 1795392000}",
        "entity": {"type": kind, "id": entity_id},
        "window": window,
        **amounts,
        "period_start": DAY_START if window else None,
        "resets_at": DAY_END if window else None,
        "display": {name: format_nanos(v) if v is not None else None for name, v in amounts.items()},
    }


def _base(key: dict[str, Any] | None, ledgers: list[dict[str, Any]], **entities: Any) -> dict[str, Any]:
    return {
        "request": {
            "request_id": "req-1", "phase": "authorize", "model": "gpt-4o", "end_user": "cust-9",
            "tags": ["search"], "estimated_cost": to_nanos("0.02"), "now": "2026-11-23T03:00:00Z", "now_ns": ns(NOW),
        },
        "key": key,
        "user": None, "team": None, "team_member": None, "orgs": {},
        "end_user": {"id": "cust-9", "blocked": False, "known": True},
        "tags": [{"id": "search", "blocked": False, "known": True}],
        "ledgers": ledgers,
        **entities,
    }


def _key(key_id: str, *, user_id: str | None = None, team_id: str | None = None) -> dict[str, Any]:
    return {"id": key_id, "user_id": user_id, "team_id": team_id, "blocked": False,
            "expires_at": None, "expires_at_ns": None, "models": []}


def personal_key() -> dict[str, Any]:
    """Key kp of user u1 (org o1), with a budget on gpt-4o; end user cust-9 has no budget."""
    return _base(
        _key("kp", user_id="u1"),
        [
            ledger("key", "kp", limit="10", soft="8", spent="1.25", reserved="0.02"),
            ledger("key_model", "kp/gpt-4o", limit="5", spent="0.5"),
            ledger("user", "u1", limit="50", spent="12"),
            ledger("org", "o1", limit="1000", window="1mo", spent="300"),
            ledger("end_user", "cust-9"),
            ledger("tag", "search", limit="100", spent="3"),
        ],
        user={"id": "u1", "org_id": "o1", "blocked": False},
        orgs={"o1": {"id": "o1", "blocked": False}},
    )


def team_key() -> dict[str, Any]:
    """Key kt of team t1 (org o1) naming member u1, whose own org is o2: u1 and o2 are candidates only."""
    return _base(
        _key("kt", user_id="u1", team_id="t1"),
        [
            ledger("key", "kt", limit="20", spent="2"),
            ledger("key_model", "kt/gpt-4o", limit="5", spent="1"),
            ledger("team", "t1", limit="100", soft="80", spent="40"),
            ledger("team_member", "t1/u1", limit="10", spent="4"),
            ledger("org", "o1", limit="1000", spent="300"),
            ledger("user", "u1", limit="50", spent="12"),
            ledger("org", "o2", limit="500", spent="20"),
            ledger("end_user", "cust-9", limit="3", spent="1"),
            ledger("tag", "search"),
        ],
        user={"id": "u1", "org_id": "o2", "blocked": False},
        team={"id": "t1", "org_id": "o1", "blocked": False},
        team_member={"id": "t1/u1", "team_id": "t1", "user_id": "u1", "blocked": False},
        orgs={"o1": {"id": "o1", "blocked": False}, "o2": {"id": "o2", "blocked": False}},
    )


def service_key() -> dict[str, Any]:
    return _base(
        _key("ks"),
        [ledger("key", "ks", limit="30", spent="3"), ledger("end_user", "cust-9"), ledger("tag", "search")],
    )


def unknown_key() -> dict[str, Any]:
    return _base(None, [ledger("end_user", "cust-9"), ledger("tag", "search")])


def changed(make: Callable[[], dict[str, Any]], **paths: Any) -> Callable[[], dict[str, Any]]:
    """`make` with changes: `key__blocked=True`, `request__estimated_cost=None`, `ledger__team=dict(...)`."""

    def build() -> dict[str, Any]:
        doc = make()
        for path, value in paths.items():
            head, _, field = path.partition("__")
            if head == "ledger":
                target = next(lg for lg in doc["ledgers"] if lg["entity"]["type"] == field)
                target.update(ledger(field, target["entity"]["id"], **value))
            elif head == "orgs":
                doc["orgs"][field]["blocked"] = value
            elif head == "tags":
                doc["tags"][0][field] = value
            else:
                doc[head][field] = value
        return doc

    return build


# -- expectations (API.md) ----------------------------------------------------------------------


class Expect(NamedTuple):
    allow: bool
    #: (code, entity type, entity id) of each reason.
    reasons: frozenset[tuple[str, str, str | None]] = frozenset()
    #: entities charged, as "type:id"; None: not checked.
    charged: frozenset[str] | None = None
    alerts: frozenset[str] = frozenset()


PERSONAL = frozenset({"key:kp", "key_model:kp/gpt-4o", "user:u1", "org:o1", "end_user:cust-9", "tag:search"})
TEAM = frozenset({"key:kt", "key_model:kt/gpt-4o", "team:t1", "team_member:t1/u1", "org:o1", "end_user:cust-9",
                  "tag:search"})
SERVICE = frozenset({"key:ks", "end_user:cust-9", "tag:search"})


def over(limit: str = "5") -> dict[str, str]:
    """A ledger spent up to its limit."""
    return {"limit": limit, "spent": limit}


def refused(code: str, kind: str, entity_id: str | None) -> frozenset[tuple[str, str, str | None]]:
    return frozenset({(code, kind, entity_id)})


CASES = {
    "personal key within budget": (personal_key, Expect(True, charged=PERSONAL)),
    "team key with member within budget": (team_key, Expect(True, charged=TEAM)),
    "team key never charges the user's personal ledgers": (
        changed(team_key, ledger__user=over()), Expect(True, charged=TEAM)),
    "service key": (service_key, Expect(True, charged=SERVICE)),
    "unknown key": (unknown_key, Expect(False, refused("invalid_key", "key", None), frozenset())),
    "blocked key": (changed(personal_key, key__blocked=True), Expect(False, refused("key_blocked", "key", "kp"))),
    "blocked user": (changed(personal_key, user__blocked=True), Expect(False, refused("key_blocked", "user", "u1"))),
    "blocked team": (changed(team_key, team__blocked=True), Expect(False, refused("key_blocked", "team", "t1"))),
    "blocked org": (changed(personal_key, orgs__o1=True), Expect(False, refused("key_blocked", "org", "o1"))),
    "blocked end user": (
        changed(personal_key, end_user__blocked=True), Expect(False, refused("key_blocked", "end_user", "cust-9"))),
    "blocked tag": (changed(service_key, tags__blocked=True), Expect(False, refused("key_blocked", "tag", "search"))),
    "expired key": (
        changed(personal_key, key__expires_at="2026-11-01T00:00:00Z",
                key__expires_at_ns=ns(datetime(2026, 11, 1, tzinfo=timezone.utc))),
        Expect(False, refused("key_expired", "key", "kp"), PERSONAL)),
    "key expiring later": (
        changed(personal_key, key__expires_at="2026-12-01T00:00:00Z",
                key__expires_at_ns=ns(datetime(2026, 12, 1, tzinfo=timezone.utc))),
        Expect(True, charged=PERSONAL)),
    "model not allowed": (
        changed(personal_key, key__models=["gpt-4o-mini"]), Expect(False, refused("model_not_allowed", "key", "kp"))),
    "model allowed": (changed(personal_key, key__models=["gpt-4o", "gpt-4o-mini"]), Expect(True, charged=PERSONAL)),
    "soft budgets crossed": (
        changed(team_key, ledger__key={"limit": "20", "soft": "8", "spent": "8.1"},
                ledger__team={"limit": "100", "soft": "80", "spent": "80"}),
        Expect(True, charged=TEAM, alerts=frozenset({"key:kt", "team:t1"}))),
    "no estimate at the limit": (
        changed(personal_key, request__estimated_cost=None,
                ledger__key={"limit": "10", "spent": "9.98", "reserved": "0.02"}),
        Expect(False, refused("budget_exceeded", "key", "kp"), PERSONAL)),
    "no estimate below the limit": (
        changed(personal_key, request__estimated_cost=None,
                ledger__key={"limit": "10", "spent": "9.97", "reserved": "0.02"}),
        Expect(True, charged=PERSONAL)),
    "estimate filling the limit exactly": (
        changed(personal_key, ledger__key={"limit": "10", "spent": "9.96", "reserved": "0.02"}),
        Expect(True, charged=PERSONAL)),
    "estimate one nano-dollar over the limit": (
        changed(personal_key, ledger__key={"limit": "10", "spent": "9.960000001", "reserved": "0.02"}),
        Expect(False, refused("budget_exceeded", "key", "kp"), PERSONAL)),
    "several reasons at once": (
        changed(team_key, key__blocked=True, key__models=["gpt-4o-mini"], ledger__team=over()),
        Expect(False, frozenset({("key_blocked", "key", "kt"), ("model_not_allowed", "key", "kt"),
                                 ("budget_exceeded", "team", "t1")}), TEAM)),
    "record phase is attributed alike": (changed(team_key, request__phase="record"), Expect(True, charged=TEAM)),
}
for _kind, _make in [("key", personal_key), ("key_model", personal_key), ("user", personal_key),
                     ("org", personal_key), ("tag", personal_key), ("team", team_key),
                     ("team_member", team_key), ("end_user", team_key)]:
    _id = next(lg["entity"]["id"] for lg in _make()["ledgers"] if lg["entity"]["type"] == _kind)
    CASES[f"{_kind} over budget"] = (
        changed(_make, **{f"ledger__{_kind}": over()}),
        Expect(False, refused("budget_exceeded", _kind, _id), PERSONAL if _make is personal_key else TEAM),
    )


def charged_entities(decision: PolicyDecision, input_doc: dict[str, Any]) -> frozenset[str]:
    by_id = {lg["id"]: lg["entity"] for lg in input_doc["ledgers"]}
    return frozenset(f"{by_id[c]['type']}:{by_id[c]['id']}" for c in decision.charges)


# -- fixtures -----------------------------------------------------------------------------------


@pytest.fixture(scope="session")
def real_policies() -> PolicySet:
    return load_policy_set(POLICY_DIR)


@pytest.fixture
def opa_url(opa: OpaCompatServer) -> str:
    return REAL_OPA_URL or opa.url


@pytest.fixture
async def make_engine(opa_url: str) -> AsyncIterator[MakeEngine]:
    """`await make_engine(adapter, policies, **options)`: a started engine, closed after the test."""
    made: list[OpaEngine] = []

    async def make(adapter: str, policies: PolicySet, **options: Any) -> Engine:
        if adapter in ("embedded", "interpreter"):
            return EmbeddedEngine(policies, compiled=adapter == "embedded", check_every=0)
        engine = OpaEngine(options.pop("url", opa_url), policies, **options)
        made.append(engine)
        await engine.start()
        return engine

    yield make
    for engine in made:
        await engine.close()


@pytest.fixture(params=ADAPTERS)
def adapter(request: pytest.FixtureRequest) -> str:
    return str(request.param)


def policy_dir(root: Path, modules: dict[str, str], data: dict[str, Any] | None = None) -> PolicySet:
    """A stand-in policy set written under `root`."""
    for name, source in modules.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_text(source)
    if data is not None:
        (root / "data.json").write_text(json.dumps(data))
    return load_policy_set(root)


def copy_of_real_policies(root: Path, edits: dict[str, tuple[str, str]]) -> Path:
    """The real policies copied to `root`, each `{file: (old, new)}` edit applied (and asserted to apply)."""
    shutil.copytree(POLICY_DIR, root)
    for name, (old, new) in edits.items():
        path = root / name
        text = path.read_text()
        assert old in text, f"{old!r} is no longer in {path}: update this test"
        path.write_text(text.replace(old, new))
    return root


CHARGE_USER = {"data.json": ('"team_keys_charge_user": false', '"team_keys_charge_user": true')}
GOOD_RESULT = 'package spendgate.decision\n\nresult := {"allow": true, "charges": [], "reasons": [], "alerts": []}\n'

# -- the contract: decisions --------------------------------------------------------------------


@pytest.mark.parametrize("case", CASES, ids=list(CASES))
async def test_decisions_follow_the_shipped_policy(
    adapter: str, case: str, make_engine: MakeEngine, real_policies: PolicySet
) -> None:
    make, expect = CASES[case]
    input_doc = make()
    engine = await make_engine(adapter, real_policies)

    decision = await engine.decide(input_doc)

    assert decision.allow is expect.allow, decision.reasons
    assert {(r["code"], r["entity"]["type"], r["entity"]["id"]) for r in decision.reasons} == expect.reasons
    if expect.charged is not None:
        assert charged_entities(decision, input_doc) == expect.charged
    assert {f"{a['entity']['type']}:{a['entity']['id']}" for a in decision.alerts} == expect.alerts
    assert decision.revision == real_policies.revision == engine.revision


def _regorus_result(policies: PolicySet, input_doc: dict[str, Any]) -> Any:
    engine = compile_policy_set(policies)
    engine.set_input_json(json.dumps(input_doc))
    rows = json.loads(engine.eval_query_as_json(DECISION_QUERY)).get("result") or []
    return rows[0]["expressions"][0]["value"] if rows else None


async def test_each_adapter_names_what_decides(adapter: str, make_engine: MakeEngine, real_policies: PolicySet) -> None:
    engine = await make_engine(adapter, real_policies)
    assert engine.evaluator == {"embedded": "compiled", "interpreter": "interpreter", "opa": "opa"}[adapter]


@pytest.mark.parametrize("case", CASES, ids=list(CASES))
async def test_both_adapters_give_identical_decisions(
    case: str, opa: OpaCompatServer, opa_url: str, make_engine: MakeEngine, real_policies: PolicySet
) -> None:
    """The embedded regorus engine against the OPA adapter on OPA's own engine: the validated decision
    and the whole result document (OPA's, over its REST API) are identical."""
    make, _ = CASES[case]
    embedded = await make_engine("embedded", real_policies)
    by_opa = await make_engine("opa", real_policies)
    queried = opa.data_queries

    decision = await by_opa.decide(make())
    if not REAL_OPA_URL:
        assert opa.data_queries == queried + 1  # the decision came from OPA, one query
    async with httpx.AsyncClient(base_url=opa_url) as client:
        raw = (await client.post(f"/v1/data/{'/'.join(DECISION_PATH)}", json={"input": make()})).json()

    assert decision == await embedded.decide(make())
    assert raw["result"] == _regorus_result(real_policies, make())


async def test_opa_refuses_at_push_a_module_that_does_not_type_check(
    opa: OpaCompatServer, make_engine: MakeEngine, tmp_path: Path
) -> None:
    """OPA type-checks every module it is given (regorus finds this only when it evaluates)."""
    typed = policy_dir(tmp_path, {"typed.rego": 'package spendgate.decision\n\nresult := {"allow": count(1, 2)}\n'})

    with pytest.raises(PolicyError, match=r"typed\.rego:3:.*rego_type_error: count: arity mismatch"):
        await make_engine("opa", typed, url=opa.url)


async def test_the_opa_server_answers_a_put_that_does_not_compile_with_its_compile_errors(
    opa: OpaCompatServer,
) -> None:
    async with httpx.AsyncClient(base_url=opa.url) as client:
        good = await client.put("/v1/policies/ok.rego", content="package ok\n\nf(x) := x\n")
        undefined = await client.put("/v1/policies/bad.rego", content="package bad\n\ny := nope(1)\n")
        unparsable = await client.put("/v1/policies/bad.rego", content="package bad\n\ny := {\n")
        user = await client.put("/v1/policies/uses.rego", content="package uses\n\ny := data.ok.f(1)\n")
        needed = await client.delete("/v1/policies/ok.rego")  # uses.rego calls its function

    assert (good.status_code, user.status_code) == (200, 200)
    assert (undefined.status_code, undefined.json()["code"]) == (400, "invalid_parameter")
    assert undefined.json()["errors"] == [{"code": "rego_type_error", "message": "undefined function nope",
                                           "location": {"file": "bad.rego", "row": 3}}]
    assert unparsable.status_code == 400
    assert {e["code"] for e in unparsable.json()["errors"]} == {"rego_parse_error"}
    assert (needed.status_code, needed.json()["code"]) == (400, "invalid_operation")
    assert set(opa.policies) == {"ok.rego", "uses.rego"}


async def test_opa_engine_pushes_the_set_under_its_prefix_and_leaves_other_data_alone(
    opa: OpaCompatServer, make_engine: MakeEngine, real_policies: PolicySet
) -> None:
    async with httpx.AsyncClient(base_url=opa.url) as client:
        await client.put("/v1/data/billing", json={"currency": "EUR"})
        await client.put("/v1/data/spendgate/notes", json={"owner": "finance"})
        await client.put("/v1/policies/other/app.rego", content="package app\n\nallow := true\n")

        await make_engine("opa", real_policies, url=opa.url)

        assert (await client.get("/v1/data/billing")).json() == {"result": {"currency": "EUR"}}
        assert (await client.get("/v1/data/spendgate/notes")).json() == {"result": {"owner": "finance"}}
        config = (await client.get("/v1/data/spendgate/config")).json()["result"]
    assert config == real_policies.data["spendgate"]["config"]
    assert set(opa.policies) == {"other/app.rego"} | {policy_id(name) for name, _ in real_policies.modules}
    assert all(pid.startswith(POLICY_ID_PREFIX) for pid in set(opa.policies) - {"other/app.rego"})


async def test_data_documents_reach_the_policy_and_only_their_own_paths(
    adapter: str, opa: OpaCompatServer, make_engine: MakeEngine, tmp_path: Path
) -> None:
    uses_data = (
        "package spendgate.decision\n\n"
        'result := {"allow": true, "charges": [data.spendgate.prefix, data.spendgate.config.suffix, data.shared.x],'
        ' "reasons": [], "alerts": []}\n'
    )
    data = {"spendgate": {"prefix": "key:", "config": {"suffix": "k1"}}, "shared": {"x": "tag:t"}}
    engine = await make_engine(adapter, policy_dir(tmp_path, {"d.rego": uses_data}, data))

    assert (await engine.decide(personal_key())).charges == ("key:", "k1", "tag:t")
    if adapter == "opa" and not REAL_OPA_URL:
        writes = [path for method, path in opa.state()["requests"] if method == "PUT" and "/v1/data" in path]
        assert sorted(writes) == ["/v1/data/shared", "/v1/data/spendgate/config", "/v1/data/spendgate/prefix"]


async def test_numbers_in_a_policys_answer_arrive_exactly(adapter: str, make_engine: MakeEngine, tmp_path: Path) -> None:
    """A reason may carry any number; the 64-bit range (the widest regorus writes as integers) and fractions
    arrive as the engine wrote them."""
    numbers = (
        "package spendgate.decision\n\n"
        'result := {"allow": false, "charges": [], "alerts": [], "reasons": [{"code": "x", "entity": null,\n'
        '  "message": "m", "big": 18446744073709551615, "negative": -9223372036854775808, "fraction": 0.5,\n'
        '  "small": 7}]}\n'
    )
    engine = await make_engine(adapter, policy_dir(tmp_path, {"d.rego": numbers}))

    decision = await engine.decide(personal_key())

    (reason,) = decision.reasons
    assert (reason["big"], reason["negative"], reason["small"]) == (2**64 - 1, -(2**63), 7)
    assert type(reason["small"]) is int and reason["fraction"] == 0.5


# -- the contract: what is never an allow -------------------------------------------------------


async def test_an_undefined_result_is_a_denial(adapter: str, make_engine: MakeEngine, tmp_path: Path) -> None:
    policies = policy_dir(tmp_path, {"other.rego": "package spendgate.other\n\nanswer := 42\n"})
    engine = await make_engine(adapter, policies)

    decision = await engine.decide(personal_key())

    assert decision.allow is False
    assert decision.charges == ()
    assert [r["code"] for r in decision.reasons] == ["policy_undefined"]
    assert "undefined" in decision.reasons[0]["message"]
    assert decision.revision == policies.revision


async def test_a_malformed_result_is_a_denial(adapter: str, make_engine: MakeEngine, tmp_path: Path) -> None:
    policies = policy_dir(tmp_path, {"d.rego": 'package spendgate.decision\n\nresult := {"allow": true}\n'})
    engine = await make_engine(adapter, policies)

    decision = await engine.decide(personal_key())

    assert (decision.allow, [r["code"] for r in decision.reasons]) == (False, ["policy_undefined"])


async def test_a_policy_that_does_not_compile_raises_policy_error(
    adapter: str, make_engine: MakeEngine, tmp_path: Path
) -> None:
    policies = policy_dir(tmp_path, {"ok.rego": GOOD_RESULT.replace("decision", "fine"),
                                     "broken.rego": "package spendgate.decision\n\nresult := {\n"})

    with pytest.raises(PolicyError) as refused_:
        await make_engine(adapter, policies)

    assert "broken.rego" in refused_.value.message


async def test_an_evaluation_error_raises_policy_error(adapter: str, make_engine: MakeEngine, tmp_path: Path) -> None:
    conflicting = (
        "package spendgate.decision\n\n"
        'result = {"allow": true, "charges": [], "reasons": [], "alerts": []} if input.key\n\n'
        'result = {"allow": false, "charges": [], "reasons": [{"code": "x"}], "alerts": []} if input.request\n'
    )
    engine = await make_engine(adapter, policy_dir(tmp_path, {"d.rego": conflicting}))

    with pytest.raises(PolicyError, match="evaluation failed"):
        await engine.decide(personal_key())


# -- the contract: swapping the policy set ------------------------------------------------------


async def test_a_swap_to_a_broken_set_leaves_the_old_set_serving(
    adapter: str, make_engine: MakeEngine, real_policies: PolicySet, tmp_path: Path
) -> None:
    # The broken set also changes attribution (team keys would charge the user) and its broken module
    # is one the decision does not need: had any of it stuck, the team-key decision below would change.
    root = copy_of_real_policies(
        tmp_path / "policies",
        {"spendgate/attribution/attribution.rego": ("data.spendgate.config.team_keys_charge_user == true", "true")},
    )
    (root / "spendgate" / "extra").mkdir()
    (root / "spendgate" / "extra" / "extra.rego").write_text("package spendgate.extra\n\nbroken := {\n")
    broken = load_policy_set(root)
    engine = await make_engine(adapter, real_policies)
    before = await engine.decide(team_key())

    with pytest.raises(PolicyError):
        await engine.swap(broken)

    after = await engine.decide(team_key())
    assert after == before
    assert (engine.revision, after.revision) == (real_policies.revision, real_policies.revision)


async def test_a_swap_serves_the_new_set_and_drops_modules_it_no_longer_has(
    adapter: str, opa: OpaCompatServer, make_engine: MakeEngine, real_policies: PolicySet, tmp_path: Path
) -> None:
    root = copy_of_real_policies(tmp_path / "policies", CHARGE_USER)
    (root / "spendgate" / "lib" / "lib.rego").rename(root / "spendgate" / "lib" / "helpers.rego")
    renewed = load_policy_set(root)
    engine = await make_engine(adapter, real_policies)

    await engine.swap(renewed)

    decision = await engine.decide(team_key())
    assert {"user:u1", "org:o2"} <= charged_entities(decision, team_key())
    assert (engine.revision, decision.revision) == (renewed.revision, renewed.revision)
    if adapter == "opa" and not REAL_OPA_URL:
        assert set(opa.policies) == {policy_id(name) for name, _ in renewed.modules}


# -- OPA specifics: failures and recovery (the compat server's knobs) ---------------------------


async def test_opa_unreachable_at_start_is_unavailable(real_policies: PolicySet) -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]  # nothing listens there once the socket is closed
    engine = OpaEngine(f"http://127.0.0.1:{port}", real_policies, timeout_seconds=1)
    try:
        with pytest.raises(Unavailable) as down:
            await engine.start()
        with pytest.raises(Unavailable):
            await engine.decide(personal_key())
        assert await engine.is_ready() is False
    finally:
        await engine.close()
    assert down.value.dependency == "opa" and down.value.status == 503


async def test_opa_going_down_is_unavailable_until_it_is_back(
    opa: OpaCompatServer, make_engine: MakeEngine, real_policies: PolicySet
) -> None:
    engine = await make_engine("opa", real_policies, url=opa.url)
    expected = await engine.decide(personal_key())

    opa.go_down()
    with pytest.raises(Unavailable, match="opa is unavailable"):
        await engine.decide(personal_key())
    assert await engine.is_ready() is False

    opa.come_back()
    assert await engine.decide(personal_key()) == expected
    assert await engine.is_ready() is True


@pytest.mark.parametrize("status, body", [(500, None), (503, None), (502, b"<html>Bad Gateway</html>")])
async def test_opa_answering_5xx_is_unavailable(
    opa: OpaCompatServer, make_engine: MakeEngine, real_policies: PolicySet, status: int, body: bytes | None
) -> None:
    engine = await make_engine("opa", real_policies, url=opa.url)
    opa.fail_with(status, body=body)

    with pytest.raises(Unavailable, match=f"HTTP {status}"):
        await engine.decide(personal_key())


async def test_opa_answering_500_to_the_push_is_unavailable_not_a_policy_error(
    opa: OpaCompatServer, make_engine: MakeEngine, real_policies: PolicySet
) -> None:
    opa.fail_with(500, path_prefix="/v1/policies/spendgate")

    with pytest.raises(Unavailable):
        await make_engine("opa", real_policies, url=opa.url)


async def test_opa_slower_than_the_timeout_is_unavailable(
    opa: OpaCompatServer, make_engine: MakeEngine, real_policies: PolicySet
) -> None:
    engine = await make_engine("opa", real_policies, url=opa.url, timeout_seconds=0.3)
    opa.hang(10, path_prefix="/v1/data")

    # Had it waited out the 10 s hang, OPA would have answered and no Unavailable would be raised.
    with pytest.raises(Unavailable, match="within 0.3s"):
        await engine.decide(personal_key())


async def test_concurrent_decisions_against_a_hanging_opa_all_fail_within_their_own_timeout(
    opa: OpaCompatServer, real_policies: PolicySet
) -> None:
    """Eight decisions meet a hanging OPA at once. Each gives up after its own timeout: while waiting
    for the push another one is making ("push has taken over 0.3s"), or on a push of its own ("no
    answer ... within 0.3s"). None queues behind the others' timeouts one after another, which
    would show as one push per decision reaching OPA. (Which of them gets to push a second time
    is a race between the first push's timeout and the waiters': one or two pushes, never more.)"""
    engine = OpaEngine(opa.url, real_policies, timeout_seconds=0.3)  # not started: the first use pushes
    opa.hang(30)
    try:
        outcomes = await asyncio.gather(*(engine.decide(personal_key()) for _ in range(8)), return_exceptions=True)
    finally:
        await engine.close()
    pushes = [path for method, path in opa.state()["requests"] if path.startswith("/v1/policies")]
    opa.heal()

    assert all(isinstance(outcome, Unavailable) for outcome in outcomes), outcomes
    messages = [outcome.message for outcome in outcomes if isinstance(outcome, Unavailable)]
    waited = [m for m in messages if "a policy push has taken over 0.3s" in m]
    pushed = [m for m in messages if f"no answer from {opa.url} within 0.3s" in m]
    assert len(waited) + len(pushed) == 8, messages
    assert 1 <= len(pushed) == len(pushes) <= 2, (messages, pushes)


async def test_a_restarted_opa_gets_the_policies_again(
    opa: OpaCompatServer, make_engine: MakeEngine, real_policies: PolicySet
) -> None:
    engine = await make_engine("opa", real_policies, url=opa.url)
    expected = await engine.decide(personal_key())

    opa.restart()  # OPA keeps pushed policies in memory only

    assert await engine.decide(personal_key()) == expected
    assert set(opa.policies) == {policy_id(name) for name, _ in real_policies.modules}
    opa.restart()
    assert await engine.is_ready() is True  # the readiness check pushes them again too


async def test_a_foreign_version_of_a_module_makes_opa_not_ready(
    opa: OpaCompatServer, make_engine: MakeEngine, real_policies: PolicySet
) -> None:
    engine = await make_engine("opa", real_policies, url=opa.url)
    name, source = real_policies.modules[0]
    async with httpx.AsyncClient(base_url=opa.url) as client:
        await client.put(f"/v1/policies/{policy_id(name)}", content=source + "\n# another service's version\n")

    assert await engine.is_ready() is False


async def test_decisions_wait_for_a_push_in_progress_and_see_only_the_new_set(
    opa: OpaCompatServer, make_engine: MakeEngine, real_policies: PolicySet, tmp_path: Path
) -> None:
    renewed = load_policy_set(copy_of_real_policies(tmp_path / "policies", CHARGE_USER))
    engine = await make_engine("opa", real_policies, url=opa.url)
    assert isinstance(engine, OpaEngine)
    opa.hang(0.1, path_prefix="/v1/policies")  # every step of the push is slow

    swapping = asyncio.create_task(engine.swap(renewed))
    await asyncio.sleep(0.05)
    decision = await engine.decide(team_key())
    await swapping

    assert decision.revision == renewed.revision
    assert {"user:u1", "org:o2"} <= charged_entities(decision, team_key())


async def test_fail_open_decides_in_process_on_the_same_set_while_opa_is_down(
    opa: OpaCompatServer, make_engine: MakeEngine, real_policies: PolicySet
) -> None:
    engine = await make_engine("opa", real_policies, url=opa.url, fail_open=True, timeout_seconds=0.5)
    expected = await EmbeddedEngine(real_policies).decide(team_key())

    opa.go_down()

    assert await engine.decide(team_key()) == expected
    assert await engine.is_ready() is True


async def test_fail_open_never_fails_over_a_policy_error(
    opa: OpaCompatServer, make_engine: MakeEngine, tmp_path: Path
) -> None:
    broken = policy_dir(tmp_path, {"broken.rego": "package spendgate.decision\n\nresult := {\n"})

    with pytest.raises(PolicyError):
        await make_engine("opa", broken, url=opa.url, fail_open=True)


async def test_readiness(adapter: str, make_engine: MakeEngine, real_policies: PolicySet) -> None:
    engine = await make_engine(adapter, real_policies)

    assert await engine.is_ready() is True


def test_an_opa_url_with_a_path_is_refused(real_policies: PolicySet) -> None:
    with pytest.raises(ValueError, match="no path"):
        OpaEngine("http://opa:8181/v1", real_policies)


# -- the pricing question (data.spendgate.pricing.result) ---------------------------------------


def pricing_input(model: str | None, *, charged: list[dict[str, str]] | None = None, **usage: int) -> dict[str, Any]:
    return {"request": {"model": model, "usage": usage}, "charged": charged or []}


async def test_both_adapters_price_usage_from_the_shipped_table_alike(
    adapter: str, make_engine: MakeEngine, real_policies: PolicySet
) -> None:
    engine = await make_engine(adapter, real_policies)
    row = real_policies.data["spendgate"]["pricing"]["prices"]["gpt-4o"]
    usage = {"input_tokens": 123_457, "cached_input_tokens": 1_000, "output_tokens": 9_999}

    quote = await engine.price(pricing_input("gpt-4o", **usage))

    femtos = Decimal(122_457) * row["input"] + Decimal(1_000) * row["cached_input"] + Decimal(9_999) * row["output"]
    nanos = int((femtos / 10**6).to_integral_value(ROUND_CEILING))
    assert quote == PriceQuote(True, "gpt-4o", nanos, nanos, None, None, None, real_policies.revision)
    assert quote == await EmbeddedEngine(real_policies).price(pricing_input("gpt-4o", **usage))


async def test_both_adapters_apply_an_adjustment_of_a_charged_entity(
    adapter: str, make_engine: MakeEngine, real_policies: PolicySet
) -> None:
    data = json.loads(json.dumps(real_policies.data))
    data["spendgate"]["pricing"]["adjustments"] = {"team": {"t1": -2500}}
    engine = await make_engine(adapter, dataclasses.replace(real_policies, data=data))

    quote = await engine.price(pricing_input("gpt-4o", charged=[{"type": "team", "id": "t1"}], input_tokens=1_000_000))

    assert (quote.list_cost, quote.cost) == (2_500_000_000, 1_875_000_000)
    assert quote.adjustment == {"entity": {"type": "team", "id": "t1"}, "basis_points": -2500}


async def test_both_adapters_answer_unknown_price_for_a_model_the_table_lacks(
    adapter: str, make_engine: MakeEngine, real_policies: PolicySet
) -> None:
    engine = await make_engine(adapter, real_policies)

    quote = await engine.price(pricing_input("no-such-model", input_tokens=5))

    assert (quote.priced, quote.code, quote.model, quote.cost) == (False, "unknown_price", "no-such-model", None)


async def test_an_undefined_price_is_a_policy_error_not_zero(
    adapter: str, make_engine: MakeEngine, tmp_path: Path
) -> None:
    policies = policy_dir(tmp_path, {"d.rego": GOOD_RESULT})
    engine = await make_engine(adapter, policies)

    with pytest.raises(PolicyError, match="result is undefined"):
        await engine.price(pricing_input("gpt-4o", input_tokens=1))


@pytest.mark.parametrize("result", [
    '{"priced": true, "model": "m", "cost": 1.5, "list_cost": 1, "adjustment": null}',
    '{"priced": true, "model": "m", "cost": -1, "list_cost": 1, "adjustment": null}',
    '{"priced": true, "model": "m", "cost": "1", "list_cost": 1, "adjustment": null}',
    '{"priced": true, "model": null, "cost": 1, "list_cost": 1, "adjustment": null}',
    '{"priced": true, "model": "m", "cost": 1, "list_cost": 1, "adjustment": 5}',
    '{"priced": false, "model": "m"}',
    '{"cost": 1}',
    '[1]',
])
async def test_a_malformed_price_is_a_policy_error_not_zero(
    adapter: str, make_engine: MakeEngine, tmp_path: Path, result: str
) -> None:
    pricing = f"package spendgate.pricing\n\nresult := {result}\n"
    policies = policy_dir(tmp_path, {"d.rego": GOOD_RESULT, "p.rego": pricing})
    engine = await make_engine(adapter, policies)

    with pytest.raises(PolicyError, match="no usable price"):
        await engine.price(pricing_input("m", input_tokens=1))


async def test_fail_open_prices_in_process_on_the_same_set_while_opa_is_down(
    opa: OpaCompatServer, make_engine: MakeEngine, real_policies: PolicySet
) -> None:
    engine = await make_engine("opa", real_policies, url=opa.url, fail_open=True, timeout_seconds=0.5)
    doc = pricing_input("claude-sonnet-4-5", input_tokens=77, output_tokens=3)
    expected = await EmbeddedEngine(real_policies).price(doc)

    opa.go_down()

    assert await engine.price(doc) == expected


async def test_opa_down_while_pricing_is_unavailable(
    opa: OpaCompatServer, make_engine: MakeEngine, real_policies: PolicySet
) -> None:
    engine = await make_engine("opa", real_policies, url=opa.url)

    opa.go_down()
    with pytest.raises(Unavailable, match="opa is unavailable"):
        await engine.price(pricing_input("gpt-4o", input_tokens=1))
