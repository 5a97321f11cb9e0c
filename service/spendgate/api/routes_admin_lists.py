"""/v1/admin lists and the audit trail (docs/api.md "Lists", "Audit trail"): thin wrappers over
`spendgate.admin.lists` and `spendgate.admin.audit_query`.

Every route needs the admin token and answers a page `{"items", "next_cursor"}`. A query
parameter a route does not take is refused (422) rather than silently ignored.
"""

from __future__ import annotations

from collections.abc import Collection
from datetime import datetime
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query, Request

from ..admin.audit_query import AuditPage, list_audit, parse_entity
from ..admin.lists import LISTINGS, MEMBERS, ListFilters, list_members, list_page
from ..admin.schemas import (
    EndUserPublic,
    KeyPublic,
    MembershipPublic,
    OrgPublic,
    Page,
    TagPublic,
    TeamPublic,
    UserPublic,
)
from ..errors import InvalidRequest
from .auth import require_admin
from .deps import RuntimeDep, SessionDep
from .responses import error_responses

__all__ = ["router"]

router = APIRouter(
    prefix="/v1/admin",
    tags=["admin"],
    dependencies=[Depends(require_admin)],
    responses=error_responses(401, 422, 503),
)

# --- list parameters ----------------------------------------------------------------------

Limit = Annotated[int, Query(ge=1, le=500, description="Items per page, 1 to 500.")]
Cursor = Annotated[str | None, Query(description="`next_cursor` of the previous page, unchanged.")]
Blocked = Annotated[bool | None, Query(description="Only blocked (true) or only unblocked (false) entities.")]
IdPrefix = Annotated[str | None, Query(min_length=1, max_length=200, description="Only ids starting with this.")]
OwnerId = Annotated[str | None, Query(min_length=1, max_length=200)]


def _accepts(filters: Collection[str]) -> Any:
    """Refuse (422) a query parameter the list does not take, instead of silently ignoring a filter."""
    allowed = {"limit", "cursor", *filters}

    async def check(request: Request) -> None:
        unknown = sorted(set(request.query_params) - allowed)
        if unknown:
            raise InvalidRequest(
                field=unknown[0], problem=f"is not a parameter of this list; it takes {', '.join(sorted(allowed))}"
            )

    return Depends(check)


# --- entity lists -------------------------------------------------------------------------


@router.get("/orgs", response_model=Page[OrgPublic], dependencies=[_accepts(LISTINGS["orgs"].filters)])
async def list_orgs(
    session: SessionDep,
    runtime: RuntimeDep,
    limit: Limit = 50,
    cursor: Cursor = None,
    blocked: Blocked = None,
    id_prefix: IdPrefix = None,
) -> Page[Any]:
    filters = ListFilters(blocked=blocked, id_prefix=id_prefix)
    return await list_page(
        session=session, counters=runtime.counters, route="orgs", filters=filters, limit=limit, cursor=cursor
    )


@router.get("/teams", response_model=Page[TeamPublic], dependencies=[_accepts(LISTINGS["teams"].filters)])
async def list_teams(
    session: SessionDep,
    runtime: RuntimeDep,
    limit: Limit = 50,
    cursor: Cursor = None,
    org_id: OwnerId = None,
    blocked: Blocked = None,
    id_prefix: IdPrefix = None,
) -> Page[Any]:
    filters = ListFilters(org_id=org_id, blocked=blocked, id_prefix=id_prefix)
    return await list_page(
        session=session, counters=runtime.counters, route="teams", filters=filters, limit=limit, cursor=cursor
    )


@router.get("/users", response_model=Page[UserPublic], dependencies=[_accepts(LISTINGS["users"].filters)])
async def list_users(
    session: SessionDep,
    runtime: RuntimeDep,
    limit: Limit = 50,
    cursor: Cursor = None,
    org_id: OwnerId = None,
    team_id: OwnerId = None,
    blocked: Blocked = None,
    id_prefix: IdPrefix = None,
) -> Page[Any]:
    filters = ListFilters(org_id=org_id, team_id=team_id, blocked=blocked, id_prefix=id_prefix)
    return await list_page(
        session=session, counters=runtime.counters, route="users", filters=filters, limit=limit, cursor=cursor
    )


@router.get("/keys", response_model=Page[KeyPublic], dependencies=[_accepts(LISTINGS["keys"].filters)])
async def list_keys(
    session: SessionDep,
    runtime: RuntimeDep,
    limit: Limit = 50,
    cursor: Cursor = None,
    user_id: OwnerId = None,
    team_id: OwnerId = None,
    blocked: Blocked = None,
    id_prefix: IdPrefix = None,
) -> Page[Any]:
    filters = ListFilters(user_id=user_id, team_id=team_id, blocked=blocked, id_prefix=id_prefix)
    return await list_page(
        session=session, counters=runtime.counters, route="keys", filters=filters, limit=limit, cursor=cursor
    )


@router.get("/end-users", response_model=Page[EndUserPublic], dependencies=[_accepts(LISTINGS["end-users"].filters)])
async def list_end_users(
    session: SessionDep,
    runtime: RuntimeDep,
    limit: Limit = 50,
    cursor: Cursor = None,
    blocked: Blocked = None,
    id_prefix: IdPrefix = None,
) -> Page[Any]:
    filters = ListFilters(blocked=blocked, id_prefix=id_prefix)
    return await list_page(
        session=session, counters=runtime.counters, route="end-users", filters=filters, limit=limit, cursor=cursor
    )


@router.get("/tags", response_model=Page[TagPublic], dependencies=[_accepts(LISTINGS["tags"].filters)])
async def list_tags(
    session: SessionDep,
    runtime: RuntimeDep,
    limit: Limit = 50,
    cursor: Cursor = None,
    blocked: Blocked = None,
    id_prefix: IdPrefix = None,
) -> Page[Any]:
    filters = ListFilters(blocked=blocked, id_prefix=id_prefix)
    return await list_page(
        session=session, counters=runtime.counters, route="tags", filters=filters, limit=limit, cursor=cursor
    )


@router.get(
    "/teams/{team_id}/members",
    response_model=Page[MembershipPublic],
    responses=error_responses(404),
    dependencies=[_accepts(MEMBERS.filters)],
)
async def list_memberships(
    team_id: str,
    session: SessionDep,
    runtime: RuntimeDep,
    limit: Limit = 50,
    cursor: Cursor = None,
    blocked: Blocked = None,
    id_prefix: IdPrefix = None,
) -> Page[Any]:
    """The team's members by user id; `id_prefix` filters on the user id."""
    return await list_members(
        session=session,
        counters=runtime.counters,
        team_id=team_id,
        filters=ListFilters(blocked=blocked, id_prefix=id_prefix),
        limit=limit,
        cursor=cursor,
    )


# --- audit trail --------------------------------------------------------------------------


@router.get("/audit", response_model=AuditPage, dependencies=[_accepts({"entity", "from", "to"})])
async def list_audit_events(
    session: SessionDep,
    limit: Limit = 50,
    cursor: Cursor = None,
    entity: Annotated[str | None, Query(description="`<type>:<id>` (e.g. team:search) or `<type>`.")] = None,
    since: Annotated[datetime | None, Query(alias="from", description="From this time (inclusive).")] = None,
    until: Annotated[datetime | None, Query(alias="to", description="Until this time (exclusive).")] = None,
) -> AuditPage:
    return await list_audit(
        session=session, entity=parse_entity(entity), since=since, until=until, limit=limit, cursor=cursor
    )
