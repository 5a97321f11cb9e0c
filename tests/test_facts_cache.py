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
from spendgate.tables import EndUser


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


async def test_a_shape_asked_for_late_in_its_lifetime_is_read_again_in_the_background(
    cache: tuple[FactsCache, SteppedClock],
) -> None:
    """Late in its lifetime (REFRESH_AFTER), a request still gets the cached facts at once, and a background
    read replaces them: a request after the old facts' expiry finds the new ones cached, and sees what
    changed in the database before the background read (here: the end user was blocked)."""
    facts, clock = cache
    statements: list[str] = []
    event.listen(facts.sessions.kw["bind"].sync_engine, "before_cursor_execute",
                 lambda *args: statements.append(args[2]))
    first = await load(facts, "eu-1")
    assert first.end_user.known is False  # type: ignore[attr-defined]
    async with facts.sessions() as session:
        session.add(EndUser(id="eu-1", blocked=True))
        await session.commit()
    clock.now += 0.5 * facts_module.REFRESH_AFTER - 0.01
    assert await load(facts, "eu-1") is first and not facts._refreshing  # early in its lifetime: no read

    clock.now += 0.02  # past REFRESH_AFTER of the lifetime, within it
    statements.clear()
    assert await load(facts, "eu-1") is first  # answered from the cache, not after a read
    (refresh,) = facts._refreshing
    assert await load(facts, "eu-1") is first and facts._refreshing == {refresh}  # one read per shape at a time
    await refresh
    assert statements, "the background read went to the database"

    clock.now += 0.5 * (1 - facts_module.REFRESH_AFTER)  # the first facts have expired now
    statements.clear()
    again = await load(facts, "eu-1")
    assert statements == [] and again is not first
    assert again.end_user.known and again.end_user.blocked  # type: ignore[attr-defined]


async def test_a_failed_background_read_leaves_the_next_request_to_read_and_fail(
    cache: tuple[FactsCache, SteppedClock], monkeypatch: pytest.MonkeyPatch,
) -> None:
    facts, clock = cache
    first = await load(facts, "eu-1")
    real_read = facts._read_missing

    async def failing(*args: object, **kwargs: object) -> object:
        raise ConnectionError("the database went away")

    monkeypatch.setattr(facts, "_read_missing", failing)
    clock.now += 0.45
    assert await load(facts, "eu-1") is first
    (refresh,) = facts._refreshing
    await refresh  # the failure stays in the background
    assert facts._loading == {} and facts._refreshing == set()
    clock.now += 0.1
    with pytest.raises(ConnectionError):
        await load(facts, "eu-1")  # expired now: this request reads, and fails, itself
    monkeypatch.setattr(facts, "_read_missing", real_read)
    assert await load(facts, "eu-1") is not first


async def test_closing_the_cache_stops_its_background_reads(cache: tuple[FactsCache, SteppedClock]) -> None:
    facts, clock = cache
    await load(facts, "eu-1")
    clock.now += 0.45
    await load(facts, "eu-1")
    (refresh,) = facts._refreshing
    await facts.close()
    assert refresh.done() and facts._refreshing == set() and facts._loading == {}


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
