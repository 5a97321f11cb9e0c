"""Deleting orgs, teams, users, end users and tags — and what has to go first.

The rule: an entity is not deleted while something live still depends on it; the 409 says
what to delete (or move) first.

- an org, while teams or users belong to it;
- a team, while it has live keys — its memberships (and their budgets) go with it;
- a user, while they have live keys or team memberships.

Deleted keys keep their rows (their ids are never reused) but let go of the user or team
they named, so that entity can be deleted. Budgets go with their entity; ledgers and
spend events always stay — they are the spend history.
"""

from __future__ import annotations

from sqlmodel import col, delete, select, update
from sqlmodel.ext.asyncio.session import AsyncSession

from ..budgets import delete_budgets, load_budgets
from ..errors import Conflict
from ..facts import FactsCache
from ..tables import ApiKey, Team, TeamMember, User
from .audit import snapshot
from .common import admin_write, listing, require
from .entities import ORG, TEAM, USER, EntityKind

__all__ = ["delete_entity"]


async def _live_keys(session: AsyncSession, column: str, entity_id: str) -> list[str]:
    owner = col(getattr(ApiKey, column))
    rows = await session.exec(
        select(ApiKey.id).where(owner == entity_id, col(ApiKey.deleted_at).is_(None)).order_by(col(ApiKey.id))
    )
    return list(rows.all())


async def _blockers(session: AsyncSession, kind: EntityKind, entity_id: str) -> list[str]:
    """What still depends on the entity, as phrases ('2 teams (…)'); empty when free to delete."""
    found: list[str] = []
    if kind is ORG:
        teams = (await session.exec(select(Team.id).where(Team.org_id == entity_id).order_by(col(Team.id)))).all()
        users = (await session.exec(select(User.id).where(User.org_id == entity_id).order_by(col(User.id)))).all()
        if teams:
            found.append(listing(list(teams), "team"))
        if users:
            found.append(listing(list(users), "user"))
    elif kind is TEAM:
        keys = await _live_keys(session, "team_id", entity_id)
        if keys:
            found.append(listing(keys, "key"))
    elif kind is USER:
        keys = await _live_keys(session, "user_id", entity_id)
        teams = (
            await session.exec(
                select(TeamMember.team_id).where(TeamMember.user_id == entity_id).order_by(col(TeamMember.team_id))
            )
        ).all()
        if keys:
            found.append(listing(keys, "key"))
        if teams:
            found.append(listing(list(teams), "team membership"))
    return found


def _what_to_do(kind: EntityKind) -> str:
    if kind is ORG:
        return "delete them or move them to another org (PATCH org_id) first"
    if kind is USER:
        return "delete the keys and remove the user from those teams first"
    return "delete them first"


async def delete_entity(*, session: AsyncSession, facts: FactsCache, kind: EntityKind, entity_id: str) -> None:
    """Delete an org, team, user, end user or tag with its budget; 409 while others depend on it."""
    async with admin_write(session, facts=facts) as change:
        row = await require(session, kind.table, entity_id, kind=kind.label)
        blockers = await _blockers(session, kind, entity_id)
        if blockers:
            raise Conflict(f"{kind.label} {entity_id!r} still has {' and '.join(blockers)}; {_what_to_do(kind)}")
        before = snapshot(row, await load_budgets(session, kind.entity_type, entity_id))
        change.deleted(kind.entity_type, entity_id, before)
        if kind is TEAM:
            await session.exec(update(ApiKey).where(col(ApiKey.team_id) == entity_id).values(team_id=None))
            members = (await session.exec(select(TeamMember).where(TeamMember.team_id == entity_id))).all()
            for member in members:  # each membership goes with the team, and says so in the audit trail
                member_id = f"{entity_id}/{member.user_id}"
                budgets = await load_budgets(session, "team_member", member_id)
                change.deleted("team_member", member_id, snapshot(member, budgets))
                await delete_budgets(session, "team_member", member_id)
            await session.exec(delete(TeamMember).where(col(TeamMember.team_id) == entity_id))
        elif kind is USER:
            await session.exec(update(ApiKey).where(col(ApiKey.user_id) == entity_id).values(user_id=None))
        await delete_budgets(session, kind.entity_type, entity_id)
        await session.delete(row)
