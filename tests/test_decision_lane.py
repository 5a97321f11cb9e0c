"""The decision routes' fast lane (api/decision_lane.py): it answers well-formed decisions by itself,
hands everything else to the framework routes, and answers exactly what those routes answer."""

from __future__ import annotations

import json

from httpx import Response

from spendgate.api.auth import require_gateway
from spendgate.errors import Forbidden
from support.app import AppFactory, RunningApp
from support.scenario import create_key

_MARK = "the framework's decision route answered"


def _mark_framework_decision_routes(app: RunningApp) -> None:
    """Make the FastAPI decision routes refuse everything with a 403 naming themselves: an answer
    without that mark did not come from them."""

    async def refuse() -> None:
        raise Forbidden(reason=_MARK)

    app.app.dependency_overrides[require_gateway] = refuse


def _from_framework(response: Response) -> bool:
    return response.status_code == 403 and _MARK in response.json()["error"]["message"]


async def test_the_lane_answers_well_formed_decisions_and_hands_the_rest_on(
    app_factory: AppFactory, clean_pg: str, redis_url: str
) -> None:
    app = await app_factory(database_url=clean_pg, redis_url=redis_url)
    secret = await create_key(app.admin, id="k-lane", budget={"max_budget": "1.00"})
    _mark_framework_decision_routes(app)

    allowed = await app.gateway.post("/v1/authorize", json={"request_id": "r1", "api_key": secret, "estimated_cost": "0.1"})
    recorded = await app.gateway.post("/v1/record", json={"request_id": "r1", "cost": "0.05", "outcome": "success"})
    assert allowed.status_code == 200 and allowed.json()["decision"] == "allow"
    assert recorded.status_code == 200 and recorded.json()["cost"] == "0.050000"
    assert allowed.headers["content-type"] == "application/json"
    assert int(allowed.headers["content-length"]) == len(allowed.content)

    # A refusal by the service itself (a SpendgateError) is answered by the lane, in the error shape.
    conflict = await app.gateway.post("/v1/record", json={"request_id": "r1", "cost": "0.07", "outcome": "success"})
    assert conflict.status_code == 409 and conflict.json()["error"]["code"] == "conflict"

    # Whatever is not a well-formed decision goes on to the framework routes.
    for response in (
        await app.anonymous.post("/v1/authorize", json={"request_id": "r2", "api_key": secret}),  # no token
        await app.gateway.post("/v1/authorize", json={"request_id": "r2"}),  # no key: does not validate
        await app.gateway.post("/v1/authorize", content=b"request_id=r2", headers={"content-type": "text/plain"}),
    ):
        assert _from_framework(response), response.text
    # A body that is not JSON: the framework reads the body before its dependencies run, and its
    # error handler (api/errors.py, the only source of this message) answers.
    garbled = await app.gateway.post("/v1/authorize", content=b"{not json", headers={"content-type": "application/json"})
    assert garbled.status_code == 422 and "body: is not valid JSON" in garbled.json()["error"]["message"]


async def test_the_lane_and_the_framework_routes_answer_alike(
    app_factory: AppFactory, clean_pg: str, redis_url: str
) -> None:
    """The same request through both: the framework route (reached with a `+json` content type,
    which the lane leaves alone) replays the decision the lane stored, byte for byte."""
    app = await app_factory(database_url=clean_pg, redis_url=redis_url)
    secret = await create_key(app.admin, id="k-alike", budget={"max_budget": "1.00"})
    body = json.dumps({"request_id": "same", "api_key": secret, "estimated_cost": "0.25", "tags": ["ü\"<x>"]})

    by_lane = await app.gateway.post("/v1/authorize", content=body, headers={"content-type": "application/json"})
    by_route = await app.gateway.post("/v1/authorize", content=body, headers={"content-type": "application/x+json"})
    assert by_lane.status_code == by_route.status_code == 200
    assert by_lane.content == by_route.content
    assert by_lane.headers["content-type"] == by_route.headers["content-type"]

    # The framework's answers to bad input are the ones every client sees, through either entry.
    missing = {"request_id": "x"}
    for content_type in ("application/json", "application/x+json"):
        refused = await app.gateway.post("/v1/authorize", content=json.dumps(missing), headers={"content-type": content_type})
        assert refused.status_code == 422
        assert refused.json()["error"]["code"] == "invalid_request"
