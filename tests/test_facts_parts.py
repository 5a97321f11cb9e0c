"""Facts assembled from cached parts (facts.py) are the facts a database read gives for the same
request: key chain, orgs, key×model budget, end user (known, blocked, default budget) and tags."""

from __future__ import annotations

import pytest
from sqlalchemy import event

from spendgate.facts import FactsCache
from support.app import AppFactory
from support.scenario import create, create_key

DAY = {"max_budget": "10", "duration": "1d"}


@pytest.fixture(params=["postgresql", "sqlite"])
def database_url(request: pytest.FixtureRequest, clean_pg: str, sqlite_url: str) -> str:
    return clean_pg if request.param == "postgresql" else sqlite_url


async def test_facts_assembled_from_parts_equal_the_facts_read_for_that_shape(
    app_factory: AppFactory, database_url: str
) -> None:
    app = await app_factory(database_url=database_url, default_end_user_budget='{"max_budget": "5"}')
    admin = app.admin
    await create(admin, "orgs", {"id": "acme", "name": "Acme", "budget": DAY})
    await create(admin, "teams", {"id": "t1", "name": "T1", "org_id": "acme", "budget": DAY})
    await create(admin, "users", {"id": "u1", "org_id": "acme", "budget": DAY})
    await create(admin, "teams/t1/members", {"user_id": "u1", "budget": DAY})
    secret = await create_key(admin, id="k1", user_id="u1", team_id="t1", budget=DAY, model_budgets={"gpt-4o": DAY})
    await create(admin, "end-users", {"id": "eu-known", "budget": DAY})
    await create(admin, "end-users", {"id": "eu-blocked", "blocked": True})
    await create(admin, "tags", {"id": "chat", "budget": DAY})
    await create(admin, "tags", {"id": "blocked-tag", "blocked": True})

    sessions = app.runtime.facts.sessions
    cached = FactsCache(sessions, ttl_seconds=60, settings=app.settings)  # no part expires during the test
    for end_user, tags in (("eu-known", ["chat"]), ("eu-blocked", ["blocked-tag"]), ("eu-new", ["unknown-tag"])):
        await cached.load(api_key=secret, model="gpt-4o", end_user=end_user, tags=tags)

    statements: list[str] = []
    engine = sessions.kw["bind"]
    event.listen(engine.sync_engine, "before_cursor_execute", lambda *args: statements.append(args[2]))
    shapes = [("eu-new", ["chat", "blocked-tag"]), ("eu-blocked", ["unknown-tag"]), ("eu-known", []), (None, ["chat"])]
    assembled = [await cached.load(api_key=secret, model="gpt-4o", end_user=e, tags=t) for e, t in shapes]
    assert statements == [], "assembled from parts, without a read"
    # Each shape read whole from the database by a cache that keeps nothing (lifetime 0).
    read = [
        await FactsCache(sessions, ttl_seconds=0, settings=app.settings).load(
            api_key=secret, model="gpt-4o", end_user=e, tags=t)
        for e, t in shapes
    ]
    assert len(statements) == 2 * len(shapes), "each shape: its key chain and its named entities"
    assert assembled == read
    new, _blocked, known, untagged = assembled
    day = [(w.max_budget, w.duration) for w in known.end_user.budgets]  # type: ignore[union-attr]
    assert day == [(10_000_000_000, "1d")]
    assert new.key is not None and new.key_model is not None and new.team_member is not None
    assert len(new.orgs) == 1 and new.orgs[0].budgets
    assert new.end_user is not None and not new.end_user.known
    assert [(w.max_budget, w.duration) for w in new.end_user.budgets] == [(5_000_000_000, None)]  # the default
    assert [(tag.id, tag.blocked, tag.known, len(tag.budgets)) for tag in new.tags] == [
        ("blocked-tag", True, True, 0), ("chat", False, True, 1)]
    assert untagged.end_user is None and [t.id for t in untagged.tags] == ["chat"]
