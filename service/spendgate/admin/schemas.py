"""Request and response models of the admin API (API.md "Admin routes"), one family per entity.

Families follow `XBase` → `XCreate` / `XUpdate` / `XPublic`. Create and update models forbid
unknown fields (422). An update applies exactly the fields present in its body
(`model_fields_set`): `{"budget": null}` clears the budget, an absent `budget` keeps it.
Money in responses is a decimal string, timestamps ISO 8601 UTC with "Z".
"""

from __future__ import annotations

from datetime import datetime, timezone
from typing import Annotated, Any, Generic, TypeVar

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    StrictBool,
    TypeAdapter,
    ValidatorFunctionWrapHandler,
    WrapValidator,
    field_validator,
)

from ..budgets import BudgetSpec, as_windows
from ..tables import utcnow

__all__ = [
    "ID_MAX_LENGTH",
    "EntityId",
    "BudgetField",
    "BudgetWindowPublic",
    "BudgetPublic",
    "LedgerPublic",
    "OrgCreate",
    "OrgUpdate",
    "OrgPublic",
    "TeamCreate",
    "TeamUpdate",
    "TeamPublic",
    "UserCreate",
    "UserUpdate",
    "UserPublic",
    "EndUserCreate",
    "TagCreate",
    "TrackedUpdate",
    "EndUserPublic",
    "TagPublic",
    "MembershipCreate",
    "MembershipUpdate",
    "MembershipPublic",
    "KeyCreate",
    "KeyUpdate",
    "KeyPublic",
    "KeyCreated",
    "Page",
]

ID_MAX_LENGTH = 200


def _check_id(value: str) -> str:
    if not 1 <= len(value) <= ID_MAX_LENGTH:
        raise ValueError(f"must be 1 to {ID_MAX_LENGTH} characters")
    if "/" in value:
        raise ValueError("must not contain '/'")
    if any(char.isspace() for char in value):
        raise ValueError("must not contain whitespace")
    return value


#: An entity id: 1–200 characters, no '/', no whitespace.
EntityId = Annotated[str, AfterValidator(_check_id)]
Name = Annotated[str, Field(min_length=1, max_length=500)]
ModelName = Annotated[str, Field(min_length=1, max_length=200)]

_ONE = TypeAdapter(BudgetSpec)
_MANY = TypeAdapter(list[BudgetSpec])


def _budget(value: Any, _handler: ValidatorFunctionWrapHandler) -> BudgetSpec | list[BudgetSpec] | None:
    """One window or a list of them, validated so errors name `budget.max_budget`, `budget[1].duration`."""
    if value is None or isinstance(value, BudgetSpec):
        return value
    if isinstance(value, dict):
        return _ONE.validate_python(value)
    if isinstance(value, list):
        windows = _MANY.validate_python(value)
        as_windows(windows)  # two windows with one duration are an error
        return windows
    raise ValueError(
        'must be a budget object such as {"max_budget": "10.00", "duration": "1d"}, a list of them, or null'
    )


#: What `budget` accepts (API.md "Budgets"): one window, a list of windows, or null.
BudgetField = Annotated[BudgetSpec | list[BudgetSpec] | None, WrapValidator(_budget)]


class _Input(BaseModel):
    model_config = ConfigDict(extra="forbid")


class _Update(_Input):
    """Fields absent from the body stay as they are."""


def _present(value: Any) -> Any:
    if value is None:
        raise ValueError("must not be null (leave the field out to keep its value)")
    return value


#: Update fields that may be left out but not cleared.
SetName = Annotated[Name | None, AfterValidator(_present)]
SetBlocked = Annotated[StrictBool | None, AfterValidator(_present)]


# --- what responses are made of ----------------------------------------------------------


class BudgetWindowPublic(BaseModel):
    max_budget: str
    soft_budget: str | None
    duration: str | None
    reset: str
    #: When the window's periods start counting (rolling budgets).
    set_at: datetime


BudgetPublic = BudgetWindowPublic | list[BudgetWindowPublic] | None


class LedgerPublic(BaseModel):
    """One current ledger of an entity: its budget window in the period containing now."""

    window: str | None
    spent: str
    reserved: str
    limit: str | None
    soft_budget: str | None
    period_start: datetime
    resets_at: datetime | None


class _Public(BaseModel):
    """Every entity answer: its fields, then `blocked`, `created_at`, `budget` and `ledgers`.

    Subclasses list all their fields so that responses read in that order, id first.
    """


# --- organisations -----------------------------------------------------------------------


class OrgBase(_Input):
    name: Name


class OrgCreate(OrgBase):
    id: EntityId | None = None
    budget: BudgetField = None
    blocked: StrictBool = False


class OrgUpdate(_Update):
    name: SetName = None
    budget: BudgetField = None
    blocked: SetBlocked = None


class OrgPublic(_Public):
    id: str
    name: str
    blocked: bool
    created_at: datetime
    budget: BudgetPublic = None
    ledgers: list[LedgerPublic]


# --- teams -------------------------------------------------------------------------------


class TeamBase(_Input):
    name: Name
    org_id: EntityId | None = None


class TeamCreate(TeamBase):
    id: EntityId | None = None
    budget: BudgetField = None
    blocked: StrictBool = False


class TeamUpdate(_Update):
    name: SetName = None
    org_id: EntityId | None = None
    budget: BudgetField = None
    blocked: SetBlocked = None


class TeamPublic(_Public):
    id: str
    name: str
    org_id: str | None
    blocked: bool
    created_at: datetime
    budget: BudgetPublic = None
    ledgers: list[LedgerPublic]


# --- users -------------------------------------------------------------------------------


class UserBase(_Input):
    email: Name | None = None
    org_id: EntityId | None = None


class UserCreate(UserBase):
    id: EntityId | None = None
    budget: BudgetField = None
    blocked: StrictBool = False


class UserUpdate(_Update):
    email: Name | None = None
    org_id: EntityId | None = None
    budget: BudgetField = None
    blocked: SetBlocked = None


class UserPublic(_Public):
    id: str
    email: str | None
    org_id: str | None
    blocked: bool
    created_at: datetime
    budget: BudgetPublic = None
    ledgers: list[LedgerPublic]


# --- end users and tags: tracked even when never created ---------------------------------


class TrackedBase(_Input):
    id: EntityId


class EndUserCreate(TrackedBase):
    budget: BudgetField = None
    blocked: StrictBool = False


class TagCreate(TrackedBase):
    budget: BudgetField = None
    blocked: StrictBool = False


class TrackedUpdate(_Update):
    budget: BudgetField = None
    blocked: SetBlocked = None


class _TrackedPublic(_Public):
    id: str
    #: False for an id only named in requests (it has a ledger but was never created here).
    created: bool = True
    blocked: bool
    #: Null when not created.
    created_at: datetime | None
    budget: BudgetPublic = None
    ledgers: list[LedgerPublic]


class EndUserPublic(_TrackedPublic):
    pass


class TagPublic(_TrackedPublic):
    pass


# --- team memberships --------------------------------------------------------------------


class MembershipCreate(_Input):
    user_id: EntityId
    budget: BudgetField = None
    blocked: StrictBool = False


class MembershipUpdate(_Update):
    budget: BudgetField = None
    blocked: SetBlocked = None


class MembershipPublic(_Public):
    #: The ledger entity id: '<team_id>/<user_id>'.
    id: str
    team_id: str
    user_id: str
    blocked: bool
    created_at: datetime
    budget: BudgetPublic = None
    ledgers: list[LedgerPublic]


# --- keys --------------------------------------------------------------------------------


def _future(value: datetime | None) -> datetime | None:
    if value is None:
        return None
    if value.tzinfo is None or value.utcoffset() is None:
        raise ValueError("must be an ISO 8601 time with a time zone, e.g. 2027-01-01T00:00:00Z")
    if value <= utcnow():
        raise ValueError("must be in the future")
    return value.astimezone(timezone.utc)


Expiry = Annotated[datetime | None, AfterValidator(_future)]


class KeyBase(_Input):
    name: Name | None = None
    #: Models the key may call; empty means every model.
    models: list[ModelName] = Field(default_factory=list, max_length=500)
    #: A budget per model for this key (stored as `key_model` budgets '<key_id>/<model>').
    model_budgets: dict[ModelName, BudgetField] = Field(default_factory=dict, max_length=500)
    expires_at: Expiry = None


class KeyCreate(KeyBase):
    id: EntityId | None = None
    user_id: EntityId | None = None
    team_id: EntityId | None = None
    budget: BudgetField = None
    blocked: StrictBool = False


class KeyUpdate(_Update):
    name: Name | None = None
    models: list[ModelName] | None = Field(default=None, max_length=500)
    model_budgets: dict[ModelName, BudgetField] | None = Field(default=None, max_length=500)
    expires_at: Expiry = None
    budget: BudgetField = None
    blocked: SetBlocked = None
    #: Never settable: present only to answer with a clear 422.
    user_id: Any = Field(default=None, exclude=True, json_schema_extra={"readOnly": True})
    team_id: Any = Field(default=None, exclude=True, json_schema_extra={"readOnly": True})

    @field_validator("user_id", "team_id", mode="before")
    @classmethod
    def _owner_is_fixed(cls, _value: Any) -> Any:
        raise ValueError("cannot be changed after a key is created; create a new key instead")


class KeyPublic(_Public):
    id: str
    key_prefix: str
    name: str | None
    user_id: str | None
    team_id: str | None
    models: list[str]
    expires_at: datetime | None
    blocked: bool
    created_at: datetime
    budget: BudgetPublic = None
    ledgers: list[LedgerPublic]
    model_budgets: dict[str, BudgetPublic] = Field(default_factory=dict)
    #: The current ledgers of each model that has a budget.
    model_ledgers: dict[str, list[LedgerPublic]] = Field(default_factory=dict)


class KeyCreated(KeyPublic):
    #: The secret. Shown in this response only; Spendgate keeps only its hash.
    key: str


# --- lists -------------------------------------------------------------------------------

ItemT = TypeVar("ItemT", bound=BaseModel)


class Page(BaseModel, Generic[ItemT]):
    """One page of a list: pass `next_cursor` back as `cursor` for the next; null on the last page."""

    items: list[ItemT]
    next_cursor: str | None
