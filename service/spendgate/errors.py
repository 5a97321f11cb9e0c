"""Spendgate's exception tree and the one JSON error shape every non-2xx response uses.

    SpendgateError                   500 internal_error (never shows internals)
    ├── Unauthorized                 401 unauthorized
    ├── InvalidRequest               422 invalid_request   (names the field)
    ├── NotFound                     404 not_found
    ├── Conflict                     409 conflict
    │   └── RecordConflict           409 conflict          (same request_id, other cost/outcome)
    ├── Unavailable                  503 unavailable       (names the dependency)
    └── PolicyError                  500 policy_error      (a policy that fails to load or evaluate)

Exceptions take structured arguments and format their own message; third-party errors are
wrapped where they cross into Spendgate (`raise Unavailable("redis") from exc`).
"""

from __future__ import annotations

from typing import Any, ClassVar

__all__ = [
    "SpendgateError",
    "Unauthorized",
    "InvalidRequest",
    "NotFound",
    "Conflict",
    "RecordConflict",
    "Unavailable",
    "PolicyError",
    "error_body",
]


class SpendgateError(Exception):
    """Base of every error Spendgate raises on purpose."""

    status: ClassVar[int] = 500
    code: ClassVar[str] = "internal_error"

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message

    def body(self) -> dict[str, Any]:
        return error_body(self.code, self.message)


class Unauthorized(SpendgateError):
    status = 401
    code = "unauthorized"

    def __init__(self, *, route_kind: str) -> None:
        super().__init__(
            f"missing or wrong bearer token: {route_kind} routes need "
            f"'Authorization: Bearer $SPENDGATE_{route_kind.upper()}_TOKEN'"
        )


class InvalidRequest(SpendgateError):
    status = 422
    code = "invalid_request"

    def __init__(self, *, field: str, problem: str) -> None:
        super().__init__(f"{field}: {problem}")
        self.field = field


class NotFound(SpendgateError):
    status = 404
    code = "not_found"

    def __init__(self, *, kind: str, id: str, hint: str = "") -> None:
        super().__init__(f"{kind} {id!r} does not exist" + (f"; {hint}" if hint else ""))
        self.kind = kind
        self.id = id


class Conflict(SpendgateError):
    status = 409
    code = "conflict"


class RecordConflict(Conflict):
    def __init__(self, *, request_id: str, recorded: str, attempted: str) -> None:
        super().__init__(
            f"request {request_id!r} was already recorded as {recorded}; this record says {attempted}. "
            "Use a new request_id for a new request."
        )


class Unavailable(SpendgateError):
    status = 503
    code = "unavailable"

    def __init__(self, dependency: str, detail: str = "") -> None:
        super().__init__(
            f"{dependency} is unavailable" + (f" ({detail})" if detail else "") + "; retry shortly"
        )
        self.dependency = dependency


class PolicyError(SpendgateError):
    status = 500
    code = "policy_error"


def error_body(code: str, message: str) -> dict[str, Any]:
    """The single error shape of API.md."""
    return {"error": {"code": code, "message": message}}
