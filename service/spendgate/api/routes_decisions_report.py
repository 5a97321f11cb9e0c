"""GET /v1/reports/decisions — recent denials and alerting decisions (docs/api.md), admin token."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, Query
from pydantic import BaseModel

from ..admin.common import admin_read
from ..decision_store import recent
from .auth import require_admin
from .deps import SessionDep
from .responses import error_responses
from .routes_alerts import entity_filter

__all__ = ["router"]

router = APIRouter(
    prefix="/v1/reports", tags=["reports"], dependencies=[Depends(require_admin)], responses=error_responses(401, 422, 503)
)


class DecisionItem(BaseModel):
    decision_id: str
    request_id: str
    at: str
    decision: Literal["allow", "deny"]
    reasons: list[dict[str, Any]]
    charges: list[dict[str, Any]]
    alerts: list[dict[str, Any]]
    policy_revision: str | None


class DecisionList(BaseModel):
    items: list[DecisionItem]
    next_cursor: str | None


@router.get("/decisions", response_model=None, responses={200: {"model": DecisionList}})
async def decisions_route(
    session: SessionDep,
    entity: Annotated[str | None, Query(description="<type>:<id>, e.g. key:k1")] = None,
    decision: Annotated[Literal["allow", "deny"] | None, Query()] = None,
    limit: Annotated[int, Query(ge=1, le=500)] = 50,
    cursor: Annotated[str | None, Query()] = None,
) -> dict[str, Any]:
    async with admin_read():
        return await recent(session, entity=entity_filter(entity), decision=decision, limit=limit, cursor=cursor)
