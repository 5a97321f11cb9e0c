"""Request bodies of the decision routes (API.md "Decision routes")."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from ..identity import Principal
from ..money import Nanos
from ..pricing.usage import AuthorizeUsage, RecordUsage

__all__ = ["AuthorizeRequest", "RecordRequest", "Principal"]

_ID = Field(min_length=1, max_length=500)


class _Attribution(BaseModel):
    """What attribution needs; shared by authorize and a record with no prior authorize."""

    model_config = ConfigDict(extra="forbid")

    request_id: str = _ID
    model: str | None = Field(default=None, max_length=200)
    end_user: str | None = Field(default=None, min_length=1, max_length=200)
    tags: list[str] = Field(default_factory=list, max_length=50)

    @field_validator("tags")
    @classmethod
    def _clean_tags(cls, tags: list[str]) -> list[str]:
        for tag in tags:
            if not tag or len(tag) > 200 or "/" in tag:
                raise ValueError("each tag must be 1 to 200 characters without '/'")
        return list(dict.fromkeys(tags))

    @field_validator("end_user")
    @classmethod
    def _clean_end_user(cls, value: str | None) -> str | None:
        if value is not None and "/" in value:
            raise ValueError("must not contain '/'")
        return value


_ONE_IDENTITY = (
    "send exactly one of api_key (a Spendgate key's secret) or principal (the caller as your gateway "
    'authenticated it: {"key": "<id>", "user": …, "team": …, "org": …})'
)


class _Identity(BaseModel):
    """Who is calling: a Spendgate secret, or a principal asserted by the gateway (identity.py)."""

    model_config = ConfigDict(extra="forbid")

    api_key: str | None = Field(default=None, min_length=1, max_length=500)
    principal: Principal | None = None

    @model_validator(mode="after")
    def _not_both(self) -> _Identity:
        if self.api_key is not None and self.principal is not None:
            raise ValueError(_ONE_IDENTITY)
        return self


class AuthorizeRequest(_Attribution, _Identity):
    estimated_cost: Nanos | None = None
    #: Priced by the pricing policy when estimated_cost is absent.
    usage: AuthorizeUsage | None = None

    @model_validator(mode="after")
    def _one_of_them(self) -> AuthorizeRequest:
        if self.api_key is None and self.principal is None:
            raise ValueError(_ONE_IDENTITY)
        return self


class RecordRequest(_Attribution, _Identity):
    """`api_key` or `principal` only for a record with no prior authorize."""

    #: None: priced from `usage` by the pricing policy, or 0 without usage.
    cost: Nanos | None = None
    outcome: Literal["success", "failure"]
    usage: RecordUsage | None = None
