"""Request bodies of the decision routes (API.md "Decision routes")."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from ..money import Nanos

__all__ = ["AuthorizeRequest", "RecordRequest"]

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


class AuthorizeRequest(_Attribution):
    api_key: str = Field(min_length=1, max_length=500)
    estimated_cost: Nanos | None = None


class RecordRequest(_Attribution):
    cost: Nanos = 0
    outcome: Literal["success", "failure"]
    #: Only for a record with no prior authorize.
    api_key: str | None = Field(default=None, min_length=1, max_length=500)
