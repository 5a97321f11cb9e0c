"""POST /v1/authorize and POST /v1/record — thin wrappers over `spendgate.decisions` (measured and logged)."""

from __future__ import annotations

import json
from typing import Any

from fastapi import APIRouter, Depends, Response

from ..decisions import AuthorizeRequest, RecordRequest
from ..decisions.observed import observed_authorize, observed_record
from .auth import require_gateway
from .deps import RuntimeDep

__all__ = ["router"]

router = APIRouter(prefix="/v1", tags=["decisions"], dependencies=[Depends(require_gateway)])


def _json(body: dict[str, Any]) -> Response:
    """The body is plain JSON already (strings, numbers, lists): encode it once, skipping
    FastAPI's `jsonable_encoder` walk of every nested value on the hot path."""
    return Response(json.dumps(body, ensure_ascii=False, separators=(",", ":")).encode(), media_type="application/json")


@router.post("/authorize")
async def authorize_route(body: AuthorizeRequest, runtime: RuntimeDep) -> Response:
    with runtime.authorize_slots.slot():  # 503 at once when the replica is already saturated
        return _json(await observed_authorize(runtime=runtime, request=body))


@router.post("/record")
async def record_route(body: RecordRequest, runtime: RuntimeDep) -> Response:
    return _json(await observed_record(runtime=runtime, request=body))
