"""The shapes of the decision routes' answers (API.md "Decision routes"), for OpenAPI and tests.

`authorize` and `record` build these bodies as plain dicts and the routes send them
pre-encoded, so nothing validates against these models per request: the routes publish them
with `responses={200: {"model": …}}` at no runtime cost, and tests/test_http_errors.py
checks that real answers fit them (unknown fields refused), which keeps the two in step.
Reasons and alerts come from the policy; a custom policy may add fields to them.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field

__all__ = [
    "Money",
    "EntityRef",
    "AuthorizeCharge",
    "Reason",
    "Alert",
    "Reservation",
    "AuthorizeResponse",
    "RecordCharge",
    "RecordResponse",
]

#: A USD amount as a decimal string with at least six decimals.
Money = Annotated[str, Field(description="USD, a decimal string", examples=["0.020000"])]


class _Shape(BaseModel):
    model_config = ConfigDict(extra="forbid")


class EntityRef(_Shape):
    type: str = Field(
        description="org, team, user, team_member, key, key_model, end_user or tag", examples=["key"]
    )
    #: Null only in an `invalid_key` reason (no key matched).
    id: str | None = Field(description="the entity id; '<team_id>/<user_id>' for team_member, '<key_id>/<model>' "
                                       "for key_model; null for a key that matched nothing")


class AuthorizeCharge(_Shape):
    """A ledger the request touches, with its figures before this request's reservation."""

    entity: EntityRef
    window: str | None = Field(description="the budget's duration, e.g. '1d'; null for a budget that never resets")
    spent: Money
    reserved: Money
    limit: Money | None
    soft_budget: Money | None = Field(default=None, description="the alert threshold of this budget; null without one")
    remaining: Money | None = Field(description="limit - spent - reserved, never below 0; null without a limit")
    period_start: datetime
    resets_at: datetime | None


class Reason(_Shape):
    """Why a request is refused (policy `reasons`)."""

    model_config = ConfigDict(extra="allow")

    code: str = Field(
        description="budget_exceeded, invalid_key, key_blocked, key_expired, model_not_allowed, or "
        "policy_undefined (the policy gave no usable decision)",
        examples=["budget_exceeded"],
    )
    entity: EntityRef | None
    message: str
    ledger: str | None = None
    spent: Money | None = None
    limit: Money | None = None
    resets_at: datetime | None = None


class Alert(_Shape):
    """A touched ledger at or past its soft budget (policy `alerts`); never refuses."""

    model_config = ConfigDict(extra="allow")

    code: str = Field(examples=["soft_budget_crossed"])
    entity: EntityRef
    ledger: str | None = None
    spent: Money | None = None
    soft_budget: Money | None = None


class Reservation(_Shape):
    amount: Money
    expires_at: datetime


class AuthorizeResponse(_Shape):
    """200 for every decision, allow or deny; a repeated request_id answers the first decision."""

    request_id: str
    decision: Literal["allow", "deny"]
    reasons: list[Reason] = Field(description="empty when allowed")
    charges: list[AuthorizeCharge]
    alerts: list[Alert]
    reservation: Reservation | None = Field(description="null on deny")
    policy_revision: str | None = Field(description="the revision of the policies that decided")
    key_id: str | None = Field(description="the key the api_key matched; null for none")
    model: str | None


class RecordCharge(_Shape):
    """A ledger the record charged, with its spend after this record."""

    entity: EntityRef
    window: str | None
    amount: Money
    spent: Money | None
    period_start: datetime
    resets_at: datetime | None


class PriceAdjustment(_Shape):
    entity: EntityRef
    basis_points: int = Field(description="the markup (positive) or discount (negative) in 1/100 of a percent")


class Priced(_Shape):
    """How a cost was priced from `usage` by the pricing policy."""

    model: str = Field(description="the price-table entry used", examples=["gpt-4o"])
    list_cost: Money = Field(description="the cost at the table's price, before any adjustment")
    adjustment: PriceAdjustment | None = Field(description="the operator's adjustment that applied, or null")
    policy_revision: str = Field(description="the policy revision (price table included) that priced it")


class RecordResponse(_Shape):
    """200 for a new record and for a retry of it (`duplicate: true`, nothing charged again)."""

    request_id: str
    recorded: Literal[True]
    duplicate: bool
    cost: Money
    outcome: Literal["success", "failure"]
    charges: list[RecordCharge]
    policy_revision: str | None
    priced: Priced | None = Field(
        default=None, description="how `cost` was priced from `usage`; null when the cost was sent (or 0)"
    )
    after_denial: bool = Field(
        default=False,
        description="true when the authorize of this request_id was denied: the spend is charged anyway (the money "
        "is spent) and reported as enforcement bypassed",
    )
