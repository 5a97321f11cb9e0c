"""spendgate.client against a real `spendgate serve` (PostgreSQL + its own redis-server), sync and async.

Every test runs with both clients. The sync one is called from a worker thread, so the event
loop — and the TCP proxy that watches or cuts connections in it — keeps running meanwhile.
"""

from __future__ import annotations

import asyncio
import re
import uuid
from collections.abc import AsyncIterator, Callable
from decimal import Decimal
from pathlib import Path
from typing import Any

import httpx
import pytest

from reliability.harness import ADMIN_TOKEN, GATEWAY_TOKEN, Cluster
from spendgate.client import (
    DENIAL_STATUS,
    AsyncSpendgateClient,
    Authorization,
    BudgetDenied,
    CostNotSet,
    Guard,
    Principal,
    RecordResult,
    RetryEvent,
    SpendgateClient,
    SpendgateClientError,
    SpendgateRejected,
    SpendgateUnavailable,
    denial_status,
)
from support.scenario import create, create_key, ledger
from support.services import free_port
from support.tcp_proxy import HttpTcpProxy

REPO = Path(__file__).resolve().parents[1]


class _Service(Cluster):
    """One replica, with the service's normal reservation lifetime: a reservation released in a
    test must have been released by a record, not by expiry."""

    def _env(self, replica: int | None = None) -> dict[str, str]:
        return super()._env(replica) | {"SPENDGATE_RESERVATION_TTL": "600"}


class Driver:
    """One awaitable face for both clients."""

    def __init__(self, kind: str, base_url: str, token: str = GATEWAY_TOKEN, **options: Any) -> None:
        self.events: list[RetryEvent] = []
        options = {"backoff": 0.01, "on_retry": self.events.append} | options
        kinds = {"sync": SpendgateClient, "async": AsyncSpendgateClient}
        self.client: SpendgateClient | AsyncSpendgateClient = kinds[kind](base_url, token, **options)

    async def authorize(self, **body: Any) -> Authorization:
        client = self.client
        if isinstance(client, SpendgateClient):
            return await asyncio.to_thread(lambda: client.authorize(**body))
        return await client.authorize(**body)

    async def record(self, request_id: str, **body: Any) -> RecordResult:
        client = self.client
        if isinstance(client, SpendgateClient):
            return await asyncio.to_thread(lambda: client.record(request_id, **body))
        return await client.record(request_id, **body)

    async def guarded(self, block: Callable[[Guard], None], seen: list[Guard], **body: Any) -> None:
        """`with client.guard(**body) as g: block(g)`; `seen` gets `g`, whatever happens."""
        client = self.client
        if isinstance(client, SpendgateClient):
            def run() -> None:
                with client.guard(**body) as g:
                    seen.append(g)
                    block(g)

            await asyncio.to_thread(run)
            return
        async with client.guard(**body) as g:
            seen.append(g)
            block(g)

    async def close(self) -> None:
        if isinstance(self.client, SpendgateClient):
            self.client.close()
        else:
            await self.client.aclose()


@pytest.fixture(scope="module")
async def service(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[_Service]:
    service = _Service(tmp_path_factory.mktemp("client-service"), replicas=1)
    try:
        await service.start()
        yield service
    finally:
        await service.stop()


@pytest.fixture
async def admin(service: _Service) -> AsyncIterator[httpx.AsyncClient]:
    if service.redis.process is None:  # a test that killed Redis and failed before restarting it
        service.redis.start()
    async with httpx.AsyncClient(
        base_url=service.replicas[0].url, headers={"authorization": f"Bearer {ADMIN_TOKEN}"}, timeout=10
    ) as client:
        yield client


@pytest.fixture
async def proxy(service: _Service) -> AsyncIterator[HttpTcpProxy]:
    proxy = HttpTcpProxy(service.replicas[0].port)
    await proxy.start()
    yield proxy
    await proxy.stop()


@pytest.fixture(params=["sync", "async"])
async def connect(request: pytest.FixtureRequest, proxy: HttpTcpProxy) -> AsyncIterator[Callable[..., Driver]]:
    """`connect(**options)` → a Driver of this test's kind, through the proxy unless `base_url=` says."""
    drivers: list[Driver] = []

    def make(base_url: str = proxy.url, **options: Any) -> Driver:
        drivers.append(Driver(request.param, base_url, **options))
        return drivers[-1]

    yield make
    for driver in drivers:
        await driver.close()


async def _key(admin: httpx.AsyncClient, budget: str = "1.00") -> tuple[str, str]:
    """A fresh user with a key of its own that has `budget`; returns (key id, secret)."""
    suffix = uuid.uuid4().hex[:10]
    await create(admin, "users", {"id": f"u-{suffix}"})
    key_id = f"k-{suffix}"
    secret = await create_key(admin, id=key_id, user_id=f"u-{suffix}", budget={"max_budget": budget})
    return key_id, secret


async def _key_ledger(admin: httpx.AsyncClient, key_id: str) -> tuple[Decimal, Decimal]:
    shown = await ledger(admin, f"keys/{key_id}")
    return Decimal(shown["spent"]), Decimal(shown["reserved"])


# --- the round trip ---------------------------------------------------------------------------


async def test_allowed_request_reserves_then_record_charges_the_ledger_exactly(
    connect: Callable[..., Driver], admin: httpx.AsyncClient
) -> None:
    key_id, secret = await _key(admin)
    client = connect()

    authorization = await client.authorize(api_key=secret, model="gpt-4o", estimated_cost=Decimal("0.02"))

    assert authorization.allowed and authorization.decision == "allow"
    assert uuid.UUID(authorization.request_id).version == 4
    assert authorization.reservation is not None and authorization.reservation.amount == Decimal("0.02")
    assert ("key", key_id) in {(c.entity.type, c.entity.id) for c in authorization.charges}
    assert authorization.policy_revision
    assert await _key_ledger(admin, key_id) == (Decimal(0), Decimal("0.02"))

    result = await client.record(authorization.request_id, cost=Decimal("0.000000183"))

    assert (result.recorded, result.duplicate) == (True, False)
    assert {c.amount for c in result.charges} == {Decimal("0.000000183")}
    assert await _key_ledger(admin, key_id) == (Decimal("0.000000183"), Decimal(0))


async def test_usage_is_priced_by_the_service_when_no_cost_is_passed(
    connect: Callable[..., Driver], admin: httpx.AsyncClient
) -> None:
    key_id, secret = await _key(admin)
    client = connect()

    authorization = await client.authorize(api_key=secret, model="gpt-4o",
                                           usage={"input_tokens": 1_000, "max_output_tokens": 100})
    assert authorization.reservation is not None
    reserved = authorization.reservation.amount
    result = await client.record(authorization.request_id, usage={"input_tokens": 1_000, "output_tokens": 10})
    with pytest.raises(SpendgateRejected) as rejected:
        await client.record(str(uuid.uuid4()), api_key=secret, model="acme-llm",
                            usage={"input_tokens": 1, "output_tokens": 1})
    with pytest.raises(ValueError, match="cost .* or usage"):
        await client.record(authorization.request_id)

    # gpt-4o at $2.50 / $10 per 1M tokens: 1000 in + 100 out reserved, 1000 in + 10 out charged.
    assert reserved == Decimal("0.0035")
    assert {c.amount for c in result.charges} == {Decimal("0.0026")}
    assert (rejected.value.status, rejected.value.code) == (422, "unknown_price")
    assert await _key_ledger(admin, key_id) == (Decimal("0.0026"), Decimal(0))


async def test_a_principal_is_authorized_and_recorded_in_place_of_an_api_key(
    connect: Callable[..., Driver], admin: httpx.AsyncClient
) -> None:
    suffix = uuid.uuid4().hex[:10]
    principal = Principal(key=f"gw-{suffix}", user=f"u-{suffix}", team=f"t-{suffix}")
    client = connect()

    authorization = await client.authorize(principal=principal, estimated_cost=Decimal("0.02"))
    assert authorization.allowed
    charged = {(c.entity.type, c.entity.id) for c in authorization.charges}
    assert {("key", principal.key), ("team", principal.team)} <= charged
    await client.record(authorization.request_id, cost=Decimal("0.01"))
    never_authorized = await client.record(str(uuid.uuid4()), cost=Decimal("0.005"), principal=principal)

    assert ("team", principal.team) in {(c.entity.type, c.entity.id) for c in never_authorized.charges}
    assert Decimal((await ledger(admin, f"teams/{principal.team}"))["spent"]) == Decimal("0.015")


async def test_guard_records_the_cost_the_block_sets(connect: Callable[..., Driver], admin: httpx.AsyncClient) -> None:
    key_id, secret = await _key(admin)
    seen: list[Guard] = []

    def call_model(g: Guard) -> None:
        g.cost = "0.0183"

    await connect().guarded(call_model, seen, api_key=secret, estimated_cost="0.02", request_id=f"r-{uuid.uuid4()}")

    [g] = seen
    assert g.record is not None and not g.record.duplicate
    assert await _key_ledger(admin, key_id) == (Decimal("0.0183"), Decimal(0))


async def test_budget_exceeded_raises_budget_denied_with_status_402(
    connect: Callable[..., Driver], admin: httpx.AsyncClient
) -> None:
    key_id, secret = await _key(admin, budget="0.01")
    seen: list[Guard] = []

    with pytest.raises(BudgetDenied) as denied:
        await connect().guarded(lambda g: None, seen, api_key=secret, estimated_cost="0.02")

    assert denied.value.status == 402
    assert [(r.code, r.entity and r.entity.id, r.limit) for r in denied.value.reasons] == [
        ("budget_exceeded", key_id, Decimal("0.01"))
    ]
    assert not denied.value.authorization.allowed and denied.value.authorization.reservation is None
    assert seen == []  # the block never ran
    assert await _key_ledger(admin, key_id) == (Decimal(0), Decimal(0))


async def test_invalid_key_is_a_denial_with_status_401(connect: Callable[..., Driver]) -> None:
    authorization = await connect().authorize(api_key="sk-no-such-key", estimated_cost="0.01")

    assert not authorization.allowed
    assert [r.code for r in authorization.reasons] == ["invalid_key"]
    assert denial_status(r.code for r in authorization.reasons) == 401


@pytest.mark.parametrize("cost_before_failing", [None, "0.004"])
async def test_guard_records_failure_on_exception_and_releases_the_reservation(
    connect: Callable[..., Driver], admin: httpx.AsyncClient, cost_before_failing: str | None
) -> None:
    key_id, secret = await _key(admin)
    seen: list[Guard] = []

    def failing_call(g: Guard) -> None:
        g.cost = cost_before_failing
        raise TimeoutError("the model provider timed out")

    with pytest.raises(TimeoutError, match="model provider"):
        await connect().guarded(failing_call, seen, api_key=secret, estimated_cost="0.02")

    [g] = seen
    assert g.record is not None and g.record.recorded
    assert await _key_ledger(admin, key_id) == (Decimal(cost_before_failing or 0), Decimal(0))


async def test_guard_without_a_cost_raises_and_still_releases_the_reservation(
    connect: Callable[..., Driver], admin: httpx.AsyncClient
) -> None:
    key_id, secret = await _key(admin)
    seen: list[Guard] = []

    with pytest.raises(CostNotSet, match="set `g.cost`"):
        await connect().guarded(lambda g: None, seen, api_key=secret, estimated_cost="0.02")

    assert seen[0].record is not None and seen[0].record.recorded
    assert await _key_ledger(admin, key_id) == (Decimal(0), Decimal(0))


async def test_floats_are_refused_before_anything_is_sent(connect: Callable[..., Driver], proxy: HttpTcpProxy) -> None:
    with pytest.raises(TypeError, match="Decimal"):
        await connect().authorize(api_key="sk-x", estimated_cost=0.02)

    assert proxy.requests == []


# --- retries ----------------------------------------------------------------------------------


async def test_record_retried_after_a_lost_answer_charges_exactly_once(
    connect: Callable[..., Driver], admin: httpx.AsyncClient, proxy: HttpTcpProxy
) -> None:
    key_id, secret = await _key(admin)
    client = connect()
    authorization = await client.authorize(api_key=secret, estimated_cost="0.02")
    proxy.cut_response("POST /v1/record", times=1)

    result = await client.record(authorization.request_id, cost="0.015")

    assert proxy.cut == ["POST /v1/record"]  # the first answer was lost after the server committed
    assert proxy.seen("POST /v1/record") == 2
    assert [(e.route, e.request_id, e.failure.status) for e in client.events] == [
        ("/v1/record", authorization.request_id, None)
    ]
    assert (result.recorded, result.duplicate) == (True, True)
    assert await _key_ledger(admin, key_id) == (Decimal("0.015"), Decimal(0))


async def test_authorize_retried_after_a_lost_answer_reserves_exactly_once(
    connect: Callable[..., Driver], admin: httpx.AsyncClient, proxy: HttpTcpProxy
) -> None:
    key_id, secret = await _key(admin)
    proxy.cut_response("POST /v1/authorize", times=1)

    authorization = await connect().authorize(api_key=secret, estimated_cost="0.02")

    assert authorization.allowed
    assert proxy.seen("POST /v1/authorize") == 2
    assert await _key_ledger(admin, key_id) == (Decimal(0), Decimal("0.02"))


async def test_unavailable_then_success_is_retried_with_the_same_request_id(
    connect: Callable[..., Driver], admin: httpx.AsyncClient, service: _Service
) -> None:
    key_id, secret = await _key(admin)
    events: list[RetryEvent] = []

    def redis_back(event: RetryEvent) -> None:
        events.append(event)
        service.redis.start()  # Redis returns between the 503 and the retry

    client = connect(base_url=service.replicas[0].url, on_retry=redis_back)
    service.redis.kill()
    try:
        authorization = await client.authorize(api_key=secret, estimated_cost="0.02", request_id="r-" + key_id)
    finally:
        if service.redis.process is None:
            service.redis.start()

    assert [(e.request_id, e.failure.status, e.failure.code) for e in events] == [("r-" + key_id, 503, "unavailable")]
    assert "redis" in events[0].failure.message
    assert authorization.allowed and authorization.request_id == "r-" + key_id
    assert await _key_ledger(admin, key_id) == (Decimal(0), Decimal("0.02"))


async def test_unavailable_after_every_retry_raises_spendgate_unavailable(connect: Callable[..., Driver]) -> None:
    client = connect(base_url=f"http://127.0.0.1:{free_port()}", retries=2)  # nothing listens there

    with pytest.raises(SpendgateUnavailable) as unavailable:
        await client.authorize(api_key="sk-x", estimated_cost="0.01")

    assert unavailable.value.attempts == 3 and unavailable.value.status is None
    assert len(client.events) == 2 and len({e.request_id for e in client.events}) == 1


async def test_invalid_request_is_not_retried_and_carries_the_servers_message(
    connect: Callable[..., Driver], proxy: HttpTcpProxy
) -> None:
    client = connect()

    with pytest.raises(SpendgateRejected) as rejected:
        await client.authorize(api_key="sk-x", estimated_cost="-1")

    assert (rejected.value.status, rejected.value.code) == (422, "invalid_request")
    assert "estimated_cost" in rejected.value.server_message and "negative" in rejected.value.server_message
    assert rejected.value.server_message in str(rejected.value)
    assert proxy.seen("POST /v1/authorize") == 1 and client.events == []


async def test_conflicting_record_is_rejected_with_409(
    connect: Callable[..., Driver], admin: httpx.AsyncClient
) -> None:
    _, secret = await _key(admin)
    client = connect()
    authorization = await client.authorize(api_key=secret, estimated_cost="0.02")
    await client.record(authorization.request_id, cost="0.01")

    with pytest.raises(SpendgateRejected) as rejected:
        await client.record(authorization.request_id, cost="0.02")

    assert (rejected.value.status, rejected.value.code) == (409, "conflict") and client.events == []


# --- secrets ----------------------------------------------------------------------------------


async def test_gateway_token_never_shows_in_the_client_or_its_errors(
    connect: Callable[..., Driver], admin: httpx.AsyncClient
) -> None:
    wrong = "sk-gateway-wrong-0123456789"
    shown: list[str] = []
    for driver, token in ((connect(), GATEWAY_TOKEN), (connect(token=wrong), wrong),
                          (connect(base_url=f"http://127.0.0.1:{free_port()}", retries=0), GATEWAY_TOKEN)):
        shown += [repr(driver.client), str(driver.client)]
        try:
            await driver.authorize(api_key="sk-x", estimated_cost="0.01")
        except SpendgateClientError as exc:
            chain: BaseException | None = exc
            while chain is not None:
                shown += [repr(chain), str(chain)]
                chain = chain.__cause__ or chain.__context__
        assert not any(token in text for text in shown), shown
    _, secret = await _key(admin, budget="0")
    with pytest.raises(BudgetDenied) as denied:
        await connect().guarded(lambda g: None, [], api_key=secret, estimated_cost="0.01")
    assert GATEWAY_TOKEN not in repr(denied.value) + str(denied.value)
    assert any("401 unauthorized" in text for text in shown) and any("ConnectError" in text for text in shown)


# --- the status mapping -----------------------------------------------------------------------


def test_denial_statuses_cover_every_reason_code_of_the_shipped_policy() -> None:
    rego = (REPO / "policies/spendgate/admission/admission.rego").read_text()
    codes = set(re.findall(r'"code": "(\w+)"', rego)) - {"soft_budget_crossed"}
    assert set(DENIAL_STATUS) == codes
    assert DENIAL_STATUS["budget_exceeded"] == 402
    assert {DENIAL_STATUS[c] for c in ("invalid_key", "key_expired")} == {401}
    assert {DENIAL_STATUS[c] for c in ("key_blocked", "model_not_allowed")} == {403}


@pytest.mark.parametrize(
    ("codes", "status"),
    [(["budget_exceeded", "key_blocked"], 403), (["budget_exceeded", "key_expired", "key_blocked"], 401),
     (["budget_exceeded"], 402), (["a_custom_policy_reason"], 403), ([], 403)],
)
def test_several_reasons_answer_the_most_fundamental_status(codes: list[str], status: int) -> None:
    assert denial_status(codes) == status
