"""regorus (the embedded engine: its compiled VM and its interpreter) and OPA's own Go engine decide
alike on generated input documents.

Inputs follow policies/INTERFACE.md and tests/fixtures/team_key_input.json: unknown, personal, team
and service keys; users, teams, members and orgs, some blocked; end users and tags, known or not;
expired keys (one nanosecond either side of `now`, beyond 2**53), model allow-lists, key×model
ledgers; windowed and open-ended ledgers with spend on, just under and just over the limit; soft
budgets; estimates null, zero or positive; both phases; both identity sources (api_key, gateway); every
combination of the config knobs.
Both the whole result document and the validated `PolicyDecision` must be identical. The run is
derandomized (the same 1,000 examples every time) and asserts the mix of outcomes it covered.
"""

from __future__ import annotations

import asyncio
import dataclasses
import itertools
import json
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from spendgate.money import format_nanos
from spendgate.policy import PolicySet, load_policy_set
from spendgate.policy.embedded import EmbeddedEngine, compile_policy_set
from spendgate.policy.engine import (
    DECISION_QUERY,
    PRICING_PATH,
    PRICING_QUERY,
    decision_from_result,
    quote_from_result,
)
from spendgate.policy.probes import named_entities
from support.opa_go import OpaGoPolicies, with_config

POLICY_DIR = Path(__file__).resolve().parents[1] / "policies"
EXAMPLES = 1000
USD = 1_000_000_000
NOW_NS = 1_795_402_800_000_000_000  # 2026-11-23T03:00:00Z, past 2**53: exact integers matter
DAY = 86_400 * USD
KNOBS = tuple(load_policy_set(POLICY_DIR).data["spendgate"]["config"])


# -- the generator --------------------------------------------------------------------------------


def _flag(trouble: bool) -> st.SearchStrategy[bool]:
    """Blocked or not: never in a clean example, one time in ten in a troubled one."""
    return st.sampled_from([False] * 9 + [True]) if trouble else st.just(False)


@st.composite
def _amounts(draw: st.DrawFn, estimate: int | None, trouble: bool) -> dict[str, Any]:
    """A ledger's limit, soft budget, spent and reserved: under the limit, or (troubled) at its edge or over."""
    reserved = draw(st.sampled_from([0, 0, 20_000_000]) | st.integers(0, 10 * USD))
    spent = draw(st.sampled_from([0, 1_250_000_000]) | st.integers(0, 1000 * USD))
    used = spent + reserved + (estimate or 0)
    where = draw(st.sampled_from(["under"] * 3 + ["edge", "over"])) if trouble else "under"
    if where == "under":  # room left even for a request with no estimate (spent + reserved < limit)
        limit = used + draw(st.sampled_from([1, 20_000_000]) | st.integers(1, 100 * USD))
    elif where == "edge":  # spent + reserved + estimate one below, at, one above the limit
        limit = max(0, used + draw(st.sampled_from([-1, 0, 1])))
    else:
        limit = draw(st.integers(0, max(0, used - 1)))
    soft = draw(st.none() | st.just(limit * 4 // 5) | st.integers(0, limit + 1))
    return {"limit": limit, "soft_budget": soft, "spent": spent, "reserved": reserved}


@st.composite
def _ledgers(
    draw: st.DrawFn, kind: str, entity_id: str, estimate: int | None, trouble: bool
) -> list[dict[str, Any]]:
    """The candidate ledgers of one entity: one open-ended ledger (no budget) or one per budget window."""
    windows: list[str | None] = draw(st.sampled_from([[None], [None], ["1d"], ["1d", "1mo"], ["total"]]))
    ledgers = []
    for window in windows:
        if window is None:
            amounts = {"limit": None, "soft_budget": None, "spent": draw(st.integers(0, 100 * USD)), "reserved": 0}
        else:
            amounts = draw(_amounts(estimate, trouble))
        resets = window not in (None, "total")
        ledgers.append({
            "id": f"{kind}:{entity_id}:{window or '-'}:{1795392000 if resets else 0}",
            "entity": {"type": kind, "id": entity_id},
            "window": None if window == "total" else window,
            **amounts,
            "period_start": "2026-11-23T00:00:00Z" if resets else None,
            "resets_at": ("2026-11-24T00:00:00Z" if window == "1d" else "2026-12-01T00:00:00Z") if resets else None,
            "display": {
                name: format_nanos(value) if value is not None else None for name, value in amounts.items()
            } if draw(st.sampled_from([True] * 4 + [False])) else {},  # without display: the policy formats
        })
    return ledgers


@st.composite
def decision_inputs(draw: st.DrawFn) -> dict[str, Any]:
    """An input document; a third are clean (nothing to refuse), the rest may hold any kind of trouble."""
    trouble = draw(st.sampled_from([False, True, True]))
    kinds = ["personal", "personal", "team", "team", "team_no_user", "service"] + (["unknown"] if trouble else [])
    kind = draw(st.sampled_from(kinds))
    model = draw(st.sampled_from(["gpt-4o", "gpt-4o", "gpt-4o-mini", None]))
    estimate = draw(st.sampled_from([None, 0, 20_000_000, 1, 3 * USD]) | st.integers(1, 20 * USD))
    end_user = draw(st.sampled_from(["cust-9", "cust-9", None]))
    tags = draw(st.sampled_from([[], ["search"], ["search", "beta"]]))
    user_id = "u1" if kind in ("personal", "team") else None
    team_id = "t1" if kind in ("team", "team_no_user") else None
    key: dict[str, Any] | None = None
    if kind != "unknown":
        expiries = [None, None, None, -1, 0, 1, -DAY, DAY] if trouble else [None, 1, DAY]
        expires = draw(st.sampled_from(expiries))
        key = {
            "id": "k1", "user_id": user_id, "team_id": team_id, "blocked": draw(_flag(trouble)),
            "expires_at": None if expires is None else f"expires {NOW_NS + expires}",
            "expires_at_ns": None if expires is None else NOW_NS + expires,
            "models": draw(st.sampled_from([[], [], ["gpt-4o"], ["gpt-4o-mini"], ["gpt-4o", "gpt-4o-mini"]])
                           if trouble else st.just([]) | st.just([model] if model else [])),
        }
        if key["expires_at"] is not None and draw(st.booleans()):
            key["expires_at"] = None  # the policy then writes the nanoseconds itself
    user_org = draw(st.sampled_from(["o1", "o2", None]))
    user = {"id": "u1", "org_id": user_org, "blocked": draw(_flag(trouble))} if user_id else None
    team_org = draw(st.sampled_from(["o1", "o1", None]))
    team = {"id": "t1", "org_id": team_org, "blocked": draw(_flag(trouble))} if team_id else None
    member = None
    if team_id and user_id and draw(st.sampled_from([True] * 4 + [False])):
        member = {"id": "t1/u1", "team_id": "t1", "user_id": "u1", "blocked": draw(_flag(trouble))}
    org_ids = sorted({str(o) for o in (user_org if user else None, team_org if team else None) if o})
    orgs = {o: {"id": o, "blocked": draw(_flag(trouble))} for o in org_ids}

    key_model = f"k1/{model}" if key is not None and model is not None and draw(st.booleans()) else None
    entities = named_entities(key, key_model, user, team, member, org_ids, end_user, tags)
    ledgers = [ledger for kind_, id_ in entities for ledger in draw(_ledgers(kind_, id_, estimate, trouble))]

    return {
        "request": {
            "request_id": "req-1", "phase": draw(st.sampled_from(["authorize"] * 3 + ["record"])), "model": model,
            "end_user": end_user, "tags": tags, "estimated_cost": estimate,
            "now": "2026-11-23T03:00:00Z", "now_ns": NOW_NS,
        },
        "key": key, "user": user, "team": team, "team_member": member, "orgs": orgs,
        "end_user": (
            {"id": end_user, "blocked": draw(_flag(trouble)), "known": draw(st.booleans())} if end_user else None
        ),
        "tags": [{"id": tag, "blocked": draw(_flag(trouble)), "known": draw(st.booleans())} for tag in tags],
        "ledgers": draw(st.permutations(ledgers)),
        # Where the identity came from: a secret, or a principal the gateway asserted (identity.py).
        "identity": {"source": draw(st.sampled_from(["api_key", "gateway"]))},
    }


# -- the engines ------------------------------------------------------------------------------------


class _Engines:
    """Both engines compiled for one config: regorus (raw, and through the adapter as its compiled VM
    and as its interpreter) and OPA."""

    def __init__(self, policies: PolicySet) -> None:
        self.regorus = compile_policy_set(policies)
        self.embedded = EmbeddedEngine(policies, check_every=0)  # every decision by the VM, unchecked
        assert self.embedded.compiled, "the shipped policies must pass the compiled engine's probes"
        self.interpreted = EmbeddedEngine(policies, compiled=False)
        self.opa = OpaGoPolicies(policies)
        self.revision = policies.revision

    def regorus_result(self, input_doc: dict[str, Any]) -> Any:
        self.regorus.set_input_json(json.dumps(input_doc))
        rows = json.loads(self.regorus.eval_query_as_json(DECISION_QUERY)).get("result") or []
        return rows[0]["expressions"][0]["value"] if rows else None


@pytest.fixture(scope="module")
def engines() -> Iterator[dict[tuple[bool, ...], _Engines]]:
    policies = load_policy_set(POLICY_DIR)
    made = {
        values: _Engines(with_config(policies, **dict(zip(KNOBS, values))))
        for values in itertools.product((False, True), repeat=len(KNOBS))
    }
    yield made
    for engine in made.values():
        engine.opa.close()


def test_regorus_and_opa_give_identical_decisions_on_generated_inputs(
    engines: dict[tuple[bool, ...], _Engines],
) -> None:
    seen: Counter[str] = Counter()
    loop = asyncio.new_event_loop()

    @settings(max_examples=EXAMPLES, derandomize=True, deadline=None, database=None,
              suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
    @given(input_doc=decision_inputs(), knobs=st.tuples(*(st.booleans() for _ in KNOBS)))
    def check(input_doc: dict[str, Any], knobs: tuple[bool, ...]) -> None:
        pair = engines[knobs]
        by_regorus, by_opa = pair.regorus_result(input_doc), pair.opa.decide(input_doc)
        assert by_opa == by_regorus
        decision = loop.run_until_complete(pair.embedded.decide(input_doc))
        assert decision_from_result(by_opa, revision=pair.revision) == decision
        assert loop.run_until_complete(pair.interpreted.decide(input_doc)) == decision
        outcome = "allow" if decision.allow else "deny"
        event(outcome)
        seen[outcome] += 1
        seen.update(f"reason:{r['code']}" for r in decision.reasons)
        seen.update(f"alert:{a['code']}" for a in decision.alerts)

    try:
        check()
    finally:
        loop.close()

    assert seen["allow"] + seen["deny"] >= EXAMPLES
    assert min(seen["allow"], seen["deny"]) >= EXAMPLES // 5, seen  # both outcomes in earnest
    codes = {"budget_exceeded", "invalid_key", "key_blocked", "key_expired", "model_not_allowed", "policy_undefined"}
    assert {f"reason:{code}" for code in codes - {"policy_undefined"}} <= set(seen), seen
    assert "reason:policy_undefined" not in seen, seen  # every generated input gets a real decision
    assert seen["alert:soft_budget_crossed"] > 0, seen


# -- pricing: data.spendgate.pricing.result -----------------------------------------------------------

PRICING_EXAMPLES = 600
MAX_TOKENS = 1_000_000_000
#: Prices (nano-USD per 1M tokens) at every edge the arithmetic splits on: 0, 1, around 1e6 (one
#: nano-USD per token), LiteLLM-like values and the largest allowed (1e12).
_EDGE_PRICES = [0, 1, 7, 333_333, 999_999, 1_000_000, 1_000_001, 150_000_000, 2_500_000_000, 75_000_000_000,
                999_999_999_999, 1_000_000_000_000]
_PRICE_ROWS: dict[str, dict[str, Any]] = {
    **{f"m{i}": {"input": p, "output": _EDGE_PRICES[-1 - i], "cached_input": _EDGE_PRICES[(i + 3) % 12],
                 "reasoning": _EDGE_PRICES[(i + 7) % 12]} for i, p in enumerate(_EDGE_PRICES)},
    "plain": {"input": 2_500_000_000, "output": 10_000_000_000},  # cached and reasoning at input and output price
    "broken": {"input": 1, "output": 1_000_000_000_001},  # over the largest price: invalid_price
}
_ADJUSTMENTS = {
    "end_user": {"cust-9": 2_000}, "key": {"k1": -10_000}, "team": {"t1": -1_500, "t2": 10_000},
    "org": {"o1": 3_333, "o2": 10_001}, "user": {"u1": -1},
}


def _expected_price(model: str, usage: dict[str, int], entities: set[tuple[str, str]]) -> dict[str, Any]:
    """The pricing rule, written again with Python integers: the oracle both engines must match."""
    row = _PRICE_ROWS[model.split("/", 1)[1] if model not in _PRICE_ROWS else model]
    lines = {
        "input": (usage["input_tokens"] - usage["cached_input_tokens"], row["input"]),
        "cached_input": (usage["cached_input_tokens"], row.get("cached_input", row["input"])),
        "output": (usage["output_tokens"] - usage["reasoning_tokens"], row["output"]),
        "reasoning": (usage["reasoning_tokens"], row.get("reasoning", row["output"])),
    }
    list_cost = -(-sum(tokens * price for tokens, price in lines.values()) // 10**6)
    precedence = ["end_user", "key", "team_member", "user", "team", "org", "tag"]
    matches = sorted((precedence.index(t), i, _ADJUSTMENTS[t][i]) for t, i in entities if i in _ADJUSTMENTS.get(t, {}))
    adjustment = None
    cost = list_cost
    if matches:
        rank, entity_id, bp = matches[0]
        adjustment = {"entity": {"type": precedence[rank], "id": entity_id}, "basis_points": bp}
        cost = -(-list_cost * (10_000 + bp) // 10_000)
    return {"priced": True, "model": model.split("/", 1)[-1] if model not in _PRICE_ROWS else model,
            "cost": cost, "list_cost": list_cost, "adjustment": adjustment}


@st.composite
def pricing_inputs(draw: st.DrawFn) -> dict[str, Any]:
    """Usage at token-count edges (0, 1, 999_999, 10**6, 10**6 + 1, the largest), on a table model,
    a provider-prefixed one, an unknown one or none; charged entities given, or found by attribution."""
    counts = st.sampled_from([0, 1, 999_999, 1_000_000, 1_000_001, MAX_TOKENS - 1, MAX_TOKENS]) | st.integers(
        0, MAX_TOKENS)
    input_tokens, output_tokens = draw(counts), draw(counts)
    usage = {
        "input_tokens": input_tokens, "output_tokens": output_tokens,
        "cached_input_tokens": draw(st.sampled_from([0, input_tokens]) | st.integers(0, input_tokens)),
        "reasoning_tokens": draw(st.sampled_from([0, output_tokens]) | st.integers(0, output_tokens)),
    }
    if draw(st.sampled_from([False] * 19 + [True])):
        usage[draw(st.sampled_from(sorted(usage)))] = draw(st.sampled_from([-1, MAX_TOKENS + 1, 1.5, "7"]))
    model = draw(st.sampled_from(sorted(_PRICE_ROWS) * 3 + ["openai/m3", "anthropic/plain", "zz", None]))
    if draw(st.booleans()):
        pool = [("key", "k1"), ("team", "t1"), ("team", "t2"), ("org", "o1"), ("org", "o2"), ("user", "u1"),
                ("end_user", "cust-9"), ("end_user", "cust-1"), ("tag", "search"), ("team_member", "t1/u1")]
        charged = draw(st.lists(st.sampled_from(pool), max_size=5))
        return {"request": {"model": model, "usage": usage}, "charged": [{"type": t, "id": i} for t, i in charged]}
    doc = draw(decision_inputs())
    return {**doc, "request": {**doc["request"], "model": model, "usage": usage}}


@pytest.fixture(scope="module")
def pricing_engines() -> Iterator[_Engines]:
    policies = load_policy_set(POLICY_DIR)
    data = json.loads(json.dumps(policies.data))
    data["spendgate"]["pricing"] = {"prices": _PRICE_ROWS, "adjustments": _ADJUSTMENTS}
    made = _Engines(dataclasses.replace(policies, data=data))
    yield made
    made.opa.close()


def test_regorus_and_opa_price_generated_usage_identically_and_exactly(pricing_engines: _Engines) -> None:
    seen: Counter[str] = Counter()
    loop = asyncio.new_event_loop()
    pair = pricing_engines

    @settings(max_examples=PRICING_EXAMPLES, derandomize=True, deadline=None, database=None,
              suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
    @given(input_doc=pricing_inputs())
    def check(input_doc: dict[str, Any]) -> None:
        pair.regorus.set_input_json(json.dumps(input_doc))
        rows = json.loads(pair.regorus.eval_query_as_json(PRICING_QUERY)).get("result") or []
        by_regorus = rows[0]["expressions"][0]["value"] if rows else None
        by_opa = pair.opa.query(PRICING_PATH, input_doc)
        assert by_opa == by_regorus
        quote = loop.run_until_complete(pair.embedded.price(input_doc))
        assert quote_from_result(by_opa, revision=pair.revision) == quote
        seen["priced" if quote.priced else f"code:{quote.code}"] += 1
        if quote.priced:
            entities = {(e["type"], e["id"]) for e in input_doc["charged"]} if "charged" in input_doc else {
                (e["type"], e["id"]) for e in pair.opa.query(("spendgate", "attribution", "entities"), input_doc)}
            assert by_regorus == _expected_price(input_doc["request"]["model"], input_doc["request"]["usage"], entities)
            seen["adjusted" if quote.adjustment else "list"] += 1
            seen["over 2**53 femto-USD"] += int(quote.list_cost is not None and quote.list_cost * 10**6 > 2**53)

    try:
        check()
    finally:
        loop.close()

    assert sum(seen[k] for k in seen if k == "priced" or k.startswith("code:")) >= PRICING_EXAMPLES
    assert seen["priced"] >= PRICING_EXAMPLES // 2, seen
    codes = {"code:unknown_price", "code:invalid_usage", "code:invalid_price", "code:invalid_adjustment"}
    assert codes <= set(seen), seen
    assert min(seen["adjusted"], seen["list"], seen["over 2**53 femto-USD"]) > 0, seen
