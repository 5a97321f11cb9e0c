"""/v1/admin/... (API.md "Admin routes") — thin wrappers over `spendgate.admin` services.

Every route needs the admin token. POST answers 201, PATCH 200, DELETE 204; every entity
answer carries its budget and current ledgers. Lists and the audit trail: `routes_admin_lists`.
"""

from __future__ import annotations

from fastapi import APIRouter, Depends, status
from pydantic import BaseModel

from ..admin import END_USER, ORG, TAG, TEAM, USER
from ..admin.deletion import delete_entity
from ..admin.entities import create_entity, read_entity, update_entity
from ..admin.keys import create_key, delete_key, read_key, update_key
from ..admin.ledger_view import default_end_user_budget
from ..admin.members import add_member, read_member, remove_member, update_member
from ..admin.schemas import (
    EndUserCreate,
    EndUserPublic,
    KeyCreate,
    KeyCreated,
    KeyPublic,
    KeyUpdate,
    MembershipCreate,
    MembershipPublic,
    MembershipUpdate,
    OrgCreate,
    OrgPublic,
    OrgUpdate,
    TagCreate,
    TagPublic,
    TeamCreate,
    TeamPublic,
    TeamUpdate,
    TrackedUpdate,
    UserCreate,
    UserPublic,
    UserUpdate,
)
from .auth import require_admin
from .deps import RuntimeDep, SessionDep
from .json_body import JsonRoute
from .responses import error_responses

__all__ = ["router"]

router = APIRouter(
    prefix="/v1/admin",
    tags=["admin"],
    dependencies=[Depends(require_admin)],
    route_class=JsonRoute,
    responses=error_responses(401, 422, 503),
)

_CREATED = status.HTTP_201_CREATED
_DELETED = status.HTTP_204_NO_CONTENT
#: Error answers beyond the router's 401/422/503: a create may name a missing entity or a taken id.
_CREATE_ERRORS = error_responses(404, 409, 413)
_READ_ERRORS = error_responses(404)
#: A PATCH or DELETE may meet a concurrent admin change of the same entities (409); a DELETE also
#: refuses while something still depends on the entity (deletion.py).
_UPDATE_ERRORS = error_responses(404, 409, 413)
_DELETE_ERRORS = error_responses(404, 409)

# --- orgs ---------------------------------------------------------------------------------


@router.post("/orgs", status_code=_CREATED, response_model=OrgPublic, responses=_CREATE_ERRORS)
async def create_org(body: OrgCreate, session: SessionDep, runtime: RuntimeDep) -> BaseModel:
    return await create_entity(session=session, counters=runtime.counters, facts=runtime.facts, kind=ORG, body=body)


@router.get("/orgs/{org_id}", response_model=OrgPublic, responses=_READ_ERRORS)
async def get_org(org_id: str, session: SessionDep, runtime: RuntimeDep) -> BaseModel:
    return await read_entity(session=session, counters=runtime.counters, kind=ORG, entity_id=org_id)


@router.patch("/orgs/{org_id}", response_model=OrgPublic, responses=_UPDATE_ERRORS)
async def patch_org(org_id: str, body: OrgUpdate, session: SessionDep, runtime: RuntimeDep) -> BaseModel:
    return await update_entity(
        session=session, counters=runtime.counters, facts=runtime.facts, kind=ORG, entity_id=org_id, body=body
    )


@router.delete("/orgs/{org_id}", status_code=_DELETED, responses=_DELETE_ERRORS)
async def delete_org(org_id: str, session: SessionDep, runtime: RuntimeDep) -> None:
    await delete_entity(session=session, facts=runtime.facts, kind=ORG, entity_id=org_id)


# --- teams --------------------------------------------------------------------------------


@router.post("/teams", status_code=_CREATED, response_model=TeamPublic, responses=_CREATE_ERRORS)
async def create_team(body: TeamCreate, session: SessionDep, runtime: RuntimeDep) -> BaseModel:
    return await create_entity(session=session, counters=runtime.counters, facts=runtime.facts, kind=TEAM, body=body)


@router.get("/teams/{team_id}", response_model=TeamPublic, responses=_READ_ERRORS)
async def get_team(team_id: str, session: SessionDep, runtime: RuntimeDep) -> BaseModel:
    return await read_entity(session=session, counters=runtime.counters, kind=TEAM, entity_id=team_id)


@router.patch("/teams/{team_id}", response_model=TeamPublic, responses=_UPDATE_ERRORS)
async def patch_team(team_id: str, body: TeamUpdate, session: SessionDep, runtime: RuntimeDep) -> BaseModel:
    return await update_entity(
        session=session, counters=runtime.counters, facts=runtime.facts, kind=TEAM, entity_id=team_id, body=body
    )


@router.delete("/teams/{team_id}", status_code=_DELETED, responses=_DELETE_ERRORS)
async def delete_team(team_id: str, session: SessionDep, runtime: RuntimeDep) -> None:
    await delete_entity(session=session, facts=runtime.facts, kind=TEAM, entity_id=team_id)


# --- team memberships ---------------------------------------------------------------------


@router.post("/teams/{team_id}/members", status_code=_CREATED, responses=_CREATE_ERRORS)
async def create_membership(
    team_id: str, body: MembershipCreate, session: SessionDep, runtime: RuntimeDep
) -> MembershipPublic:
    return await add_member(session=session, counters=runtime.counters, facts=runtime.facts, team_id=team_id, body=body)


@router.get("/teams/{team_id}/members/{user_id}", responses=_READ_ERRORS)
async def get_membership(team_id: str, user_id: str, session: SessionDep, runtime: RuntimeDep) -> MembershipPublic:
    return await read_member(session=session, counters=runtime.counters, team_id=team_id, user_id=user_id)


@router.patch("/teams/{team_id}/members/{user_id}", responses=_UPDATE_ERRORS)
async def patch_membership(
    team_id: str, user_id: str, body: MembershipUpdate, session: SessionDep, runtime: RuntimeDep
) -> MembershipPublic:
    return await update_member(
        session=session, counters=runtime.counters, facts=runtime.facts, team_id=team_id, user_id=user_id, body=body
    )


@router.delete("/teams/{team_id}/members/{user_id}", status_code=_DELETED, responses=_DELETE_ERRORS)
async def delete_membership(team_id: str, user_id: str, session: SessionDep, runtime: RuntimeDep) -> None:
    await remove_member(session=session, facts=runtime.facts, team_id=team_id, user_id=user_id)


# --- users --------------------------------------------------------------------------------


@router.post("/users", status_code=_CREATED, response_model=UserPublic, responses=_CREATE_ERRORS)
async def create_user(body: UserCreate, session: SessionDep, runtime: RuntimeDep) -> BaseModel:
    return await create_entity(session=session, counters=runtime.counters, facts=runtime.facts, kind=USER, body=body)


@router.get("/users/{user_id}", response_model=UserPublic, responses=_READ_ERRORS)
async def get_user(user_id: str, session: SessionDep, runtime: RuntimeDep) -> BaseModel:
    return await read_entity(session=session, counters=runtime.counters, kind=USER, entity_id=user_id)


@router.patch("/users/{user_id}", response_model=UserPublic, responses=_UPDATE_ERRORS)
async def patch_user(user_id: str, body: UserUpdate, session: SessionDep, runtime: RuntimeDep) -> BaseModel:
    return await update_entity(
        session=session, counters=runtime.counters, facts=runtime.facts, kind=USER, entity_id=user_id, body=body
    )


@router.delete("/users/{user_id}", status_code=_DELETED, responses=_DELETE_ERRORS)
async def delete_user(user_id: str, session: SessionDep, runtime: RuntimeDep) -> None:
    await delete_entity(session=session, facts=runtime.facts, kind=USER, entity_id=user_id)


# --- keys ---------------------------------------------------------------------------------


@router.post("/keys", status_code=_CREATED, responses=_CREATE_ERRORS)
async def create_api_key(body: KeyCreate, session: SessionDep, runtime: RuntimeDep) -> KeyCreated:
    return await create_key(session=session, counters=runtime.counters, facts=runtime.facts, body=body)


@router.get("/keys/{key_id}", responses=_READ_ERRORS)
async def get_api_key(key_id: str, session: SessionDep, runtime: RuntimeDep) -> KeyPublic:
    return await read_key(session=session, counters=runtime.counters, key_id=key_id)


@router.patch("/keys/{key_id}", responses=_UPDATE_ERRORS)
async def patch_api_key(key_id: str, body: KeyUpdate, session: SessionDep, runtime: RuntimeDep) -> KeyPublic:
    return await update_key(session=session, counters=runtime.counters, facts=runtime.facts, key_id=key_id, body=body)


@router.delete("/keys/{key_id}", status_code=_DELETED, responses=_DELETE_ERRORS)
async def delete_api_key(key_id: str, session: SessionDep, runtime: RuntimeDep) -> None:
    await delete_key(session=session, facts=runtime.facts, key_id=key_id)


# --- end users ----------------------------------------------------------------------------


@router.post("/end-users", status_code=_CREATED, response_model=EndUserPublic, responses=_CREATE_ERRORS)
async def create_end_user(body: EndUserCreate, session: SessionDep, runtime: RuntimeDep) -> BaseModel:
    return await create_entity(
        session=session, counters=runtime.counters, facts=runtime.facts, kind=END_USER, body=body
    )


@router.get("/end-users/{end_user_id}", response_model=EndUserPublic, responses=_READ_ERRORS)
async def get_end_user(end_user_id: str, session: SessionDep, runtime: RuntimeDep) -> BaseModel:
    return await read_entity(
        session=session,
        counters=runtime.counters,
        kind=END_USER,
        entity_id=end_user_id,
        untracked_budget=default_end_user_budget(runtime.settings, end_user_id),
    )


@router.patch("/end-users/{end_user_id}", response_model=EndUserPublic, responses=_UPDATE_ERRORS)
async def patch_end_user(end_user_id: str, body: TrackedUpdate, session: SessionDep, runtime: RuntimeDep) -> BaseModel:
    return await update_entity(
        session=session, counters=runtime.counters, facts=runtime.facts, kind=END_USER, entity_id=end_user_id, body=body
    )


@router.delete("/end-users/{end_user_id}", status_code=_DELETED, responses=_DELETE_ERRORS)
async def delete_end_user(end_user_id: str, session: SessionDep, runtime: RuntimeDep) -> None:
    await delete_entity(session=session, facts=runtime.facts, kind=END_USER, entity_id=end_user_id)


# --- tags ---------------------------------------------------------------------------------


@router.post("/tags", status_code=_CREATED, response_model=TagPublic, responses=_CREATE_ERRORS)
async def create_tag(body: TagCreate, session: SessionDep, runtime: RuntimeDep) -> BaseModel:
    return await create_entity(session=session, counters=runtime.counters, facts=runtime.facts, kind=TAG, body=body)


@router.get("/tags/{tag_id}", response_model=TagPublic, responses=_READ_ERRORS)
async def get_tag(tag_id: str, session: SessionDep, runtime: RuntimeDep) -> BaseModel:
    return await read_entity(session=session, counters=runtime.counters, kind=TAG, entity_id=tag_id)


@router.patch("/tags/{tag_id}", response_model=TagPublic, responses=_UPDATE_ERRORS)
async def patch_tag(tag_id: str, body: TrackedUpdate, session: SessionDep, runtime: RuntimeDep) -> BaseModel:
    return await update_entity(
        session=session, counters=runtime.counters, facts=runtime.facts, kind=TAG, entity_id=tag_id, body=body
    )


@router.delete("/tags/{tag_id}", status_code=_DELETED, responses=_DELETE_ERRORS)
async def delete_tag(tag_id: str, session: SessionDep, runtime: RuntimeDep) -> None:
    await delete_entity(session=session, facts=runtime.facts, kind=TAG, entity_id=tag_id)
