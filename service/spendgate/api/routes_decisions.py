"""POST /v1/authorize and POST /v1/record — thin wrappers over `spendgate.decisions` (measured and logged).

A well-formed request is answered by the fast lane (decision_lane.py) before it reaches these
routes; they answer everything else (and are what the OpenAPI schema describes): a wrong token,
a body that does not validate, another content type.
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Depends, Response

from .. import exact_json
from ..decisions import AuthorizeRequest, RecordRequest
from ..decisions.observed import observed_authorize, observed_record
from ..decisions.responses import AuthorizeResponse, RecordResponse
from .auth import require_gateway
from .deps import RuntimeDep
from .json_body import JsonRoute
from .responses import error_responses

__all__ = ["router"]

router = APIRouter(
    prefix="/v1",
    tags=["decisions"],
    dependencies=[Depends(require_gateway)],
    route_class=JsonRoute,
    responses=error_responses(401, 413, 422, 503),
)


def _json(body: dict[str, Any]) -> Response:
    return Response(exact_json.dumps(body), media_type="application/json")


# The answers are published with `responses=` (OpenAPI only): a `response_model` would
# validate and re-encode every answer on the hot path.
_DECIDED: dict[int | str, dict[str, Any]] = {
    200: {"model": AuthorizeResponse, "description": "the decision, allow or deny"},
}
_RECORDED: dict[int | str, dict[str, Any]] = {
    200: {"model": RecordResponse, "description": "recorded, or a retry of a record"},
    **error_responses(409),
}


@router.post("/authorize", response_model=None, responses=_DECIDED)
async def authorize_route(body: AuthorizeRequest, runtime: RuntimeDep) -> Response:
    with runtime.authorize_slots.slot():  # 503 at once when the replica is already saturated
        return _json(await observed_authorize(runtime=runtime, request=body))


@router.post("/record", response_model=None, responses=_RECORDED)
async def record_route(body: RecordRequest, runtime: RuntimeDep) -> Response:
    return _json(await observed_record(runtime=runtime, request=body))
