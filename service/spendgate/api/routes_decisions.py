"""POST /v1/authorize and POST /v1/record — thin wrappers over `spendgate.decisions` (measured and logged)."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Depends

from ..decisions import AuthorizeRequest, RecordRequest
from ..decisions.observed import observed_authorize, observed_record
from .auth import require_gateway
from .deps import RuntimeDep

__all__ = ["router"]

router = APIRouter(prefix="/v1", tags=["decisions"], dependencies=[Depends(require_gateway)])


@router.post("/authorize")
async def authorize_route(body: AuthorizeRequest, runtime: RuntimeDep) -> dict[str, Any]:
    return await observed_authorize(runtime=runtime, request=body)


@router.post("/record")
async def record_route(body: RecordRequest, runtime: RuntimeDep) -> dict[str, Any]:
    return await observed_record(runtime=runtime, request=body)
