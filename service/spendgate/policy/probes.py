"""Decision inputs that exercise a policy set's rules: the corpus a compiled policy must pass.

Each input follows policies/INTERFACE.md and varies what policies branch on: no key, personal,
team, member-less team and service keys; blocked keys, users, teams, members, orgs, end users and
tags; expired keys; model allow-lists; ledgers with no limit, room left, at the limit and over it;
soft budgets; estimates absent, zero and positive; ledgers with and without display strings; both
phases and both identity sources. A null key, user or team leaves every field a rule reads through
it undefined, so rules that meet undefined values are exercised too. The corpus is fixed by its
seed: the same inputs on every start.
"""

from __future__ import annotations

import random
from collections.abc import Iterator
from typing import Any

from ..money import format_nanos

__all__ = ["named_entities", "probe_inputs"]

USD = 1_000_000_000
NOW_NS = 1_795_402_800_000_000_000  # 2026-11-23T03:00:00Z, past 2**53: exact integers matter
_KINDS = ("none", "personal", "personal", "team", "team", "team_no_user", "service")
_MODELS = ("gpt-4o", "gpt-4o", "gpt-4o-mini", None)
_WINDOWS: tuple[tuple[str | None, ...], ...] = ((None,), ("1d",), ("1d", "1mo"), ("total",))


def probe_inputs(count: int = 256, *, seed: int = 0) -> Iterator[dict[str, Any]]:
    """`count` input documents, the same ones for the same seed."""
    rng = random.Random(seed)
    for index in range(count):
        yield _input(rng, trouble=index % 3 != 0)


def _flag(rng: random.Random, trouble: bool) -> bool:
    return trouble and rng.random() < 0.15


def _input(rng: random.Random, *, trouble: bool) -> dict[str, Any]:
    kind = rng.choice(_KINDS if trouble else _KINDS[1:])
    model = rng.choice(_MODELS)
    estimate = rng.choice([None, 0, 1, 20_000_000, 3 * USD, rng.randint(1, 20 * USD)])
    end_user = rng.choice(["cust-9", "cust-9", None])
    tags = rng.choice([[], ["search"], ["search", "beta"]])
    user_id = "u1" if kind in ("personal", "team") else None
    team_id = "t1" if kind in ("team", "team_no_user") else None
    key: dict[str, Any] | None = None
    if kind != "none":
        expires = rng.choice([None, None, -1, 0, 1, -86_400 * USD, 86_400 * USD] if trouble else [None, 1])
        key = {
            "id": "k1",
            "user_id": user_id,
            "team_id": team_id,
            "blocked": _flag(rng, trouble),
            "expires_at": None if expires is None else f"expires {NOW_NS + expires}",
            "expires_at_ns": None if expires is None else NOW_NS + expires,
            "models": rng.choice(
                [[], [], ["gpt-4o"], ["gpt-4o-mini"], ["gpt-4o", "gpt-4o-mini"]] if trouble else [[], [model] if model else []]
            ),
        }
    user_org, team_org = rng.choice(["o1", "o2", None]), rng.choice(["o1", "o1", None])
    user = {"id": "u1", "org_id": user_org, "blocked": _flag(rng, trouble)} if user_id else None
    team = {"id": "t1", "org_id": team_org, "blocked": _flag(rng, trouble)} if team_id else None
    member = None
    if team_id and user_id and rng.random() < 0.8:
        member = {"id": "t1/u1", "team_id": "t1", "user_id": "u1", "blocked": _flag(rng, trouble)}
    org_ids = sorted({o for o in (user_org if user else None, team_org if team else None) if o})

    key_model = f"k1/{model}" if key is not None and model is not None and rng.random() < 0.5 else None
    entities = named_entities(key, key_model, user, team, member, org_ids, end_user, tags)
    ledgers = [ledger for type_, id_ in entities for ledger in _ledgers(rng, type_, id_, estimate, trouble)]
    rng.shuffle(ledgers)

    document: dict[str, Any] = {
        "request": {
            "request_id": "req-1",
            "phase": rng.choice(["authorize", "authorize", "record"]),
            "model": model,
            "end_user": end_user,
            "tags": tags,
            "estimated_cost": estimate,
            "now": "2026-11-23T03:00:00Z",
            "now_ns": NOW_NS,
        },
        "identity": {"source": rng.choice(["api_key", "gateway"])},
        "key": key,
        "user": user,
        "team": team,
        "team_member": member,
        "orgs": {o: {"id": o, "blocked": _flag(rng, trouble)} for o in org_ids},
        "end_user": {"id": end_user, "blocked": _flag(rng, trouble), "known": rng.random() < 0.5} if end_user else None,
        "tags": [{"id": tag, "blocked": _flag(rng, trouble), "known": rng.random() < 0.5} for tag in tags],
        "ledgers": ledgers,
    }
    return document


def named_entities(
    key: dict[str, Any] | None,
    key_model: str | None,
    user: dict[str, Any] | None,
    team: dict[str, Any] | None,
    member: dict[str, Any] | None,
    org_ids: list[str],
    end_user: str | None,
    tags: list[str],
) -> list[tuple[str, str]]:
    """(type, id) of every entity an input names (each has candidate ledgers), key first."""
    entities: list[tuple[str, str]] = []
    if key is not None:
        entities.append(("key", key["id"]))
        if key_model is not None:
            entities.append(("key_model", key_model))
    entities += [("user", user["id"])] if user else []
    entities += [("team", team["id"])] if team else []
    entities += [("team_member", member["id"])] if member else []
    entities += [("org", o) for o in org_ids]
    entities += [("end_user", end_user)] if end_user else []
    entities += [("tag", tag) for tag in tags]
    return entities


def _ledgers(
    rng: random.Random, type_: str, entity_id: str, estimate: int | None, trouble: bool
) -> list[dict[str, Any]]:
    """One entity's candidate ledgers: one with no limit, or one per budget window."""
    ledgers = []
    for window in rng.choice(_WINDOWS):
        spent = rng.choice([0, 1_250_000_000, rng.randint(0, 1000 * USD)])
        reserved = rng.choice([0, 0, 20_000_000, rng.randint(0, 10 * USD)])
        if window is None:
            limit = soft = None
        else:
            used = spent + reserved + (estimate or 0)
            where = rng.choice(["under", "under", "edge", "over"]) if trouble else "under"
            if where == "under":
                limit = used + rng.choice([1, 20_000_000, rng.randint(1, 100 * USD)])
            elif where == "edge":
                limit = max(0, used + rng.choice([-1, 0, 1]))
            else:
                limit = rng.randint(0, max(0, used - 1))
            soft = rng.choice([None, limit * 4 // 5, rng.randint(0, limit + 1)])
        period = None if window in (None, "total") else 1_795_392_000
        ledger: dict[str, Any] = {
            "id": f"{type_}:{entity_id}:{window or '-'}:{period or 0}",
            "entity": {"type": type_, "id": entity_id},
            "window": window,
            "limit": limit,
            "soft_budget": soft,
            "spent": spent,
            "reserved": reserved,
            "period_start": "2026-11-23T00:00:00Z" if period else None,
            "resets_at": "2026-11-24T00:00:00Z" if period else None,
        }
        if rng.random() < 0.8:  # without display strings the policy formats the amounts itself
            ledger["display"] = {
                name: format_nanos(value)
                for name, value in (("spent", spent), ("reserved", reserved), ("limit", limit), ("soft_budget", soft))
                if value is not None
            }
        ledgers.append(ledger)
    return ledgers
