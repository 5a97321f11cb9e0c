"""GET /v1/admin/alerts — the alert outbox with delivery status (docs/api.md "Alerts"), admin token."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, Query
from pydantic import BaseModel, ConfigDict, Field

from ..admin.common import admin_read
from ..alerts.listing import list_alerts
from ..errors import InvalidRequest
from ..ledgers import ENTITY_TYPES
from .auth import require_admin
from .deps import SessionDep
from .responses import error_responses

__all__ = ["router", "entity_filter"]

router = APIRouter(
    prefix="/v1/admin", tags=["alerts"], dependencies=[Depends(require_admin)],
    responses=error_responses(401, 404, 422, 503),
)


def entity_filter(value: str | None) -> tuple[str, str] | None:
    """'key:k1' → ('key', 'k1'); 422 naming `entity` otherwise."""
    if value is None:
        return None
    kind, sep, ident = value.partition(":")
    if not sep or kind not in ENTITY_TYPES or not ident:
        raise InvalidRequest(
            field="entity", problem=f"must be <type>:<id> with type one of {', '.join(ENTITY_TYPES)}, e.g. key:k1"
        )
    return kind, ident


class AlertItem(BaseModel):
    """The webhook payload (with its event-specific extras) plus the delivery status."""

    model_config = ConfigDict(extra="allow")

    id: str
    event: str = Field(examples=["soft_budget_crossed"])
    entity: dict[str, Any]
    ledger: str
    window: str | None
    spent: str
    limit: str | None
    soft_budget: str | None = None
    threshold: int | None = None
    resets_at: str | None
    at: str
    status: Literal["pending", "delivered", "failed"]
    attempts: int
    last_error: str | None
    next_attempt_at: str | None
    delivered_at: str | None


class AlertList(BaseModel):
    items: list[AlertItem]
    next_cursor: str | None


@router.get("/alerts", response_model=None, responses={200: {"model": AlertList}})
async def alerts_route(
    session: SessionDep,
    entity: Annotated[str | None, Query(description="<type>:<id>, e.g. key:k1")] = None,
    status: Annotated[Literal["pending", "delivered", "failed"] | None, Query()] = None,
    limit: Annotated[int, Query(ge=1, le=500)] = 50,
    cursor: Annotated[str | None, Query()] = None,
) -> dict[str, Any]:
    async with admin_read():
        return await list_alerts(session, entity=entity_filter(entity), status=status, limit=limit, cursor=cursor)
