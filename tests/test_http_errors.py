"""Malformed and oversized bodies on every route that takes one, and the published response schemas.

Every malformed body is a 422 in the one error shape; a body over SPENDGATE_MAX_BODY_BYTES is a
413, with or without Content-Length, refused before it is read to the end. Most tests run on the
SQLite default with an 8 KiB limit, so "just under" and "just over" are cheap to build.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import re
import socket
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from typing import Any

import httpx
import pytest
import uvicorn
from pydantic import ValidationError

from spendgate.decisions.responses import AuthorizeResponse, RecordResponse
from spendgate.settings import Settings
from support.app import AppFactory, RunningApp
from support.scenario import authorize, create, create_key, record

A = "/v1/admin"
LIMIT = 8192
SECRET = "{secret}"  # stands for the secret of key k1 in a body


@dataclass(frozen=True)
class BodyRoute:
    method: str
    path: str
    #: A body the route accepts once `_seed` has run.
    body: dict[str, Any]
    #: The money field a huge number is put in, as the 422 names it.
    money: str

    @property
    def gateway(self) -> bool:
        return not self.path.startswith(A)

    @property
    def success(self) -> int:
        return 201 if self.method == "POST" and not self.gateway else 200

    def __str__(self) -> str:
        return f"{self.method} {self.path}"


_BUDGET = "budget.max_budget"

BODY_ROUTES = [
    BodyRoute("POST", f"{A}/orgs", {"id": "o2", "name": "Other"}, _BUDGET),
    BodyRoute("POST", f"{A}/teams", {"id": "t2", "name": "Other", "org_id": "acme"}, _BUDGET),
    BodyRoute("POST", f"{A}/users", {"id": "u2", "org_id": "acme"}, _BUDGET),
    BodyRoute("POST", f"{A}/teams/search/members", {"user_id": "bob"}, _BUDGET),
    BodyRoute("POST", f"{A}/keys", {"id": "k2", "user_id": "ada"}, _BUDGET),
    BodyRoute("POST", f"{A}/end-users", {"id": "cust-2"}, _BUDGET),
    BodyRoute("POST", f"{A}/tags", {"id": "tag-2"}, _BUDGET),
    BodyRoute("PATCH", f"{A}/orgs/acme", {"name": "Acme 2"}, _BUDGET),
    BodyRoute("PATCH", f"{A}/teams/search", {"name": "Search 2"}, _BUDGET),
    BodyRoute("PATCH", f"{A}/users/ada", {"email": "ada@example.com"}, _BUDGET),
    BodyRoute("PATCH", f"{A}/teams/search/members/ada", {"blocked": False}, _BUDGET),
    BodyRoute("PATCH", f"{A}/keys/k1", {"name": "renamed"}, _BUDGET),
    BodyRoute("PATCH", f"{A}/end-users/cust-9", {"blocked": False}, _BUDGET),
    BodyRoute("PATCH", f"{A}/tags/beta", {"blocked": False}, _BUDGET),
    BodyRoute("POST", "/v1/authorize", {"request_id": "r1", "api_key": SECRET}, "estimated_cost"),
    BodyRoute(
        "POST", "/v1/record", {"request_id": "r2", "api_key": SECRET, "cost": "0.01", "outcome": "success"}, "cost"
    ),
]


def _with_money(route: BodyRoute, amount: str) -> bytes:
    """The route's body with `amount` (raw JSON text) in its money field."""
    body = dict(route.body, api_key="sk-none") if route.gateway else dict(route.body)
    if route.money == _BUDGET:
        body["budget"] = {"max_budget": 0}
        return json.dumps(body).replace('"max_budget": 0', f'"max_budget": {amount}').encode()
    body[route.money] = 0
    return json.dumps(body).replace(f'"{route.money}": 0', f'"{route.money}": {amount}').encode()


def _padded(route: BodyRoute, secret: str, size: int) -> bytes:
    """The route's valid body, padded with JSON whitespace to exactly `size` bytes."""
    text = json.dumps(route.body).replace(SECRET, secret).encode()
    assert len(text) <= size
    return text + b" " * (size - len(text))


async def _seed(app: RunningApp) -> str:
    """Every entity the valid bodies refer to; returns the secret of key k1."""
    await create(app.admin, "orgs", {"id": "acme", "name": "Acme"})
    await create(app.admin, "teams", {"id": "search", "name": "Search", "org_id": "acme"})
    await create(app.admin, "users", {"id": "ada", "org_id": "acme"})
    await create(app.admin, "users", {"id": "bob", "org_id": "acme"})
    await create(app.admin, "teams/search/members", {"user_id": "ada"})
    await create(app.admin, "end-users", {"id": "cust-9"})
    await create(app.admin, "tags", {"id": "beta"})
    return await create_key(app.admin, id="k1", user_id="ada")


def _client(app: RunningApp, route: BodyRoute) -> httpx.AsyncClient:
    return app.gateway if route.gateway else app.admin


async def _send(app: RunningApp, route: BodyRoute, content: Any, **headers: str) -> httpx.Response:
    headers = {"content-type": "application/json", **headers}
    return await _client(app, route).request(route.method, route.path, content=content, headers=headers)


def _error(response: httpx.Response, status: int, code: str) -> str:
    assert response.status_code == status, response.text
    body = response.json()
    assert set(body) == {"error"} and set(body["error"]) == {"code", "message"}, body
    assert body["error"]["code"] == code, body
    return str(body["error"]["message"])


class _Chunks:
    """A chunked request body (no Content-Length) that counts how much of it was pulled."""

    def __init__(self, total: int, chunk: int = 1024, prefix: bytes = b"") -> None:
        self.total, self.chunk, self.prefix, self.pulled = total, chunk, prefix, 0

    async def __aiter__(self) -> AsyncIterator[bytes]:
        if self.prefix:
            self.pulled += len(self.prefix)
            yield self.prefix
        while self.pulled < self.total:
            piece = b" " * min(self.chunk, self.total - self.pulled)
            self.pulled += len(piece)
            yield piece


@pytest.fixture
async def app(app_factory: AppFactory, sqlite_url: str) -> RunningApp:
    return await app_factory(database_url=sqlite_url, max_body_bytes=LIMIT)


ids = [str(route) for route in BODY_ROUTES]


# --- malformed bodies: 422 ----------------------------------------------------------------


@pytest.mark.parametrize("route", BODY_ROUTES, ids=ids)
async def test_a_body_that_is_not_json_is_a_422_saying_so(app: RunningApp, route: BodyRoute) -> None:
    message = _error(await _send(app, route, b'{"id": "x",'), 422, "invalid_request")
    assert message.startswith("body: is not valid JSON"), message


@pytest.mark.parametrize("route", BODY_ROUTES, ids=ids)
async def test_a_number_too_long_for_python_is_a_422_naming_the_money_field(
    app: RunningApp, route: BodyRoute
) -> None:
    """5000 digits used to be FastAPI's 400 "There was an error parsing the body"."""
    message = _error(await _send(app, route, _with_money(route, "9" * 5000)), 422, "invalid_request")
    assert message.startswith(f"{route.money}: is larger than the largest amount"), message


@pytest.mark.parametrize(
    ("amount", "problem"),
    [
        ("1e999999", "is larger than the largest amount"),  # used to overflow the decimal context: a 500
        ('"1e999999"', "is larger than the largest amount"),
        ("1e400", "is larger than the largest amount"),  # a float would have been infinity
        ("0.1000000000000000055", "has more than 9 decimal places"),  # a float would have been 0.1
        ('"0.1000000000000000000000000001"', "has more than 9 decimal places"),  # 28-digit rounding
        ("NaN", "must be a finite amount"),
        ("Infinity", "must be a finite amount"),
        ("-Infinity", "must be a finite amount"),
        ('"0.' + "1" * 5000 + '"', "has more than 9 decimal places"),
    ],
)
@pytest.mark.parametrize("route", [BODY_ROUTES[0], BODY_ROUTES[-2]], ids=[ids[0], ids[-2]])
async def test_an_amount_out_of_range_or_too_precise_is_a_422_naming_the_field(
    app: RunningApp, route: BodyRoute, amount: str, problem: str
) -> None:
    message = _error(await _send(app, route, _with_money(route, amount)), 422, "invalid_request")
    assert message.startswith(f"{route.money}: ") and problem in message, message
    assert len(message) < 200, "the message must not echo a huge value back"


@pytest.mark.parametrize(
    ("content", "content_type", "expected"),
    [
        (b"[1, 2]", "application/json", "body: must be a JSON object"),
        (b'"a string"', "application/json", "body: must be a JSON object"),
        (b"42", "application/json", "body: must be a JSON object"),
        (b'{"id": "x"}', "text/plain", "body: must be a JSON object sent with 'Content-Type: application/json'"),
        (b"\xff\xfe{}", "application/json", "body: is not valid JSON (the body is not UTF-8 text)"),
        (b"[" * 100_000 + b"]" * 100_000, "application/json", "body: is not valid JSON"),
    ],
    ids=["array", "string", "number", "text-plain", "not-utf8", "nested-100000-deep"],
)
@pytest.mark.parametrize("route", [BODY_ROUTES[0], BODY_ROUTES[-2]], ids=[ids[0], ids[-2]])
async def test_a_body_of_the_wrong_shape_or_type_is_a_422_saying_what_to_send(
    app_factory: AppFactory, sqlite_url: str, route: BodyRoute, content: bytes, content_type: str, expected: str
) -> None:
    app = await app_factory(database_url=sqlite_url)  # the default limit: 200 kB of brackets fit
    message = _error(await _send(app, route, content, **{"content-type": content_type}), 422, "invalid_request")
    assert message.startswith(expected), message


async def test_a_body_without_a_content_type_is_a_422_asking_for_json(app: RunningApp) -> None:
    response = await app.admin.post(f"{A}/orgs", content=b'{"name": "Acme"}')
    assert "Content-Type: application/json" in _error(response, 422, "invalid_request")


async def test_a_method_a_route_does_not_take_is_a_405_in_the_error_shape(app: RunningApp) -> None:
    message = _error(await app.gateway.get("/v1/authorize"), 405, "method_not_allowed")
    assert "/v1/authorize does not take GET" in message


# --- body size: 413 -----------------------------------------------------------------------


@pytest.mark.parametrize("route", BODY_ROUTES, ids=ids)
async def test_a_body_one_byte_over_the_limit_is_a_413_naming_the_setting(app: RunningApp, route: BodyRoute) -> None:
    response = await _send(app, route, _padded(route, "sk-none", LIMIT + 1))
    message = _error(response, 413, "payload_too_large")
    assert str(LIMIT) in message and "SPENDGATE_MAX_BODY_BYTES" in message


@pytest.mark.parametrize("route", BODY_ROUTES, ids=ids)
async def test_a_chunked_body_over_the_limit_is_a_413_and_is_not_read_to_the_end(
    app: RunningApp, route: BodyRoute
) -> None:
    body = _Chunks(total=1_000_000, prefix=json.dumps(route.body).encode())
    response = await _send(app, route, body)
    assert "transfer-encoding" in response.request.headers and "content-length" not in response.request.headers
    _error(response, 413, "payload_too_large")
    assert body.pulled <= LIMIT + body.chunk + len(body.prefix), body.pulled


@pytest.mark.parametrize("route", BODY_ROUTES, ids=ids)
async def test_a_body_exactly_at_the_limit_is_served(app: RunningApp, route: BodyRoute) -> None:
    secret = await _seed(app)
    response = await _send(app, route, _padded(route, secret, LIMIT))
    assert response.status_code == route.success, response.text


@pytest.mark.parametrize("route", [BODY_ROUTES[0], BODY_ROUTES[-2], BODY_ROUTES[-1]], ids=[ids[0], ids[-2], ids[-1]])
async def test_a_chunked_body_under_the_limit_is_served(app: RunningApp, route: BodyRoute) -> None:
    secret = await _seed(app)
    prefix = json.dumps(route.body).replace(SECRET, secret).encode()
    response = await _send(app, route, _Chunks(total=LIMIT - 10, chunk=500, prefix=prefix))
    assert response.status_code == route.success, response.text


async def test_the_default_limit_refuses_30_mb_before_reading_it(pg_app: RunningApp) -> None:
    """On PostgreSQL+Redis with the default 1 MiB: announced or chunked, 30 MB is refused unread."""
    assert pg_app.settings.max_body_bytes == 1_048_576
    announced = _Chunks(total=30 * 2**20, chunk=64 * 2**10)
    response = await pg_app.gateway.post(
        "/v1/authorize", content=announced, headers={"content-length": str(30 * 2**20)}
    )
    _error(response, 413, "payload_too_large")
    assert announced.pulled == 0

    chunked = _Chunks(total=30 * 2**20, chunk=64 * 2**10)
    response = await pg_app.gateway.post("/v1/authorize", content=chunked)
    assert "1048576 bytes" in _error(response, 413, "payload_too_large")
    assert chunked.pulled <= 2**20 + 64 * 2**10


class _Server(uvicorn.Server):
    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:  # pytest keeps the process's signals
        yield


@pytest.fixture
async def served(app: RunningApp) -> AsyncIterator[str]:
    """The started app behind a real uvicorn server on a free port; yields its base URL."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    config = uvicorn.Config(app.app, lifespan="off", log_config=None, log_level="warning", access_log=False)
    server = _Server(config)
    task = asyncio.create_task(server.serve(sockets=[sock]))
    while not server.started:
        if task.done():
            task.result()
        await asyncio.sleep(0.005)
    yield f"http://127.0.0.1:{sock.getsockname()[1]}"
    server.should_exit = True
    await task
    sock.close()


async def test_over_a_real_http_connection_chunked_and_announced_bodies_are_limited(
    app: RunningApp, served: str
) -> None:
    secret = await _seed(app)
    headers = {"authorization": app.gateway.headers["authorization"], "content-type": "application/json"}
    async with httpx.AsyncClient(base_url=served, headers=headers) as client:
        chunked = _Chunks(total=2**20, prefix=b'{"request_id": "r1", ')
        _error(await client.post("/v1/authorize", content=chunked), 413, "payload_too_large")
        _error(await client.post("/v1/authorize", content=b" " * (LIMIT + 1)), 413, "payload_too_large")
        body = json.dumps({"request_id": "r1", "api_key": secret}).encode()
        served_chunked = _Chunks(total=LIMIT, prefix=body)
        response = await client.post("/v1/authorize", content=served_chunked)
        assert response.status_code == 200 and response.json()["decision"] == "allow", response.text


def test_the_limit_setting_refuses_less_than_1024_bytes_naming_the_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SPENDGATE_MAX_BODY_BYTES", "1000")
    with pytest.raises(ValidationError, match="SPENDGATE_MAX_BODY_BYTES must be a whole number of bytes, at least 10"):
        Settings()
    monkeypatch.setenv("SPENDGATE_MAX_BODY_BYTES", "1024")
    assert Settings().max_body_bytes == 1024


# --- response schemas ---------------------------------------------------------------------


def _resolve(spec: dict[str, Any], schema: dict[str, Any]) -> dict[str, Any]:
    ref = schema.get("$ref", "")
    return spec["components"]["schemas"][ref.rsplit("/", 1)[-1]] if ref else schema


def _json_schema(spec: dict[str, Any], response: dict[str, Any]) -> dict[str, Any]:
    return _resolve(spec, response["content"]["application/json"]["schema"])


async def test_openapi_publishes_the_authorize_and_record_answers(app: RunningApp) -> None:
    spec = (await app.anonymous.get("/openapi.json")).json()
    authorize_schema = _json_schema(spec, spec["paths"]["/v1/authorize"]["post"]["responses"]["200"])
    assert {"request_id", "decision", "reasons", "charges", "alerts", "reservation"} <= set(
        authorize_schema["required"]
    )
    assert authorize_schema["properties"]["decision"]["enum"] == ["allow", "deny"]
    charge = _resolve(spec, authorize_schema["properties"]["charges"]["items"])
    assert {"entity", "window", "spent", "reserved", "limit", "remaining", "period_start", "resets_at"} <= set(
        charge["required"]
    )
    record_schema = _json_schema(spec, spec["paths"]["/v1/record"]["post"]["responses"]["200"])
    assert {"request_id", "recorded", "duplicate", "charges"} <= set(record_schema["required"])


async def test_openapi_gives_every_route_a_schema_and_documents_its_errors(app: RunningApp) -> None:
    spec = (await app.anonymous.get("/openapi.json")).json()
    for path, operations in spec["paths"].items():
        if not path.startswith("/v1/"):
            continue
        for method, operation in operations.items():
            responses = operation["responses"]
            for status, response in responses.items():
                if status == "204":
                    assert "content" not in response, (method, path)
                    continue
                schema = _json_schema(spec, response)
                assert schema.get("properties"), (method, path, status)
                if status >= "400":
                    assert set(schema["properties"]) == {"error"}, (method, path, status)
            assert {"401", "422", "503"} <= set(responses), (method, path)
            if "requestBody" in operation:
                assert "413" in responses, (method, path)
            # A list or search (GET without a path parameter) names nothing that could be missing.
            if path.startswith(f"{A}/") and not (method == "get" and "{" not in path):
                assert "404" in responses, (method, path)
            # Creates meet a taken id; PATCH and DELETE a concurrent change, DELETE a dependant (deletion.py).
            if path.startswith(f"{A}/") and method in ("post", "patch", "delete") and "/console" not in path:
                assert "409" in responses, (method, path)


async def test_the_tests_above_cover_every_route_that_takes_a_body(app: RunningApp) -> None:
    spec = (await app.anonymous.get("/openapi.json")).json()
    documented = {
        (method.upper(), re.compile(re.sub(r"\{[^}]+\}", "[^/]+", path) + "$"))
        for path, operations in spec["paths"].items()
        for method, operation in operations.items()
        if "requestBody" in operation
    }
    covered = {(m, p) for m, p in documented for route in BODY_ROUTES if route.method == m and p.match(route.path)}
    assert covered == documented, sorted(p.pattern for _, p in documented - covered)
    assert len(documented) == len(BODY_ROUTES)


async def test_real_decision_answers_fit_the_published_models(any_app: RunningApp) -> None:
    """Allow, deny (with reasons and alerts), record and its retry: no field missing or unknown."""
    await create(any_app.admin, "orgs", {"id": "acme", "name": "Acme"})
    await create(any_app.admin, "users", {"id": "ada", "org_id": "acme"})
    secret = await create_key(
        any_app.admin, id="k1", user_id="ada", budget={"max_budget": "1.00", "soft_budget": "0.10"}
    )

    allowed = await authorize(any_app.gateway, request_id="r1", api_key=secret, estimated_cost="0.50", tags=["t"])
    assert allowed["decision"] == "allow"
    AuthorizeResponse.model_validate(allowed)
    recorded = await record(any_app.gateway, request_id="r1", cost="0.50", outcome="success")
    RecordResponse.model_validate(recorded)
    retried = await record(any_app.gateway, request_id="r1", cost="0.50", outcome="success")
    assert retried["duplicate"] is True
    RecordResponse.model_validate(retried)

    denied = await authorize(any_app.gateway, request_id="r2", api_key=secret, estimated_cost="0.90")
    assert denied["decision"] == "deny" and denied["reasons"] and denied["alerts"], denied
    AuthorizeResponse.model_validate(denied)
    unknown = await authorize(any_app.gateway, request_id="r3", api_key="sk-nobody")
    assert unknown["reasons"][0]["code"] == "invalid_key"
    AuthorizeResponse.model_validate(unknown)
    unattributed = await record(any_app.gateway, request_id="r4", api_key=secret, cost="0", outcome="failure")
    RecordResponse.model_validate(unattributed)


def test_the_published_models_refuse_a_field_they_do_not_know() -> None:
    """So the test above fails when a route starts answering a field its model lacks."""
    body = {"request_id": "r", "recorded": True, "duplicate": False, "cost": "0.000000", "outcome": "success",
            "charges": [], "policy_revision": None}
    RecordResponse.model_validate(body)
    RecordResponse.model_validate(body | {"after_denial": True})
    with pytest.raises(ValidationError, match="charged_twice"):
        RecordResponse.model_validate(body | {"charged_twice": True})
