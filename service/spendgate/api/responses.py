"""OpenAPI documentation of error answers: the one error shape, per status, from the error tree."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, Field

from ..errors import (
    Conflict,
    InvalidRequest,
    NotFound,
    PayloadTooLarge,
    SpendgateError,
    Unauthorized,
    Unavailable,
)

__all__ = ["ErrorBody", "ErrorDetail", "error_responses"]


class ErrorDetail(BaseModel):
    code: str = Field(examples=["invalid_request"])
    message: str = Field(description="what is wrong and what to do about it")


class ErrorBody(BaseModel):
    """Every non-2xx answer (errors.py `error_body`)."""

    error: ErrorDetail


_DESCRIPTIONS: dict[int, tuple[type[SpendgateError], str]] = {
    error.status: (error, description)
    for error, description in (
        (Unauthorized, "missing or wrong bearer token"),
        (NotFound, "the entity (or one the body references) does not exist"),
        (Conflict, "the id is taken, something still depends on the entity, a concurrent admin change touched the "
                   "same entities, or a record repeats a request_id with another cost or outcome"),
        (PayloadTooLarge, "the body is larger than SPENDGATE_MAX_BODY_BYTES"),
        (InvalidRequest, "malformed input: not JSON, not an object, or a field that is wrong (the message names it)"),
        (Unavailable, "a dependency (PostgreSQL, Redis, OPA) is down, or the replica is saturated; retry"),
    )
}


def error_responses(*statuses: int) -> dict[int | str, dict[str, Any]]:
    """`responses=` for a route or router: each status documented with the error shape and its code."""
    return {
        status: {"model": ErrorBody, "description": f"`{_DESCRIPTIONS[status][0].code}`: {_DESCRIPTIONS[status][1]}"}
        for status in statuses
    }
