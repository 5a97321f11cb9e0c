"""The facts cache: reused within its lifetime, and holding no more than the last lifetime's shapes."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest
from sqlalchemy import event

from spendgate import facts as facts_module
from spendgate.db import create_engine, session_factory
from spendgate.facts import FactsCache
from spendgate.migrate import upgrade
from spendgate.settings import Settings


class SteppedClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
async def cache(sqlite_url: str) -> AsyncIterator[tuple[FactsCache, SteppedClock]]:
    settings = Settings(database_url=sqlite_url)
    engine = create_engine(settings)
    await upgrade(engine)
    clock = SteppedClock()
    yield FactsCache(session_factory(engine), ttl_seconds=0.5, settings=settings, clock=clock), clock
    await engine.dispose()


async def load(cache: FactsCache, end_user: str) -> object:
    return await cache.load(api_key="sk-sg-unknown", model="gpt-4o", end_user=end_user, tags=["chat"])


async def test_facts_are_reused_within_their_lifetime_and_reloaded_after(
    cache: tuple[FactsCache, SteppedClock],
) -> None:
    facts, clock = cache
    first = await load(facts, "eu-1")
    clock.now += 0.4
    assert await load(facts, "eu-1") is first
    clock.now += 0.2
    assert await load(facts, "eu-1") is not first


async def test_expired_shapes_are_forgotten_so_memory_follows_the_recent_rate(
    cache: tuple[FactsCache, SteppedClock],
) -> None:
    facts, clock = cache
    for i in range(100):  # a new end user per request: a new shape each time
        await load(facts, f"eu-{i}")
    assert len(facts._entries) == 100
    clock.now += 0.3
    for i in range(100, 110):  # another model and no tag: every part of these shapes is read now
        await facts.load(api_key="sk-sg-unknown", model="gpt-5", end_user=f"eu-{i}", tags=[])
    clock.now += 0.3  # the first 100 are now 0.6 s old, the last 10 only 0.3 s

    await load(facts, "eu-new")

    assert {key[2] for key in facts._entries} == {f"eu-{i}" for i in range(100, 110)} | {"eu-new"}


async def test_the_cache_never_holds_more_than_its_bound(
    cache: tuple[FactsCache, SteppedClock], monkeypatch: pytest.MonkeyPatch
) -> None:
    facts, _clock = cache
    monkeypatch.setattr(facts_module, "MAX_ENTRIES", 10)
    for i in range(25):  # all within one lifetime
        await load(facts, f"eu-{i}")
    assert len(facts._entries) == 10
    assert {key[2] for key in facts._entries} == {f"eu-{i}" for i in range(15, 25)}


async def test_concurrent_misses_of_one_shape_share_one_read(
    cache: tuple[FactsCache, SteppedClock],
) -> None:
    """When an entry is missing under load, the requests that find it so wait for one database
    read (counted at the driver) and all get its facts; another shape is read on its own."""
    facts, _clock = cache
    engine = facts.sessions.kw["bind"]
    statements: list[str] = []
    event.listen(engine.sync_engine, "before_cursor_execute", lambda *args: statements.append(args[2]))

    herd = await asyncio.gather(*(load(facts, "eu-herd") for _ in range(10)))
    herd_statements = len(statements)
    statements.clear()
    other = await facts.load(api_key="sk-sg-other", model="gpt-4o", end_user="eu-other", tags=["chat"])
    # ^ what one read of one shape takes, none of its parts cached

    assert all(item is herd[0] for item in herd) and other is not herd[0]
    assert herd_statements == len(statements) > 0
    statements.clear()
    await load(facts, "eu-herd")
    assert statements == []  # and then it is cached


async def test_a_failed_shared_read_fails_every_request_that_waited_for_it(sqlite_url: str) -> None:
    settings = Settings(database_url=sqlite_url)
    engine = create_engine(settings)  # no migration: the tables are missing, so the read fails
    facts = FactsCache(session_factory(engine), ttl_seconds=0.5, settings=settings)
    try:
        outcomes = await asyncio.gather(*(load(facts, "eu-1") for _ in range(5)), return_exceptions=True)
        assert len(outcomes) == 5 and all(isinstance(item, Exception) for item in outcomes)
        assert facts._loading == {}
    finally:
        await engine.dispose()


async def test_a_new_shape_made_of_parts_read_within_their_lifetime_is_assembled_without_a_read(
    cache: tuple[FactsCache, SteppedClock],
) -> None:
    """With many end users nearly every request is a shape not seen within the lifetime; its key
    chain, end user and tags usually were, and then no database read is needed — until a part expires."""
    facts, clock = cache
    engine = facts.sessions.kw["bind"]
    statements: list[str] = []
    event.listen(engine.sync_engine, "before_cursor_execute", lambda *args: statements.append(args[2]))
    key = "sk-sg-unknown"
    await facts.load(api_key=key, model="gpt-4o", end_user="eu-1", tags=["chat"])
    await facts.load(api_key=key, model="gpt-4o", end_user="eu-2", tags=["code"])
    assert statements
    statements.clear()
    clock.now += 0.3

    for end_user, tags in (("eu-2", ["chat"]), ("eu-1", []), (None, ["code", "chat"]), ("eu-1", ["code"])):
        assembled = await facts.load(api_key=key, model="gpt-4o", end_user=end_user, tags=tags)
        assert assembled.end_user is None if end_user is None else assembled.end_user.id == end_user
        assert [tag.id for tag in assembled.tags] == sorted(tags)
    assert statements == []

    await facts.load(api_key=key, model="gpt-5", end_user="eu-1", tags=[])  # another model: another chain
    assert statements
    statements.clear()
    clock.now += 0.3  # the first reads are 0.6 s old: past their lifetime, so are shapes made of them
    await facts.load(api_key=key, model="gpt-4o", end_user="eu-2", tags=["chat"])
    assert statements


async def test_a_cached_part_that_expires_while_a_read_waits_is_read_again(
    cache: tuple[FactsCache, SteppedClock],
) -> None:
    """Facts are never older than their lifetime: when the read of a shape's missing part takes long
    enough for a cached part of it to expire, that part is read again rather than used."""
    facts, clock = cache
    engine = facts.sessions.kw["bind"]
    statements: list[str] = []
    key = "sk-sg-unknown"
    await facts.load(api_key=key, model="gpt-4o", end_user="eu-1", tags=[])  # the chain, read at 1000.0
    clock.now += 0.3

    def slow_read(_conn: object, _cursor: object, statement: str, *_rest: object) -> None:
        statements.append("chain" if "FROM keys" in statement else "named")
        if len(statements) == 1:
            clock.now += 0.3  # the first read (eu-2's) ends at 1000.6: the cached chain is 0.6 s old by then

    event.listen(engine.sync_engine, "before_cursor_execute", slow_read)
    await facts.load(api_key=key, model="gpt-4o", end_user="eu-2", tags=[])
    assert statements == ["named", "chain"]
