"""spendgate.integrations.litellm in a REAL LiteLLM proxy, in front of a fake OpenAI upstream, with a
real Spendgate (two `spendgate serve` replicas, PostgreSQL, their own redis-server).

LiteLLM runs from its own venv (`.venv-litellm`, see litellm_process.py). Its success and failure
events run in a background worker after the client has its answer, so every check of what was
recorded polls Spendgate's ledger (or `spend_events`) until it holds the exact expected value,
with a deadline — never a sleep.

Prices: gpt-4o costs the same in LiteLLM's table and in Spendgate's (policies/spendgate/pricing/
data.json): $2.50 / 1M input tokens, $10 / 1M output tokens; the fake upstream reports
`prompt_tokens` = LiteLLM's own count of the test prompt and `completion_tokens` = the request's
`max_tokens`, so the callback's estimate equals the real cost. The proxies price with Spendgate
(SPENDGATE_LITELLM_PRICING's default) except `litellm_keys`, which prices with LiteLLM; Spendgate
runs on a copy of the policies whose price table adds a team markup (MARKUP_TEAM) and a row for
`gpt-4o-cached` with its own cached-input and reasoning prices.
"""

from __future__ import annotations

import asyncio
import json
import shutil
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import pytest

from integrations.litellm_process import (
    REPO,
    FakeUpstream,
    LiteLLMProxy,
    count_prompt_tokens,
    litellm_executable,
)
from reliability.harness import ADMIN_TOKEN, GATEWAY_TOKEN, Cluster
from support.scenario import create, create_key, ledger
from support.services import free_port
from support.tcp_proxy import HttpTcpProxy

INPUT_PRICE = Decimal("0.0000025")  # LiteLLM's price of a gpt-4o input token
OUTPUT_PRICE = Decimal("0.00001")  # … and of an output token
MAX_TOKENS = 20
DEADLINE = 30.0  # seconds for LiteLLM's background events to reach the ledger
NANO = Decimal("1e-9")

#: Prompts with the same token count (the concurrency test sends 200 different ones, so LiteLLM's
#: cache cannot answer any of them).
PROMPTS = [f"Request {n}." for n in range(100, 300)]

#: The team the test policies mark up by MARKUP_BP basis points (data.spendgate.pricing.adjustments).
MARKUP_TEAM = "team-markup"
MARKUP_BP = 2500
#: The test table's row for `gpt-4o-cached` (nano-USD per 1M tokens): every line its own price.
CACHED_ROW = {"input": 3_000_000_000, "cached_input": 700_000_001, "output": 11_000_000_000,
              "reasoning": 13_000_000_003}


def _messages(text: str) -> list[dict[str, str]]:
    return [{"role": "user", "content": text}]


#: An operator's own LiteLLM `custom_auth` (LiteLLM keys mode): LiteLLM, not Spendgate, knows the
#: keys. Here a key spells its identity: "sk-op-<org>.<team>.<user>.<key alias>" (empty: none).
OPERATOR_AUTH = '''
from fastapi import HTTPException
from litellm.proxy._types import UserAPIKeyAuth


async def authenticate(request, api_key):
    if not api_key.startswith("sk-op-"):
        raise HTTPException(status_code=401, detail="unknown key")
    org, team, user, alias = (part or None for part in api_key[len("sk-op-"):].split("."))
    return UserAPIKeyAuth(api_key=api_key, key_alias=alias, user_id=user, team_id=team, org_id=org)
'''


class _Service(Cluster):
    """Two replicas with the normal reservation lifetime: a reservation released during a test
    was released by a record, not by expiry."""

    policy_dir: Path | None = None

    def _env(self, replica: int | None = None) -> dict[str, str]:
        policies = {"SPENDGATE_POLICY_DIR": str(self.policy_dir)} if self.policy_dir else {}
        return super()._env(replica) | {"SPENDGATE_RESERVATION_TTL": "600"} | policies


def _test_policies(workdir: Path) -> Path:
    """A copy of the shipped policies whose price table marks MARKUP_TEAM up and prices gpt-4o-cached."""
    target = workdir / "policies"
    shutil.copytree(REPO / "policies", target)
    table_path = target / "spendgate" / "pricing" / "data.json"
    table = json.loads(table_path.read_text())
    table["adjustments"] = {"team": {MARKUP_TEAM: MARKUP_BP}}
    table["prices"]["gpt-4o-cached"] = CACHED_ROW
    table_path.write_text(json.dumps(table))
    return target


def _ceil_div(amount: int, divisor: int) -> int:
    return -(-amount // divisor)


def table_cost(model: str, usage: dict[str, int], *, basis_points: int = 0, policies: Path | None = None) -> Decimal:
    """What Spendgate's price table charges for `usage` (docs/api.md, "Usage pricing"), in USD:
    tokens x nano-USD per 1M tokens, rounded up to the nano-USD, then the adjustment, rounded up again."""
    table = json.loads(((policies or REPO / "policies") / "spendgate" / "pricing" / "data.json").read_text())
    row = table["prices"][model]
    cached, reasoning = usage.get("cached_input_tokens", 0), usage.get("reasoning_tokens", 0)
    lines = {
        "input": (usage["input_tokens"] - cached, row["input"]),
        "cached_input": (cached, row.get("cached_input", row["input"])),
        "output": (usage["output_tokens"] - reasoning, row["output"]),
        "reasoning": (reasoning, row.get("reasoning", row["output"])),
    }
    list_nanos = _ceil_div(sum(tokens * price for tokens, price in lines.values()), 1_000_000)
    nanos = _ceil_div(list_nanos * (10_000 + basis_points), 10_000)
    return Decimal(nanos) * NANO


@dataclass
class Stack:
    service: _Service
    upstream: FakeUpstream
    prompt_tokens: int
    #: Spendgate keys, fail closed, on replica 0 / replica 1; LiteLLM's in-memory cache on.
    main: LiteLLMProxy
    second: LiteLLMProxy
    #: Fail open, reaching replica 0 through `cutter`.
    fail_open: LiteLLMProxy
    cutter: HttpTcpProxy
    #: Fail closed, pointed at a port where nothing listens.
    fail_closed: LiteLLMProxy
    #: LiteLLM keys mode: the operator's own `custom_auth` (OPERATOR_AUTH) resolves the caller.
    litellm_keys: LiteLLMProxy
    admin: httpx.AsyncClient

    def cost(self, completion_tokens: int = MAX_TOKENS) -> Decimal:
        return self.prompt_tokens * INPUT_PRICE + completion_tokens * OUTPUT_PRICE


@pytest.fixture(scope="module")
async def stack(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Stack]:
    try:
        litellm_executable()
    except FileNotFoundError as exc:
        pytest.fail(str(exc))
    workdir: Path = tmp_path_factory.mktemp("litellm")
    counts = await asyncio.to_thread(count_prompt_tokens, [_messages(text) for text in PROMPTS])
    assert len(set(counts)) == 1, f"the prompts must count the same number of tokens: {set(counts)}"

    upstream = FakeUpstream(prompt_tokens=counts[0])
    service = _Service(workdir, replicas=2)
    service.policy_dir = _test_policies(workdir)
    cutter = HttpTcpProxy(0)
    proxies: list[LiteLLMProxy] = []
    admin = httpx.AsyncClient(headers={"authorization": f"Bearer {ADMIN_TOKEN}"}, timeout=10)
    try:
        await upstream.start()
        await service.start()
        admin.base_url = httpx.URL(service.replicas[0].url)
        cutter.upstream_port = service.replicas[0].port
        await cutter.start()

        def spendgate(url: str, **extra: str) -> dict[str, str]:
            return {"SPENDGATE_URL": url, "SPENDGATE_GATEWAY_TOKEN": GATEWAY_TOKEN, "SPENDGATE_RETRIES": "2"} | extra

        # 100 concurrent authorizes per replica exceed its SPENDGATE_MAX_AUTHORIZE_IN_FLIGHT (64): it
        # sheds the rest with 503 and the callback retries them (same request id) — given enough retries.
        bursty = {"SPENDGATE_RETRIES": "8"}
        main = LiteLLMProxy(workdir, upstream.url, spendgate(service.replicas[0].url, **bursty), cache=True,
                            name="main")
        second = LiteLLMProxy(workdir, upstream.url, spendgate(service.replicas[1].url, **bursty), cache=True,
                              name="second")
        fail_open = LiteLLMProxy(workdir, upstream.url, spendgate(cutter.url, SPENDGATE_FAIL_OPEN="true"),
                                 name="fail-open")
        fail_closed = LiteLLMProxy(workdir, upstream.url, spendgate(f"http://127.0.0.1:{free_port()}",
                                                                    SPENDGATE_TIMEOUT="0.5"), name="fail-closed")
        (workdir / "operator_auth.py").write_text(OPERATOR_AUTH)
        litellm_keys = LiteLLMProxy(workdir, upstream.url,
                                    spendgate(service.replicas[1].url, SPENDGATE_LITELLM_KEYS="litellm",
                                              SPENDGATE_LITELLM_PRICING="litellm"),
                                    custom_auth="operator_auth.authenticate", name="litellm-keys")
        proxies = [main, second, fail_open, fail_closed, litellm_keys]
        for proxy in proxies:
            proxy.start()
        await asyncio.gather(*(proxy.wait_ready() for proxy in proxies))
        yield Stack(service, upstream, counts[0], main, second, fail_open, cutter, fail_closed, litellm_keys, admin)
    finally:
        for proxy in proxies:
            proxy.stop()
        await admin.aclose()
        await cutter.stop()
        await service.stop()
        upstream.stop()


# --- helpers ------------------------------------------------------------------------------------


async def _new_key(stack: Stack, budget: str | None = None, **fields: Any) -> tuple[str, str]:
    """A fresh user with a personal key (`budget` on the key); returns (key id, secret)."""
    suffix = uuid.uuid4().hex[:10]
    await create(stack.admin, "users", {"id": f"u-{suffix}"})
    body: dict[str, Any] = {"id": f"k-{suffix}", "user_id": f"u-{suffix}"} | fields
    if budget is not None:
        body["budget"] = {"max_budget": budget}
    return body["id"], await create_key(stack.admin, **body)


async def _chat(proxy: LiteLLMProxy, secret: str, *, model: str = "gpt-4o", text: str | None = None,
                headers: dict[str, str] | None = None, **body: Any) -> httpx.Response:
    payload = {"model": model, "messages": _messages(text or f"Say hi {uuid.uuid4().hex}."),
               "max_tokens": MAX_TOKENS} | body
    async with httpx.AsyncClient(timeout=60) as client:
        return await client.post(f"{proxy.url}/v1/chat/completions", json=payload,
                                 headers={"authorization": f"Bearer {secret}"} | (headers or {}))


async def _spent(stack: Stack, path: str) -> tuple[Decimal, Decimal]:
    shown = await ledger(stack.admin, path)
    return Decimal(shown["spent"]), Decimal(shown["reserved"])


async def _until(check: Callable[[], Awaitable[Any]], expected: Any, what: str) -> None:
    """Poll `check()` until it returns `expected`; fail with the last value after DEADLINE."""
    deadline = asyncio.get_running_loop().time() + DEADLINE
    while True:
        seen = await check()
        if seen == expected:
            return
        if asyncio.get_running_loop().time() > deadline:
            pytest.fail(f"{what}: expected {expected!r}, still {seen!r} after {DEADLINE}s")
        await asyncio.sleep(0.05)


async def _events(stack: Stack, key_id: str) -> list[tuple[str, Decimal, str]]:
    """The key's recorded requests: (request id, cost, outcome), oldest first."""
    conn = await asyncpg.connect(stack.service.asyncpg_url)
    try:
        rows = await conn.fetch(
            "SELECT request_id, cost, outcome FROM spend_events WHERE key_id = $1 ORDER BY created_at", key_id
        )
    finally:
        await conn.close()
    return [(row["request_id"], Decimal(row["cost"]) * NANO, row["outcome"]) for row in rows]


def _header_cost(response: httpx.Response) -> Decimal:
    """LiteLLM's `x-litellm-response-cost` (a float's repr) in whole nano-USD."""
    return Decimal(response.headers["x-litellm-response-cost"]).quantize(NANO)


# --- admitted calls -------------------------------------------------------------------------------


async def test_an_allowed_call_is_charged_its_real_cost_once_to_every_ledger_it_touches(stack: Stack) -> None:
    key_id, secret = await _new_key(stack, budget="1.00")
    end_user, tag = f"cust-{uuid.uuid4().hex[:8]}", f"tag-{uuid.uuid4().hex[:8]}"

    response = await _chat(stack.main, secret, user=end_user, metadata={"tags": [tag]})

    assert response.status_code == 200, response.text
    assert _header_cost(response) == stack.cost()
    await _until(lambda: _spent(stack, f"keys/{key_id}"), (stack.cost(), Decimal(0)), "key ledger")
    assert await _spent(stack, f"end-users/{end_user}") == (stack.cost(), Decimal(0))
    assert await _spent(stack, f"tags/{tag}") == (stack.cost(), Decimal(0))
    [(request_id, cost, outcome)] = await _events(stack, key_id)
    assert (cost, outcome) == (stack.cost(), "success")
    assert request_id.startswith(f"litellm:{response.headers['x-litellm-call-id']}:")


async def test_a_streamed_call_is_recorded_once_after_the_stream_with_its_cost(stack: Stack) -> None:
    key_id, secret = await _new_key(stack, budget="1.00")
    async with httpx.AsyncClient(timeout=60) as client:
        async with client.stream("POST", f"{stack.main.url}/v1/chat/completions", headers={
            "authorization": f"Bearer {secret}"}, json={
            "model": "gpt-4o", "messages": _messages(f"Stream {uuid.uuid4().hex}"), "max_tokens": 7, "stream": True,
        }) as response:
            assert response.status_code == 200
            body = "".join([chunk async for chunk in response.aiter_text()])
    assert body.rstrip().endswith("data: [DONE]")

    await _until(lambda: _spent(stack, f"keys/{key_id}"), (stack.cost(7), Decimal(0)), "key ledger")
    assert [(cost, outcome) for _, cost, outcome in await _events(stack, key_id)] == [(stack.cost(7), "success")]


async def test_two_calls_with_the_same_litellm_call_id_are_two_requests(stack: Stack) -> None:
    key_id, secret = await _new_key(stack, budget="1.00")
    fixed = {"x-litellm-call-id": f"client-chosen-{uuid.uuid4().hex[:8]}"}

    first = await _chat(stack.main, secret, headers=fixed)
    second = await _chat(stack.main, secret, headers=fixed)

    assert (first.status_code, second.status_code) == (200, 200)
    assert first.headers["x-litellm-call-id"] == second.headers["x-litellm-call-id"]
    await _until(lambda: _spent(stack, f"keys/{key_id}"), (2 * stack.cost(), Decimal(0)), "key ledger")
    assert len({request_id for request_id, _, _ in await _events(stack, key_id)}) == 2


async def test_a_cache_hit_is_recorded_at_cost_zero(stack: Stack) -> None:
    key_id, secret = await _new_key(stack, budget="1.00")
    text = f"Cache me {uuid.uuid4().hex}"

    first = await _chat(stack.main, secret, text=text)
    await _until(lambda: _spent(stack, f"keys/{key_id}"), (stack.cost(), Decimal(0)), "first call charged")
    upstream_before = (await stack.upstream.stats())["completions"]
    hit = await _chat(stack.main, secret, text=text)

    assert (first.status_code, hit.status_code) == (200, 200)
    assert hit.headers.get("x-litellm-cache-key"), "the second call was not answered from LiteLLM's cache"
    await _until(lambda: _count(stack, key_id), 2, "both calls recorded")
    assert [(cost, outcome) for _, cost, outcome in await _events(stack, key_id)] == [
        (stack.cost(), "success"), (Decimal(0), "success")]
    assert await _spent(stack, f"keys/{key_id}") == (stack.cost(), Decimal(0))
    assert (await stack.upstream.stats())["completions"] == upstream_before


async def _count(stack: Stack, key_id: str) -> int:
    return len(await _events(stack, key_id))


async def test_no_log_does_not_switch_off_billing(stack: Stack) -> None:
    key_id, secret = await _new_key(stack, budget="1.00")

    response = await _chat(stack.main, secret, **{"no-log": True})

    assert response.status_code == 200, response.text
    await _until(lambda: _spent(stack, f"keys/{key_id}"), (_header_cost(response), Decimal(0)), "key ledger")


async def test_a_provider_failure_is_recorded_as_a_failure_and_releases_the_reservation(stack: Stack) -> None:
    key_id, secret = await _new_key(stack, budget="1.00")

    response = await _chat(stack.main, secret, model="gpt-4o-error")

    assert response.status_code == 500, response.text
    await _until(lambda: _count(stack, key_id), 1, "the failure recorded")
    assert [(cost, outcome) for _, cost, outcome in await _events(stack, key_id)] == [(Decimal(0), "failure")]
    assert await _spent(stack, f"keys/{key_id}") == (Decimal(0), Decimal(0))


async def test_a_client_that_disconnects_mid_stream_is_charged_the_partial_cost(stack: Stack) -> None:
    key_id, secret = await _new_key(stack, budget="1.00")
    before = (await stack.upstream.stats())["disconnects"]
    async with httpx.AsyncClient(timeout=60) as client:
        async with client.stream("POST", f"{stack.main.url}/v1/chat/completions", headers={
            "authorization": f"Bearer {secret}"}, json={
            "model": "gpt-4o-slow", "messages": _messages(f"Slow {uuid.uuid4().hex}"), "stream": True,
        }) as response:
            assert response.status_code == 200
            chunks = 0
            async for _ in response.aiter_lines():
                chunks += 1
                if chunks >= 10:
                    break  # leaving the block closes the connection mid-stream

    await _until(lambda: _count(stack, key_id), 1, "the partial call recorded")
    [(_, cost, outcome)] = await _events(stack, key_id)
    assert outcome == "success" and cost > 0
    assert await _spent(stack, f"keys/{key_id}") == (cost, Decimal(0))
    await _until(lambda: _disconnects(stack), before + 1, "the upstream stream cancelled")


async def _disconnects(stack: Stack) -> int:
    return (await stack.upstream.stats())["disconnects"]


# --- denials ----------------------------------------------------------------------------------------


async def _expire(stack: Stack, key_id: str) -> None:
    conn = await asyncpg.connect(stack.service.asyncpg_url)
    try:
        await conn.execute("UPDATE keys SET expires_at = now() - interval '1 hour' WHERE id = $1", key_id)
    finally:
        await conn.close()


@pytest.mark.parametrize(("case", "status", "code"), [
    ("budget_exceeded", 402, "budget_exceeded"),
    ("invalid_key", 401, "invalid_key"),
    ("key_expired", 401, "key_expired"),
    ("key_blocked", 403, "key_blocked"),
    ("model_not_allowed", 403, "model_not_allowed"),
])
async def test_a_denial_answers_its_status_with_spendgates_reason_and_records_nothing(
    stack: Stack, case: str, status: int, code: str,
) -> None:
    key_id, secret = await _new_key(stack, budget="0" if case == "budget_exceeded" else "1.00",
                                    **({"models": ["gpt-4o"]} if case == "model_not_allowed" else {}))
    if case == "invalid_key":
        secret = "sk-sg-" + uuid.uuid4().hex
    elif case == "key_blocked":
        assert (await stack.admin.patch(f"/v1/admin/keys/{key_id}", json={"blocked": True})).status_code == 200
    elif case == "key_expired":
        await _expire(stack, key_id)
    upstream_before = (await stack.upstream.stats())["completions"]

    response = await _chat(stack.main, secret, model="gpt-4o-mini" if case == "model_not_allowed" else "gpt-4o")

    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert error["message"].startswith("Spendgate refused this request: ")
    assert error["provider_specific_fields"]["error"]["code"] == code
    assert [r["code"] for r in error["provider_specific_fields"]["error"]["reasons"]] == [code]
    assert (await stack.upstream.stats())["completions"] == upstream_before
    # LiteLLM fires a failure event for the refused call too; it must record nothing (the call has
    # no ticket). Checked once a later call's own record has gone through the same event worker.
    other_id, other = await _new_key(stack, budget="1.00")
    assert (await _chat(stack.main, other)).status_code == 200
    await _until(lambda: _count(stack, other_id), 1, "a later call recorded")
    assert await _events(stack, key_id) == []
    assert await _spent(stack, f"keys/{key_id}") == (Decimal(0), Decimal(0))


async def test_a_key_that_is_not_a_spendgate_key_is_refused_before_the_model_is_called(stack: Stack) -> None:
    response = await _chat(stack.main, "sk-some-openai-key")

    assert response.status_code == 401
    assert "Spendgate key" in response.json()["error"]["message"]


async def test_a_tag_spendgate_cannot_take_is_refused_with_400_naming_it(stack: Stack) -> None:
    key_id, secret = await _new_key(stack, budget="1.00")

    response = await _chat(stack.main, secret, metadata={"tags": ["team/search"]})

    assert response.status_code == 400, response.text
    error = response.json()["error"]
    assert error["provider_specific_fields"]["error"]["code"] == "invalid_request"
    assert "tags" in error["message"] and "'/'" in error["message"]
    assert await _spent(stack, f"keys/{key_id}") == (Decimal(0), Decimal(0))


# --- Spendgate unreachable ------------------------------------------------------------------------------


async def test_with_spendgate_unreachable_calls_are_refused_with_503_by_default(stack: Stack) -> None:
    upstream_before = (await stack.upstream.stats())["completions"]

    response = await _chat(stack.fail_closed, "sk-sg-" + uuid.uuid4().hex)

    assert response.status_code == 503, response.text
    assert response.json()["error"]["provider_specific_fields"]["error"]["code"] == "spendgate_unavailable"
    assert (await stack.upstream.stats())["completions"] == upstream_before


async def test_fail_open_lets_the_call_through_and_records_it_once_spendgate_answers(stack: Stack) -> None:
    key_id, secret = await _new_key(stack, budget="1.00")
    stack.cutter.cut_response("POST /v1/authorize", times=3)  # the first try and both retries

    response = await _chat(stack.fail_open, secret)

    assert response.status_code == 200, response.text
    await _until(lambda: _spent(stack, f"keys/{key_id}"), (_header_cost(response), Decimal(0)), "key ledger")
    assert stack.cutter.cut == ["POST /v1/authorize"] * 3
    assert [(cost, outcome) for _, cost, outcome in await _events(stack, key_id)] == [(stack.cost(), "success")]


async def test_fail_open_never_lets_through_a_call_spendgate_answered_and_refused(stack: Stack) -> None:
    """Fail-open is for an unreachable Spendgate: a request it refuses (here 413, a body over its
    SPENDGATE_MAX_BODY_BYTES) must not turn into an unchecked, unbilled call."""
    upstream_before = (await stack.upstream.stats())["completions"]
    huge_tags = [f"{n:05d}" + "t" * 190 for n in range(6000)]  # ~1.2 MB of tags, over the 1 MiB limit

    response = await _chat(stack.fail_open, "sk-sg-" + uuid.uuid4().hex, metadata={"tags": huge_tags})

    assert response.status_code == 413, response.text[:500]
    assert (await stack.upstream.stats())["completions"] == upstream_before


# --- two replicas, one team budget, 200 concurrent calls ----------------------------------------------------


async def test_200_concurrent_calls_through_two_proxies_and_two_replicas_serve_exactly_what_the_team_budget_fits(
    stack: Stack,
) -> None:
    team = f"team-{uuid.uuid4().hex[:8]}"
    await create(stack.admin, "teams", {"id": team, "name": team, "budget": {"max_budget": str(50 * stack.cost())}})
    key_id = f"k-{team}"
    secret = await create_key(stack.admin, id=key_id, team_id=team)
    upstream_before = (await stack.upstream.stats())["completions"]

    responses = await asyncio.gather(*(
        _chat(stack.main if n % 2 else stack.second, secret, text=text) for n, text in enumerate(PROMPTS)
    ))

    statuses = [response.status_code for response in responses]
    served = [response for response in responses if response.status_code == 200]
    assert (len(served), statuses.count(402)) == (50, 150), sorted(set(statuses))
    assert (await stack.upstream.stats())["completions"] - upstream_before == 50
    header_sum = sum((_header_cost(response) for response in served), Decimal(0))
    await _until(lambda: _spent(stack, f"teams/{team}"), (50 * stack.cost(), Decimal(0)), "team ledger")
    assert header_sum == 50 * stack.cost()
    assert len(await _events(stack, key_id)) == 50


# --- LiteLLM keys mode: LiteLLM authenticates, Spendgate budgets the principal it resolved ----------


async def test_litellm_keys_mode_charges_the_principal_litellm_resolved(stack: Stack) -> None:
    suffix = uuid.uuid4().hex[:8]
    org, team, user, alias = f"org-{suffix}", f"team-{suffix}", f"user-{suffix}", f"key-{suffix}"

    response = await _chat(stack.litellm_keys, f"sk-op-{org}.{team}.{user}.{alias}")

    assert response.status_code == 200, response.text
    await _until(lambda: _spent(stack, f"keys/{alias}"), (stack.cost(), Decimal(0)), "key ledger")
    for path in (f"teams/{team}", f"orgs/{org}", f"teams/{team}/members/{user}"):
        assert await _spent(stack, path) == (stack.cost(), Decimal(0)), path
    assert await _spent(stack, f"users/{user}") == (Decimal(0), Decimal(0))  # a team key: not the personal ledger


async def test_litellm_keys_mode_refuses_with_402_once_the_team_budget_is_spent(stack: Stack) -> None:
    suffix = uuid.uuid4().hex[:8]
    team = f"team-{suffix}"
    await create(stack.admin, "teams", {"id": team, "name": team, "budget": {"max_budget": str(stack.cost())}})
    key = f"sk-op-.{team}.user-{suffix}.key-{suffix}"

    # PROMPTS[0] counts as many tokens as the upstream reports: the estimate is the real cost, which fits.
    first = await _chat(stack.litellm_keys, key, text=PROMPTS[0])
    assert first.status_code == 200, first.text
    await _until(lambda: _spent(stack, f"teams/{team}"), (stack.cost(), Decimal(0)), "team ledger")
    second = await _chat(stack.litellm_keys, key, text=PROMPTS[0])

    assert second.status_code == 402, second.text
    error = second.json()["error"]["provider_specific_fields"]["error"]
    assert error["code"] == "budget_exceeded"
    assert {"type": "team", "id": team} in [reason["entity"] for reason in error["reasons"]]


# --- usage pricing: SPENDGATE_LITELLM_PRICING ------------------------------------------------------------


async def _team_key(stack: Stack, team: str | None = None) -> tuple[str, str, str]:
    """A team (a fresh one unless named) with a $1 budget and a team key; returns (team, key id, secret)."""
    suffix = uuid.uuid4().hex[:8]
    team = team or f"team-{suffix}"
    await create(stack.admin, "teams", {"id": team, "name": team, "budget": {"max_budget": "1.00"}})
    key_id = f"k-{team}-{suffix}"
    return team, key_id, await create_key(stack.admin, id=key_id, team_id=team)


def _reported(stack: Stack, **extra: int) -> dict[str, int]:
    """The usage the fake upstream reports for a call with MAX_TOKENS."""
    return {"input_tokens": stack.prompt_tokens, "output_tokens": MAX_TOKENS} | extra


async def test_spendgate_pricing_charges_the_team_the_price_table_cost_of_the_reported_usage(stack: Stack) -> None:
    team, key_id, secret = await _team_key(stack)
    expected = table_cost("gpt-4o-mini", _reported(stack), policies=stack.service.policy_dir)

    response = await _chat(stack.main, secret, model="gpt-4o-mini")

    assert response.status_code == 200, response.text
    await _until(lambda: _spent(stack, f"teams/{team}"), (expected, Decimal(0)), "team ledger")
    assert [(cost, outcome) for _, cost, outcome in await _events(stack, key_id)] == [(expected, "success")]


async def test_spendgate_pricing_prices_cached_and_reasoning_tokens_at_their_own_table_prices(stack: Stack) -> None:
    team, key_id, secret = await _team_key(stack)
    usage = _reported(stack, cached_input_tokens=stack.prompt_tokens // 2, reasoning_tokens=MAX_TOKENS // 2)
    expected = table_cost("gpt-4o-cached", usage, policies=stack.service.policy_dir)

    response = await _chat(stack.main, secret, model="gpt-4o-cached")

    assert response.status_code == 200, response.text
    assert usage["cached_input_tokens"] > 0 and usage["reasoning_tokens"] > 0
    assert expected != _header_cost(response)  # LiteLLM prices this model as its gpt-4o deployment
    await _until(lambda: _spent(stack, f"teams/{team}"), (expected, Decimal(0)), "team ledger")


async def test_spendgate_pricing_applies_the_teams_markup_from_the_policy_data(stack: Stack) -> None:
    team, key_id, secret = await _team_key(stack, MARKUP_TEAM)
    expected = table_cost("gpt-4o", _reported(stack), basis_points=MARKUP_BP, policies=stack.service.policy_dir)

    response = await _chat(stack.main, secret)

    assert response.status_code == 200, response.text
    assert expected == (stack.cost() * Decimal("1.25")).quantize(NANO)  # the arithmetic, once by hand
    await _until(lambda: _spent(stack, f"teams/{team}"), (expected, Decimal(0)), "team ledger")
    assert await _spent(stack, f"keys/{key_id}") == (expected, Decimal(0))


async def test_litellm_pricing_charges_litellms_cost_without_spendgates_markup(stack: Stack) -> None:
    alias = f"key-{uuid.uuid4().hex[:8]}"

    response = await _chat(stack.litellm_keys, f"sk-op-.{MARKUP_TEAM}.user-{alias}.{alias}")

    assert response.status_code == 200, response.text
    assert _header_cost(response) == stack.cost()
    await _until(lambda: _spent(stack, f"keys/{alias}"), (stack.cost(), Decimal(0)), "key ledger")


async def test_spendgate_pricing_falls_back_to_litellms_cost_for_a_model_the_table_lacks(stack: Stack) -> None:
    team, key_id, secret = await _team_key(stack)

    response = await _chat(stack.main, secret, model="house-model")

    assert response.status_code == 200, response.text
    assert _header_cost(response) == stack.cost()
    await _until(lambda: _spent(stack, f"teams/{team}"), (stack.cost(), Decimal(0)), "team ledger")
    [(request_id, cost, outcome)] = await _events(stack, key_id)
    assert (cost, outcome) == (stack.cost(), "success")
