"""Shared fixtures: real PostgreSQL (a database per run), a redis-server per run, app clients."""

from __future__ import annotations

import gc
from collections.abc import AsyncIterator, Iterator
from contextlib import AsyncExitStack
from pathlib import Path
from typing import Any

import httpx
import pytest
import redis.asyncio as aioredis
from sqlalchemy.ext.asyncio import create_async_engine
from starlette.datastructures import State

from spendgate.api import create_app
from spendgate.migrate import upgrade
from spendgate.settings import Settings, get_settings
from support.app import ADMIN_TOKEN, GATEWAY_TOKEN, AppFactory, RunningApp
from support.opa_compat import OpaCompatServer
from support.services import ALL_TABLES, RedisServer, create_database, drop_database



def pytest_configure(config: pytest.Config) -> None:
    """No automatic garbage collection during the run: collect between tests, on the main thread.

    regorus engines are unsendable: one dropped on another thread raises "Engine is unsendable, but
    is being dropped on another thread". An engine caught in a reference cycle dies whenever the cyclic
    collector runs — and automatic collection runs on whichever thread happens to allocate, such as
    aiosqlite's connection threads. Collecting only here makes that deterministic.
    """
    gc.disable()


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_teardown(item: pytest.Item, nextitem: pytest.Item | None) -> Iterator[None]:
    yield
    gc.collect()


@pytest.fixture(scope="session")
async def pg_url() -> AsyncIterator[str]:
    """A fresh, migrated PostgreSQL database for this test run."""
    url = await create_database()
    engine = create_async_engine(url)
    await upgrade(engine)
    await engine.dispose()
    yield url
    await drop_database(url)


@pytest.fixture
async def clean_pg(pg_url: str) -> AsyncIterator[str]:
    """The run's database, emptied before the test."""
    engine = create_async_engine(pg_url)
    async with engine.begin() as conn:
        from sqlalchemy import text

        await conn.execute(text(f"TRUNCATE {ALL_TABLES}"))
    await engine.dispose()
    yield pg_url


@pytest.fixture
def sqlite_url(tmp_path: Path) -> str:
    return f"sqlite+aiosqlite:///{tmp_path / 'spendgate.db'}"


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    server = RedisServer(workdir=tmp_path_factory.mktemp("redis"))
    server.start()
    yield server
    server.stop()


@pytest.fixture
async def redis_url(redis_server: RedisServer) -> AsyncIterator[str]:
    """The run's redis-server, flushed before the test (restarted if a test killed it)."""
    if redis_server.process is None:
        redis_server.start()
    client = aioredis.from_url(redis_server.url)
    await client.flushall()
    await client.aclose()
    yield redis_server.url


@pytest.fixture(scope="session")
def opa_server() -> Iterator[OpaCompatServer]:
    """An OPA-compatible REST server on OPA's own Go engine (no OPA binary installs here), one per run.

    Fails, naming the install command, when that engine (requirements/opa-engine.txt) is missing."""
    server = OpaCompatServer()
    server.start()
    yield server
    server.stop()


@pytest.fixture
def opa(opa_server: OpaCompatServer) -> Iterator[OpaCompatServer]:
    """The compat server: empty, healthy and up at the start of the test."""
    opa_server.reset()
    yield opa_server
    opa_server.heal()


@pytest.fixture(autouse=True)
def _fresh_settings(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Settings come from the environment: start every test from a clean, cached-free slate."""
    import os

    for name in list(os.environ):
        if name.startswith("SPENDGATE_") and not name.startswith("SPENDGATE_TEST_"):
            monkeypatch.delenv(name)
    monkeypatch.chdir(Path(__file__).parent)  # no stray .env from the developer's checkout
    get_settings.cache_clear()
    yield
    get_settings.cache_clear()


# --- the app over ASGI ---------------------------------------------------------------------


def _release_runtime(app: Any) -> None:
    """Let go of a stopped app's runtime on this thread instead of leaving it to the cyclic
    garbage collector, which may run on any thread (regorus engines must die on the loop's)."""
    app.state = State()


@pytest.fixture
async def app_factory() -> AsyncIterator[AppFactory]:
    """`await app_factory(database_url=…, redis_url=…, **settings)` starts an app; all stop after the test.

    httpx.ASGITransport does not run the lifespan, so it is entered here by hand. Policy hot
    reload is off unless a test asks for it (`policy_reload_seconds=…`): a test must not pick
    up edits made to `policies/` while it runs.
    """
    async with AsyncExitStack() as stack:

        async def start(*, database_url: str, redis_url: str | None = None, **overrides: Any) -> RunningApp:
            settings = Settings(
                database_url=database_url,
                redis_url=redis_url,
                admin_token=ADMIN_TOKEN,
                gateway_token=GATEWAY_TOKEN,
                **({"policy_reload_seconds": 0} | overrides),
            )
            app = create_app(settings)
            stack.callback(_release_runtime, app)  # runs after the lifespan has exited
            await stack.enter_async_context(app.router.lifespan_context(app))
            transport = httpx.ASGITransport(app=app)

            async def client(token: str | None) -> httpx.AsyncClient:
                headers = {"authorization": f"Bearer {token}"} if token else {}
                return await stack.enter_async_context(
                    httpx.AsyncClient(transport=transport, base_url="http://spendgate.test", headers=headers)
                )

            return RunningApp(app, settings, await client(ADMIN_TOKEN), await client(GATEWAY_TOKEN), await client(None))

        yield start


@pytest.fixture
async def pg_app(app_factory: AppFactory, clean_pg: str, redis_url: str) -> RunningApp:
    """The app on the run's (emptied) PostgreSQL database with Redis counters."""
    return await app_factory(database_url=clean_pg, redis_url=redis_url)


@pytest.fixture
async def sqlite_app(app_factory: AppFactory, sqlite_url: str) -> RunningApp:
    """The app as it runs out of the box: embedded SQLite, counters in the ledger database."""
    return await app_factory(database_url=sqlite_url)


@pytest.fixture(params=["postgres+redis", "sqlite"])
async def any_app(
    request: pytest.FixtureRequest, app_factory: AppFactory, clean_pg: str, redis_url: str, sqlite_url: str
) -> RunningApp:
    """The app on each supported backend in turn (for tests that must hold on both)."""
    if request.param == "sqlite":
        return await app_factory(database_url=sqlite_url)
    return await app_factory(database_url=clean_pg, redis_url=redis_url)
