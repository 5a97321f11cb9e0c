"""Team memberships: a user within a team, with its own budget and ledger.

A member's budget is the entity `team_member` '<team_id>/<user_id>': it limits that user's
spend through the team's keys (API.md). A team key naming a user who is not a member
charges no member ledger.
"""

from __future__ import annotations

from sqlmodel.ext.asyncio.session import AsyncSession

from ..budgets import as_windows, delete_budgets, load_budgets, replace_budgets
from ..counters import Counters
from ..errors import Conflict, NotFound
from ..facts import FactsCache
from ..tables import Budget, Team, TeamMember, User, utcnow
from .audit import snapshot
from .common import admin_read, admin_write, require
from .ledger_view import ledger_lines, public_budget, read_ledgers
from .schemas import MembershipCreate, MembershipPublic, MembershipUpdate

__all__ = ["add_member", "read_member", "update_member", "remove_member", "member_entity_id"]

_TYPE = "team_member"


def member_entity_id(team_id: str, user_id: str) -> str:
    return f"{team_id}/{user_id}"


async def _view(*, counters: Counters, member: TeamMember, budgets: list[Budget]) -> MembershipPublic:
    entity_id = member_entity_id(member.team_id, member.user_id)
    lines = ledger_lines(entity_type=_TYPE, entity_id=entity_id, budgets=budgets, at=utcnow())
    ledgers = (await read_ledgers(counters=counters, groups={entity_id: lines}))[entity_id]
    return MembershipPublic.model_validate(
        {**member.model_dump(), "id": entity_id, "budget": public_budget(budgets), "ledgers": ledgers}
    )


async def _membership(session: AsyncSession, team_id: str, user_id: str) -> TeamMember:
    await require(session, Team, team_id, kind="team")
    member = await session.get(TeamMember, (team_id, user_id))
    if member is None:
        raise NotFound(
            kind="membership",
            id=member_entity_id(team_id, user_id),
            hint=f"user {user_id!r} is not a member of team {team_id!r}",
        )
    return member


async def add_member(
    *, session: AsyncSession, counters: Counters, facts: FactsCache, team_id: str, body: MembershipCreate
) -> MembershipPublic:
    """Add an existing user to an existing team; 409 when they are a member already."""
    async with admin_write(session, facts=facts) as change:
        await require(session, Team, team_id, kind="team")
        await require(session, User, body.user_id, kind="user", hint="create the user first")
        if await session.get(TeamMember, (team_id, body.user_id)) is not None:
            raise Conflict(
                f"user {body.user_id!r} is already a member of team {team_id!r}; PATCH the membership to change it"
            )
        member = TeamMember(team_id=team_id, user_id=body.user_id, blocked=body.blocked)
        session.add(member)
        entity_id = member_entity_id(team_id, body.user_id)
        budgets = await replace_budgets(session, _TYPE, entity_id, as_windows(body.budget), now=member.created_at)
        await session.flush()
        change.created(_TYPE, entity_id, snapshot(member, budgets))
        view = await _view(counters=counters, member=member, budgets=budgets)
    return view


async def read_member(*, session: AsyncSession, counters: Counters, team_id: str, user_id: str) -> MembershipPublic:
    async with admin_read():
        member = await _membership(session, team_id, user_id)
        budgets = await load_budgets(session, _TYPE, member_entity_id(team_id, user_id))
        return await _view(counters=counters, member=member, budgets=budgets)


async def update_member(
    *,
    session: AsyncSession,
    counters: Counters,
    facts: FactsCache,
    team_id: str,
    user_id: str,
    body: MembershipUpdate,
) -> MembershipPublic:
    """Change the member's budget (null: none) or block them within this team."""
    async with admin_write(session, facts=facts) as change:
        member = await _membership(session, team_id, user_id)
        entity_id = member_entity_id(team_id, user_id)
        before = snapshot(member, await load_budgets(session, _TYPE, entity_id))
        if "blocked" in body.model_fields_set and body.blocked is not None:
            member.blocked = body.blocked
            session.add(member)
        if "budget" in body.model_fields_set:
            budgets = await replace_budgets(session, _TYPE, entity_id, as_windows(body.budget))
        else:
            budgets = await load_budgets(session, _TYPE, entity_id)
        await session.flush()
        change.updated(_TYPE, entity_id, before, snapshot(member, budgets), fields=body.model_fields_set)
        view = await _view(counters=counters, member=member, budgets=budgets)
    return view


async def remove_member(*, session: AsyncSession, facts: FactsCache, team_id: str, user_id: str) -> None:
    """Remove the user from the team with the membership's budget (its ledgers stay)."""
    async with admin_write(session, facts=facts) as change:
        member = await _membership(session, team_id, user_id)
        entity_id = member_entity_id(team_id, user_id)
        change.deleted(_TYPE, entity_id, snapshot(member, await load_budgets(session, _TYPE, entity_id)))
        await delete_budgets(session, _TYPE, entity_id)
        await session.delete(member)
